package load

import (
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// hist is a log-linear histogram of durations at microsecond resolution:
// exact below 128 µs, then 64 buckets per power of two (within 1.6%).
// Safe for concurrent use.
type hist struct {
	mu     sync.Mutex
	counts []uint64
	n      uint64
	max    time.Duration
}

const histSub = 64

func histIndex(us uint64) int {
	if us < 2*histSub {
		return int(us)
	}
	shift := bits.Len64(us) - 7
	return 2*histSub + (shift-1)*histSub + int(us>>shift) - histSub
}

// histLow returns the smallest value, in microseconds, of bucket i.
func histLow(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := (i-2*histSub)/histSub + 1
	return uint64((i-2*histSub)%histSub+histSub) << shift
}

func (h *hist) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := histIndex(uint64(d / time.Microsecond))
	h.mu.Lock()
	if i >= len(h.counts) {
		h.counts = slices.Grow(h.counts, i+1-len(h.counts))[:i+1]
	}
	h.counts[i]++
	h.n++
	h.max = max(h.max, d)
	h.mu.Unlock()
}

// take returns a copy of h and empties it.
func (h *hist) take() *hist {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := &hist{counts: h.counts, n: h.n, max: h.max}
	h.counts, h.n, h.max = nil, 0, 0
	return c
}

func (h *hist) merge(o *hist) {
	o.mu.Lock()
	counts, n, mx := slices.Clone(o.counts), o.n, o.max
	o.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(counts) > len(h.counts) {
		h.counts = slices.Grow(h.counts, len(counts)-len(h.counts))[:len(counts)]
	}
	for i, c := range counts {
		h.counts[i] += c
	}
	h.n += n
	h.max = max(h.max, mx)
}

func (h *hist) count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// quantile returns the q-quantile (0..1), as the middle of its bucket,
// capped at the largest value seen.
func (h *hist) quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n-1)) + 1
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histLow(i), histLow(i+1)
			d := time.Duration((lo+hi)/2) * time.Microsecond
			return min(d, h.max)
		}
	}
	return h.max
}

// Millis is a duration that encodes in JSON as a number of milliseconds.
type Millis float64

func ms(d time.Duration) Millis { return Millis(float64(d.Microseconds()) / 1000) }

// String renders m with a unit. Safe for concurrent use.
func (m Millis) String() string { return fmtDur(time.Duration(float64(m) * float64(time.Millisecond))) }

// Dist summarises a distribution of durations.
type Dist struct {
	Count uint64 `json:"count"`
	P50   Millis `json:"p50_ms"`
	P99   Millis `json:"p99_ms"`
	P999  Millis `json:"p999_ms"`
	Max   Millis `json:"max_ms"`
}

func (h *hist) dist() Dist {
	h.mu.Lock()
	n, mx := h.n, h.max
	h.mu.Unlock()
	return Dist{Count: n, P50: ms(h.quantile(0.5)), P99: ms(h.quantile(0.99)), P999: ms(h.quantile(0.999)), Max: ms(mx)}
}

// Report is the outcome of a run; it encodes as the JSON report of
// chatload -json.
type Report struct {
	Rooms      int     `json:"rooms"`
	Members    int     `json:"members"`
	Rate       float64 `json:"rate_per_member"`
	Duration   Millis  `json:"duration_ms"`
	Servers    int     `json:"servers"`
	Chaos      string  `json:"chaos"`
	RoomsUp    int     `json:"rooms_up"`
	SetupTook  Millis  `json:"setup_ms"`
	SendFor    Millis  `json:"sending_ms"`
	SettleTook Millis  `json:"settle_ms"`
	Settled    bool    `json:"settled"`
	// Interrupted: the run was stopped (SIGINT, SIGTERM) before its end;
	// the figures cover it until then, and are no verdict.
	Interrupted bool `json:"interrupted,omitempty"`

	Sent       uint64 `json:"sent"`
	Expected   uint64 `json:"expected_deliveries"` // sent × (members−1), over the rooms that formed
	Delivered  uint64 `json:"delivered"`           // distinct messages received
	Lost       uint64 `json:"lost"`
	Duplicated uint64 `json:"duplicated"`
	OutOfOrder uint64 `json:"out_of_order"`
	// MissedReported counts messages the client library itself declared
	// missed (Missed events): never silent, but still lost.
	MissedReported uint64 `json:"missed_reported"`

	Latency Dist `json:"latency"` // end to end, sender's Send to receiver's event

	// Moves counts room relocations (one per room and epoch) by cause: the
	// chaos action that hit the room's previous server, "central" shortly
	// after a Central restart, or Central's own reason.
	Moves   map[string]int `json:"moves"`
	Handoff Dist           `json:"handoff"` // per member: Assign to Joined on the new server
	// Outage is, per room and incident, the time from the first member's
	// broken connection until every broken member had joined again.
	Outage      Dist `json:"outage"`
	OutageRooms int  `json:"outage_rooms"` // distinct rooms with at least one incident
	// Silences counts connections that fell silent past the liveness
	// deadline and answered again before any move (client.Resumed): the
	// server was slow, not gone, so they are not part of Outage.
	Silences    uint64   `json:"silences"`
	WorstRoom   string   `json:"worst_room,omitempty"`
	CentralDown []Millis `json:"central_down_ms,omitempty"` // each Central restart: from SIGTERM until the new one answered REST
	CentralStop []Millis `json:"central_stop_ms,omitempty"` // each Central restart: from SIGTERM until the old one exited

	ChaosDone map[string]int `json:"chaos_done"` // actions carried out, by kind
	Errors    map[string]int `json:"errors"`     // by kind
}

