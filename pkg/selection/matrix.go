package selection

import (
	"errors"
	"math/rand/v2"
	"time"
)

// Unmeasured marks a Matrix cell for a server the member has not measured.
// Any negative cell means the same.
const Unmeasured time.Duration = -1

// ErrShape means a Matrix does not match the server list it is used with.
var ErrShape = errors.New("selection: matrix shape does not match server list")

// Matrix is one room's latencies in the form the relocation scan wants: the
// member medians for server s occupy RTT[s*Members : (s+1)*Members], in the
// order of the []Server slice the matrix is used with. Laying a server's
// figures side by side lets one pass read the slice strictly in order, and
// indexing by position removes the per-member map lookup that dominates the
// map-based API.
//
// Central keeps one Matrix per room and rewrites a member's column when that
// member reports a new latency vector, which happens far less often than the
// scan runs. When the server list changes (a server added or removed, not
// merely marked down) every matrix must be rebuilt against the new order.
//
// Spread, when not nil, holds the members' spreads (interquartile range of
// their probes) in the same layout; Policy.DecideMatrix then refuses moves
// whose gain the spreads cannot show.
type Matrix struct {
	Servers int
	Members int
	RTT     []time.Duration
	Spread  []time.Duration
}

// spreadAt is the largest member spread on server s, 0 when unknown.
func (m Matrix) spreadAt(s int) time.Duration {
	if len(m.Spread) != len(m.RTT) || s < 0 || s >= m.Servers {
		return 0
	}
	var d time.Duration
	for _, v := range m.Spread[s*m.Members : (s+1)*m.Members] {
		d = max(d, v)
	}
	return d
}

// NewMatrix returns a matrix with every cell Unmeasured.
func NewMatrix(servers, members int) Matrix {
	m := Matrix{Servers: servers, Members: members, RTT: make([]time.Duration, servers*members)}
	for i := range m.RTT {
		m.RTT[i] = Unmeasured
	}
	return m
}

// At returns member's median to server, or a negative value if unmeasured.
func (m Matrix) At(member, server int) time.Duration { return m.RTT[server*m.Members+member] }

// Set stores member's median to server; pass Unmeasured to clear it.
func (m Matrix) Set(member, server int, d time.Duration) { m.RTT[server*m.Members+member] = d }

// SetMember stores a member's whole latency vector, given in server order.
// Cells beyond len(rtt) become Unmeasured.
func (m Matrix) SetMember(member int, rtt []time.Duration) {
	for s := range m.Servers {
		d := Unmeasured
		if s < len(rtt) {
			d = rtt[s]
		}
		m.RTT[s*m.Members+member] = d
	}
}

// Fill reshapes m for servers and members, reusing its storage when large
// enough, and copies in every member's medians; samples that are missing or
// have no probes become Unmeasured. This is the bridge from the map form.
func (m *Matrix) Fill(servers []Server, members []Member) {
	n := len(servers) * len(members)
	if cap(m.RTT) < n {
		m.RTT = make([]time.Duration, n)
	}
	m.RTT = m.RTT[:n]
	m.Servers, m.Members = len(servers), len(members)
	for s := range servers {
		for j := range members {
			d := Unmeasured
			if smp, ok := members[j].RTT[servers[s].ID]; ok && smp.measured() {
				d = smp.Median
			}
			m.RTT[s*m.Members+j] = d
		}
	}
}

// check validates m against servers; cheap enough to do on every call.
func (m Matrix) check(servers []Server) error {
	switch {
	case m.Members <= 0:
		return ErrNoMembers
	case m.Servers != len(servers) || len(m.RTT) != m.Servers*m.Members:
		return ErrShape
	}
	return nil
}

// measuredAt reports whether every member has measured server s.
func (m Matrix) measuredAt(s int) bool {
	for _, d := range m.RTT[s*m.Members : (s+1)*m.Members] {
		if d < 0 {
			return false
		}
	}
	return true
}

