package selection

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Sample is the round-trip time of one member to one server, as measured by
// the member's prober.
type Sample struct {
	Median time.Duration
	Spread time.Duration
	Count  int // probes behind Median; 0 means the server was not measured
}

// measured reports whether the sample can be trusted as a figure at all; a
// negative median can only come from a broken prober, so it counts as none.
func (s Sample) measured() bool { return s.Count > 0 && s.Median >= 0 }

// Server is a candidate as Central sees it.
type Server struct {
	ID       string
	Up       bool // false when Central marked it down
	Draining bool
	Full     bool // at capacity (rooms or connections)
}

// Member is one room member: its latency vector, server ID -> sample.
type Member struct {
	User string
	RTT  map[string]Sample
}

// Choice is the outcome for one room.
type Choice struct {
	ServerID string
	// Index is the server's position in the slice the choice was made from,
	// so a caller on the Matrix path can keep the room's server as an index.
	// It is -1 when no slice was involved (Score) and meaningless when
	// ServerID is empty.
	Index int
	Max   time.Duration // worst member median RTT on that server
	Sum   time.Duration // sum of member medians on that server
	// Spread is the largest member spread (interquartile range of the
	// probes) on that server, when the caller knows spreads; Policy uses
	// it only to judge whether a gain is real.
	Spread time.Duration
}

var (
	// ErrNoEligible means no server is up, open and measured by every member.
	// Returned errors wrap it with detail; test with errors.Is.
	ErrNoEligible = errors.New("selection: no eligible server")
	// ErrUnmeasured is also matched by an ErrNoEligible error when a
	// server that is up and open was passed over only because some member
	// has not measured it: a member's next report may still make it
	// eligible.
	ErrUnmeasured = errors.New("selection: an open server not measured by every member")
	// ErrNoMembers means the room has no members, so no server can be scored.
	ErrNoMembers = errors.New("selection: room has no members")
)

// Reasons that need no formatting are constants so that the common outcome of
// a scan, staying put, costs no allocation.
const (
	ReasonCurrentUnknown    = "current server unknown"
	ReasonCurrentDown       = "current server down"
	ReasonCurrentDraining   = "current server draining"
	ReasonCurrentUnmeasured = "current server not measured by every member"
	ReasonNoEligible        = "no eligible server"
	ReasonOnBest            = "already on best server"
	ReasonBelowAbsolute     = "gain below absolute margin"
	ReasonBelowRelative     = "gain below relative margin"
	ReasonBelowSpread       = "gain within the measurements' spread"
	ReasonDwell             = "within dwell time"
)

// open reports whether a server may take a room. keep exempts one index from
// the capacity check: a full server still serves the rooms it already has.
func open(s *Server, i, keep int) bool {
	return s.Up && !s.Draining && (!s.Full || i == keep)
}

// replace is the reservoir step for the k-th equally good server: taking it
// with probability 1/k leaves each of the k equally likely, without having to
// remember them.
func replace(rnd *rand.Rand, k int) bool {
	if rnd == nil {
		return rand.IntN(k) == 0
	}
	return rnd.IntN(k) == 0
}

// pass keeps the running best of one pass over the servers in plain
// integers; the Choice is assembled once at the end. It is passed by value
// so that it never has its address taken and can live in registers.
type pass struct {
	idx      int
	max, sum time.Duration
	ties     int // servers seen with exactly max and sum; 0 = none yet
}

// beaten reports whether figures (mx, sum) lose to the best so far, which is
// what nearly every server does once a good one has been seen. It is the one
// check the scan loops make per server, so it is small enough to inline.
func (t pass) beaten(mx, sum time.Duration) bool {
	return t.ties > 0 && (mx > t.max || (mx == t.max && sum > t.sum))
}

// take records server i, which beaten has let through: a new leader, or an
// exact tie that replaces the leader with probability 1/ties. Only these
// servers, a handful per pass, pay for the call.
func (t pass) take(i int, mx, sum time.Duration, rnd *rand.Rand) pass {
	if t.ties == 0 || mx < t.max || sum < t.sum {
		return pass{idx: i, max: mx, sum: sum, ties: 1}
	}
	t.ties++
	if replace(rnd, t.ties) {
		t.idx = i
	}
	return t
}

// result turns the pass into a Choice over servers.
func (t pass) result(servers []Server) (Choice, bool) {
	if t.ties == 0 {
		return Choice{}, false
	}
	return Choice{ServerID: servers[t.idx].ID, Index: t.idx, Max: t.max, Sum: t.sum}, true
}

// chooseMap is the single pass behind Choose and Decide.
func chooseMap(servers []Server, members []Member, keep int, rnd *rand.Rand) (Choice, bool) {
	var t pass
	for i := range servers {
		s := &servers[i]
		if !open(s, i, keep) {
			continue
		}
		var mx, sum time.Duration
		ok := true
		for j := range members {
			smp, found := members[j].RTT[s.ID]
			if !found || !smp.measured() {
				ok = false
				break
			}
			sum += smp.Median
			mx = max(mx, smp.Median)
			// Already worse than the best: the remaining members cannot
			// lower the maximum, so skip their lookups, which are the
			// expensive part here. Strictly greater only, so that ties
			// still reach the reservoir.
			if t.ties > 0 && mx > t.max {
				ok = false
				break
			}
		}
		if ok && !t.beaten(mx, sum) {
			t = t.take(i, mx, sum, rnd)
		}
	}
	return t.result(servers)
}

