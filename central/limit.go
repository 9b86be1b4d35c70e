package central

import "time"

// bucket is a token bucket: rate tokens a second, at most burst saved up.
// Callers serialise access (Central's mutex).
type bucket struct {
	tokens float64
	last   time.Time
}

// allow takes one token if there is one at now.
func (b *bucket) allow(now time.Time, rate float64, burst int) bool {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(float64(burst), b.tokens+el*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