// chooseMatrix is chooseMap over a Matrix; the two must visit servers in
// the same order and offer the same figures so that they draw from rnd
// identically. m must have passed check.
//
// With figures that vary from room to room, "is this member the new
// maximum?" is a coin flip the branch predictor loses, so a row is folded
// without branches: max and sum as usual, and the cells OR-ed together, whose
// sign bit then says whether any was Unmeasured. Stopping early once a
// server is beaten, as the map form does, measured slower here: the extra
// branch costs more than the few additions it saves.
func chooseMatrix(servers []Server, m Matrix, keep int, rnd *rand.Rand) (Choice, bool) {
	if m.Members == 2 {
		return choosePairs(servers, m.RTT, keep, rnd)
	}
	var t pass
	k := m.Members
	rtt := m.RTT[:len(servers)*k]
	for i := range servers {
		if !open(&servers[i], i, keep) {
			continue
		}
		var mx, sum, neg time.Duration
		for _, d := range rtt[i*k : i*k+k] {
			mx = max(mx, d)
			sum += d
			neg |= d
		}
		if neg >= 0 && !t.beaten(mx, sum) {
			t = t.take(i, mx, sum, rnd)
		}
	}
	return t.result(servers)
}

// choosePairs is chooseMatrix for two members, the one-to-one chat that
// makes up most rooms. Without the inner loop's bookkeeping a scan of such
// rooms runs in well under the time of the general loop.
func choosePairs(servers []Server, rtt []time.Duration, keep int, rnd *rand.Rand) (Choice, bool) {
	var t pass
	rtt = rtt[:2*len(servers)]
	for i := range servers {
		if !open(&servers[i], i, keep) {
			continue
		}
		pair := rtt[2*i : 2*i+2]
		a, b := pair[0], pair[1]
		if mx, sum := max(a, b), a+b; a|b >= 0 && !t.beaten(mx, sum) {
			t = t.take(i, mx, sum, rnd)
		}
	}
	return t.result(servers)
}

// ChooseMatrix is Choose for a room held as a Matrix over servers.
func ChooseMatrix(servers []Server, m Matrix, rnd *rand.Rand) (Choice, error) {
	if err := m.check(servers); err != nil {
		return Choice{}, err
	}
	if c, ok := chooseMatrix(servers, m, -1, rnd); ok {
		return c, nil
	}
	return Choice{}, noEligible(servers, m.Members, m.measuredAt)
}

// ScoreMatrix is Score for the server at index server; ok is false when the
// index is out of range, the matrix does not fit servers, or some member has
// not measured that server.
func ScoreMatrix(servers []Server, m Matrix, server int) (Choice, bool) {
	if m.check(servers) != nil || server < 0 || server >= len(servers) {
		return Choice{}, false
	}
	c := Choice{ServerID: servers[server].ID, Index: server}
	for _, d := range m.RTT[server*m.Members : (server+1)*m.Members] {
		if d < 0 {
			return Choice{}, false
		}
		c.Max = max(c.Max, d)
		c.Sum += d
	}
	return c, true
}

// DecideMatrix is Policy.Decide for a room held as a Matrix over servers,
// with the current server given by its index (any out-of-range index, such
// as -1 for a room not yet placed, counts as a missing server). This is the
// form Central's relocation scan should use.
func (p Policy) DecideMatrix(current int, lastMove time.Time, now time.Time, servers []Server, m Matrix, rnd *rand.Rand) (Decision, error) {
	if err := m.check(servers); err != nil {
		return Decision{Reason: err.Error()}, err
	}
	var cur Choice
	why := ""
	switch {
	case current < 0 || current >= len(servers):
		why = ReasonCurrentUnknown
	case !servers[current].Up:
		why = ReasonCurrentDown
	case servers[current].Draining:
		why = ReasonCurrentDraining
	default:
		var ok bool
		if cur, ok = ScoreMatrix(servers, m, current); !ok {
			why = ReasonCurrentUnmeasured
		}
	}
	if why != "" {
		if best, ok := chooseMatrix(servers, m, -1, rnd); ok {
			return Decision{Move: true, To: best, Reason: why}, nil
		}
		return Decision{Reason: why + "; " + ReasonNoEligible}, noEligible(servers, m.Members, m.measuredAt)
	}
	if now.Sub(lastMove) < p.MinDwell {
		return Decision{To: cur, Reason: ReasonDwell}, nil
	}
	best, _ := chooseMatrix(servers, m, current, rnd)
	cur.Spread, best.Spread = m.spreadAt(cur.Index), m.spreadAt(best.Index)
	return p.judge(cur, best), nil
}