// OK reports whether nothing was lost, duplicated or reordered, every room
// formed and the run settled. Safe for concurrent use (it only reads).
func (r *Report) OK() bool {
	return r.RoomsUp == r.Rooms && r.Settled && r.Lost == 0 && r.Duplicated == 0 && r.OutOfOrder == 0 && r.MissedReported == 0
}

// failures says why r is not OK, one phrase a reason.
func (r *Report) failures() []string {
	var why []string
	if r.RoomsUp != r.Rooms {
		why = append(why, fmt.Sprintf("%d of %d rooms never came up", r.Rooms-r.RoomsUp, r.Rooms))
	}
	if !r.Settled {
		why = append(why, "the rooms did not settle (deliveries still owed at the end)")
	}
	for _, c := range []struct {
		n    int
		what string
	}{{int(r.Lost), "lost"}, {int(r.Duplicated), "duplicated"}, {int(r.OutOfOrder), "out of order"}, {int(r.MissedReported), "reported missed"}} {
		if c.n > 0 {
			why = append(why, fmt.Sprintf("%d messages %s", c.n, c.what))
		}
	}
	return why
}

// MovesTotal returns the number of relocations. Safe for concurrent use.
func (r *Report) MovesTotal() int {
	n := 0
	for _, v := range r.Moves {
		n += v
	}
	return n
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
}

func sortedKV(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// String renders the percentiles for humans. Safe for concurrent use.
func (d Dist) String() string {
	if d.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %v  p99 %v  p99.9 %v  max %v  (n=%d)", d.P50, d.P99, d.P999, d.Max, d.Count)
}

// WriteTable writes the human summary of r. Safe for concurrent use.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	verdict := "OK: nothing lost, duplicated or reordered"
	switch {
	case r.Interrupted:
		verdict = "none: interrupted before the end"
	case !r.OK():
		verdict = "FAILED: " + strings.Join(r.failures(), "; ")
	}
	chaos := r.Chaos
	if chaos == "" {
		chaos = "none"
	}
	rows := [][2]string{
		{"load", fmt.Sprintf("%d rooms x %d members, %.3g msg/s each, %v, %d chat servers", r.Rooms, r.Members, r.Rate, r.Duration, r.Servers)},
		{"chaos", chaos},
		{"rooms up", fmt.Sprintf("%d/%d (setup %v)", r.RoomsUp, r.Rooms, r.SetupTook)},
		{"sent", fmt.Sprintf("%d (%.0f msg/s over %v)", r.Sent, float64(r.Sent)/max(float64(r.SendFor)/1000, 1e-9), r.SendFor)},
		{"expected deliveries", fmt.Sprint(r.Expected)},
		{"delivered", fmt.Sprintf("%d (settled %v in %v)", r.Delivered, r.Settled, r.SettleTook)},
		{"lost", fmt.Sprint(r.Lost)},
		{"duplicated", fmt.Sprint(r.Duplicated)},
		{"out of order", fmt.Sprint(r.OutOfOrder)},
		{"reported missed", fmt.Sprint(r.MissedReported)},
		{"latency", r.Latency.String()},
		{"moves", fmt.Sprintf("%d (%s)", r.MovesTotal(), sortedKV(r.Moves))},
		{"handoff", r.Handoff.String()},
		{"without server", fmt.Sprintf("%s; %d rooms hit%s", r.Outage, r.OutageRooms, worst(r.WorstRoom))},
		{"silences", fmt.Sprintf("%d resumed, nothing moved (not counted as without server)", r.Silences)},
		{"central restarts", centralDown(r.CentralDown, r.CentralStop)},
		{"chaos done", sortedKV(r.ChaosDone)},
		{"errors", sortedKV(r.Errors)},
		{"verdict", verdict},
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

func worst(id string) string {
	if id == "" {
		return ""
	}
	return "; longest: " + id
}

func centralDown(down, stop []Millis) string {
	if len(down) == 0 {
		return "none"
	}
	parts := make([]string, len(down))
	for i, d := range down {
		parts[i] = d.String()
		if i < len(stop) {
			parts[i] += " (exited in " + stop[i].String() + ")"
		}
	}
	return fmt.Sprintf("%d (answering again after %s)", len(down), strings.Join(parts, ", "))
}
