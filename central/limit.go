package central

import (
	"net/netip"
	"time"
)

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

// maxSources bounds the addresses sourceBuckets remembers; past it, the
// buckets that have refilled (their sources are quiet) are forgotten.
const maxSources = 16384

// sourceBuckets is a token bucket per source address, so one flooder
// spends its own allowance and not everyone's. Callers serialise access.
type sourceBuckets struct {
	m map[netip.Addr]*bucket
}

// allow takes a token from the bucket of src's sourceKey at now.
func (s *sourceBuckets) allow(src netip.Addr, now time.Time, rate float64, burst int) bool {
	src = sourceKey(src)
	if s.m == nil {
		s.m = map[netip.Addr]*bucket{}
	}
	b := s.m[src]
	if b == nil {
		if len(s.m) >= maxSources {
			s.prune(now, rate, burst)
			if len(s.m) >= maxSources {
				return false // every remembered source is busy: refuse newcomers rather than grow
			}
		}
		b = &bucket{}
		s.m[src] = b
	}
	return b.allow(now, rate, burst)
}

// has reports whether src's bucket holds a token at now, taking none.
func (s *sourceBuckets) has(src netip.Addr, now time.Time, rate float64) bool {
	b := s.m[sourceKey(src)]
	return b == nil || b.tokens+now.Sub(b.last).Seconds()*rate >= 1
}

// sourceKey is the bucket a source address spends from: for IPv6 its /64,
// which a single host is commonly given whole (an address per bucket let
// one host register without limit by walking its prefix: abuse probe,
// 2026-12-02); an IPv4 address, or one mapped into IPv6, alone.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// prune forgets the buckets that would be full again at now.
func (s *sourceBuckets) prune(now time.Time, rate float64, burst int) {
	for src, b := range s.m {
		if b.tokens+now.Sub(b.last).Seconds()*rate >= float64(burst) {
			delete(s.m, src)
		}
	}
}

// quietLog bounds the lines one kind of routine event writes to the log:
// logBurst in a logWindow, then only a count of the rest, given with the
// first line of a later window. Registrations and expiries are free to
// cause: 40,000 registrations from 20 addresses wrote 40,000 lines in 14 s
// and as many expiry lines a minute later (black-box sweep, 2026-12-04).
// Callers serialise access (Central's mutex).
type quietLog struct {
	start  time.Time
	n      int
	hushed int
}

const (
	logBurst  = 20
	logWindow = 10 * time.Second
)

// allow reports whether an event at now may have its line, and how many
// were left out before it.
func (q *quietLog) allow(now time.Time) (ok bool, hushed int) {
	if now.Sub(q.start) >= logWindow {
		hushed = q.hushed
		q.start, q.n, q.hushed = now, 0, 0
	}
	if q.n >= logBurst {
		q.hushed++
		return false, 0
	}
	q.n++
	return true, hushed
}

// attrs are the log attributes of a line allow let through: args, and
// how many lines were left out before it, if any.
func (q *quietLog) attrs(hushed int, args ...any) []any {
	if hushed > 0 {
		args = append(args, "not_logged_before", hushed)
	}
	return args
}