// Choose picks the server minimising the maximum member RTT, ties broken by
// the smallest sum, remaining ties uniformly at random using rnd (nil means
// math/rand/v2's package-level source). Servers that are down, draining, full,
// or not measured by every member are skipped. Rooms of any size from one
// member up are handled alike; with no members the error is ErrNoMembers, and
// with no candidate left it wraps ErrNoEligible.
func Choose(servers []Server, members []Member, rnd *rand.Rand) (Choice, error) {
	if len(members) == 0 {
		return Choice{}, ErrNoMembers
	}
	if c, ok := chooseMap(servers, members, -1, rnd); ok {
		return c, nil
	}
	return Choice{}, noEligible(servers, len(members), func(i int) bool {
		_, ok := Score(servers[i].ID, members)
		return ok
	})
}

// Score computes Max and Sum for one server; ok is false if some member has
// not measured it, or if there are no members to measure anything.
func Score(serverID string, members []Member) (Choice, bool) {
	if len(members) == 0 {
		return Choice{}, false
	}
	c := Choice{ServerID: serverID, Index: -1}
	for j := range members {
		smp, found := members[j].RTT[serverID]
		if !found || !smp.measured() {
			return Choice{}, false
		}
		c.Max = max(c.Max, smp.Median)
		c.Sum += smp.Median
	}
	return c, true
}

// noEligible builds the error for an empty choice. It runs only on failure,
// so it can afford a second pass to say why each server was rejected, which
// is what an operator needs to read in the log.
func noEligible(servers []Server, members int, measured func(i int) bool) error {
	e := &NoEligibleError{Servers: len(servers), Members: members}
	for i := range servers {
		s := &servers[i]
		switch {
		case !s.Up:
			e.Down++
		case s.Draining:
			e.Draining++
		case s.Full:
			e.Full++
		case !measured(i):
			e.Unmeasured++
		}
	}
	return e
}

// NoEligibleError is ErrNoEligible with its counts: of Servers, how many
// were passed over for each reason. It matches ErrUnmeasured too when some
// open server lacked only a member's measurement.
type NoEligibleError struct {
	Servers, Members                 int
	Down, Draining, Full, Unmeasured int
}

// Error words the counts for a log.
func (e *NoEligibleError) Error() string {
	return fmt.Sprintf("%v: %d servers for %d members: %d down, %d draining, %d full, %d not measured by every member",
		ErrNoEligible, e.Servers, e.Members, e.Down, e.Draining, e.Full, e.Unmeasured)
}

func (e *NoEligibleError) Is(target error) bool {
	return target == ErrNoEligible || (e.Unmeasured > 0 && target == ErrUnmeasured)
}

// Sentence words the counts for the people waiting for the room: "all 2
// chat servers are full", "of 3 chat servers, 1 is down and 2 are full".
func (e *NoEligibleError) Sentence() string {
	if e.Servers == 0 {
		return "no chat server is running"
	}
	type reason struct {
		n         int
		one, many string
	}
	var why []string
	for _, r := range []reason{
		{e.Down, "is down", "are down"},
		{e.Draining, "is shutting down", "are shutting down"},
		{e.Full, "is full", "are full"},
		{e.Unmeasured, "is not measured by everyone in the chat yet", "are not measured by everyone in the chat yet"},
	} {
		switch {
		case r.n == 0:
		case r.n == e.Servers && e.Servers == 1:
			return "the only chat server " + r.one
		case r.n == e.Servers:
			return fmt.Sprintf("all %d chat servers %s", e.Servers, r.many)
		case r.n == 1:
			why = append(why, "1 "+r.one)
		default:
			why = append(why, fmt.Sprintf("%d %s", r.n, r.many))
		}
	}
	if len(why) == 0 {
		return fmt.Sprintf("none of the %d chat servers can take it", e.Servers)
	}
	list := why[len(why)-1]
	if len(why) > 1 {
		list = strings.Join(why[:len(why)-1], ", ") + " and " + list
	}
	return fmt.Sprintf("of %d chat servers, %s", e.Servers, list)
}

// Policy is the anti-flap rule for moving a live room.
type Policy struct {
	MinGain    time.Duration // absolute improvement of Max required (default 5ms)
	MinGainPct float64       // relative improvement of Max required, in percent (default 10)
	MinDwell   time.Duration // no voluntary move within this long after the last move (default 10s)
	// SpreadFactor: a voluntary move also needs a gain above SpreadFactor
	// times the sum of the two servers' spreads (default 1), so a gain the
	// measurements cannot tell from noise moves nothing. 0 turns it off.
	SpreadFactor float64
}

// DefaultPolicy returns the defaults: 5ms and 10% of gain, 10s of dwell.
// The dwell exceeds the paper's 4s scan interval, so a room that has just
// moved sits out at least two scans while its members' probes of the new
// server settle.
func DefaultPolicy() Policy {
	return Policy{MinGain: 5 * time.Millisecond, MinGainPct: 10, MinDwell: 10 * time.Second, SpreadFactor: 1}
}

// Decision says whether to move a room now. To is where the room should be
// after the decision: the new server when Move is true, the current one
// otherwise (empty when there is nowhere to go).
type Decision struct {
	Move   bool
	To     Choice
	Reason string // short human text for logs
}

// Decide applies the policy to a room whose current server is current and
// whose last move happened at lastMove; now is injected so that the rule
// never reads a clock.
//
// A current server that is down, draining, missing from servers or no longer
// measured by every member is left at once for the best eligible server,
// regardless of dwell and margins. Otherwise the room moves only when the
// best server beats the current one by both margins and the dwell time has
// passed. Being full does not make the current server ineligible. With
// nowhere to go the result is a non-move and an error wrapping ErrNoEligible.
func (p Policy) Decide(current string, lastMove time.Time, now time.Time, servers []Server, members []Member, rnd *rand.Rand) (Decision, error) {
	if len(members) == 0 {
		return Decision{Reason: ErrNoMembers.Error()}, ErrNoMembers
	}
	ci := -1
	for i := range servers {
		if servers[i].ID == current {
			ci = i
			break
		}
	}
	var cur Choice
	why := ""
	switch {
	case ci < 0:
		why = ReasonCurrentUnknown
	case !servers[ci].Up:
		why = ReasonCurrentDown
	case servers[ci].Draining:
		why = ReasonCurrentDraining
	default:
		var ok bool
		if cur, ok = Score(current, members); !ok {
			why = ReasonCurrentUnmeasured
		}
		cur.Index = ci
	}
	if why != "" {
		if best, ok := chooseMap(servers, members, -1, rnd); ok {
			return Decision{Move: true, To: best, Reason: why}, nil
		}
		return Decision{Reason: why + "; " + ReasonNoEligible}, noEligible(servers, len(members), func(i int) bool {
			_, ok := Score(servers[i].ID, members)
			return ok
		})
	}
	// Inside the dwell time nothing voluntary can happen, so the scan of
	// every server is skipped altogether.
	if now.Sub(lastMove) < p.MinDwell {
		return Decision{To: cur, Reason: ReasonDwell}, nil
	}
	best, _ := chooseMap(servers, members, ci, rnd) // cur is eligible, so ok
	cur.Spread, best.Spread = spreadOf(cur.ServerID, members), spreadOf(best.ServerID, members)
	return p.judge(cur, best), nil
}

// judge weighs an eligible current server against the best one once the
// dwell time has passed.
func (p Policy) judge(cur, best Choice) Decision {
	gain := cur.Max - best.Max
	switch {
	case best.Index == cur.Index || gain <= 0:
		return Decision{To: cur, Reason: ReasonOnBest}
	case gain < p.MinGain:
		return Decision{To: cur, Reason: ReasonBelowAbsolute}
	// gain > 0 here, so cur.Max > 0 and the ratio is defined. Multiplying
	// rather than dividing keeps the comparison exact at the boundary for
	// whole-number percentages.
	case float64(gain)*100 < p.MinGainPct*float64(cur.Max):
		return Decision{To: cur, Reason: ReasonBelowRelative}
	case p.SpreadFactor > 0 && float64(gain) <= p.SpreadFactor*float64(cur.Spread+best.Spread):
		return Decision{To: cur, Reason: ReasonBelowSpread}
	}
	return Decision{Move: true, To: best, Reason: moveReason(best, cur)}
}

// spreadOf is the largest member spread on server id.
func spreadOf(id string, members []Member) time.Duration {
	var d time.Duration
	for _, m := range members {
		d = max(d, m.RTT[id].Spread)
	}
	return d
}

// moveReason renders "better server: serv1 41ms < serv3 62ms" with one
// allocation; moves are rare, so this is the only place a scan allocates.
func moveReason(best, cur Choice) string {
	var buf [96]byte
	b := append(buf[:0], "better server: "...)
	b = append(b, best.ServerID...)
	b = append(b, ' ')
	b = appendMillis(b, best.Max)
	b = append(b, " < "...)
	b = append(b, cur.ServerID...)
	b = append(b, ' ')
	b = appendMillis(b, cur.Max)
	return string(b)
}

// appendMillis writes d in milliseconds with at most one decimal, which is
// as much precision as a probe median carries.
func appendMillis(b []byte, d time.Duration) []byte {
	tenths := (d + 50*time.Microsecond) / (100 * time.Microsecond)
	b = strconv.AppendInt(b, int64(tenths/10), 10)
	if f := tenths % 10; f != 0 {
		b = append(b, '.', byte('0'+f))
	}
	return append(b, "ms"...)
}
