package central

import (
	"cmp"
	"slices"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/centralapi"
)

// Tickets are revoked by a log that every chat server reads, a page at a
// time, in its heartbeat answers: when a room moves (tickets for its older
// epochs are void everywhere) and when a member leaves it or the room goes
// (tickets issued before are void, and their holders are dropped). Chat
// servers learn within a heartbeat or two; an entry is kept until every
// ticket it covers has expired. Every Central starts a log of its own (a
// new id), which servers read over from the start. The leaves and
// removals come back into it from the store (store.Revocation, kept as
// long as their log entries); the moves do not, so after a restart a
// ticket for a moved room's older epoch is bounded by its expiry alone.
//
// The log is kept whether or not Central signs tickets: it is also
// Central's own memory of who left which room, and which rooms it removed
// (leftLocked), so that a chat server's report that still lists a member,
// or a member's report with a ticket from before it left, does not bring
// it back (abuse probe, 2026-12-03: after a restart, a leave or a
// deregistration was undone by the next heartbeat; fuzz sweep F2: so
// was one after a failover to a standby, whose log began empty).

// Bounds of the revocation log. maxRevocations entries of about 100 bytes
// stay near 10 MB; past it old moves go first, then the oldest entries
// (and are logged), which a cluster reaches only with more than 100,000
// moves and leaves per TicketTTL. revokePage bounds one heartbeat answer.
const (
	maxRevocations = 100_000
	revokePage     = 4096
)

type revokeLog struct {
	id      string
	next    uint64 // sequence number of the next entry
	entries []centralapi.Revocation
	seqs    []uint64 // seqs[i] is the sequence number of entries[i]
	lost    uint64   // entries dropped over the cap
	// byRoom holds each room's entries with Before set (leaves and
	// removals), oldest first: a prefix of them goes whenever the log's
	// oldest entries go.
	byRoom map[string][]centralapi.Revocation
}

// revokeLocked appends r to the log; a leave or a removal is also stored.
func (c *Central) revokeLocked(r centralapi.Revocation, now time.Time) {
	l := &c.revokes
	c.pruneRevokesLocked(now)
	if len(l.entries) >= maxRevocations {
		n := l.dropMoves()
		if n == 0 {
			c.forgetRevokesLocked(1)
			n = 1
		}
		before := l.lost
		if l.lost += uint64(n); before == 0 || l.lost/10000 != before/10000 {
			c.log.Warn("ticket revocation log full: dropping old moves first, then the oldest; servers that fell behind may admit a revoked ticket", "dropped", l.lost, "cap", maxRevocations)
		}
	}
	// A ticket issued at now expires at now+TicketTTL, rounded down to a
	// second: one second more covers it.
	r.Until = now.Add(c.cfg.TicketTTL).Unix() + 1
	l.add(r)
	if r.Before != 0 {
		c.storeErr("put revocation", c.st.PutRevocation(store.Revocation{Room: r.Room, User: r.User, Before: r.Before, Until: r.Until}))
	}
}

// add appends r to the log as it is.
func (l *revokeLog) add(r centralapi.Revocation) {
	l.next++
	l.entries = append(l.entries, r)
	l.seqs = append(l.seqs, l.next)
	if r.Before != 0 {
		if l.byRoom == nil {
			l.byRoom = map[string][]centralapi.Revocation{}
		}
		l.byRoom[r.Room] = append(l.byRoom[r.Room], r)
	}
}

// dropMoves makes room in a full log by dropping the moves (entries without
// Before) among its oldest eighth, and returns how many went: a move's
// entry only hastens what a ticket's expiry does anyway, while a leave or a
// removal is also Central's own memory that the member or the room is gone
// (leftLocked), which a heartbeat could otherwise undo. It drops nothing
// unless at least one in 64 of that eighth are moves, so that each pass,
// a copy of the log, makes room for many entries.
func (l *revokeLog) dropMoves() int {
	head := len(l.entries) / 8
	moves := 0
	for _, e := range l.entries[:head] {
		if e.Before == 0 {
			moves++
		}
	}
	if moves == 0 || moves < head/64 {
		return 0
	}
	j := 0
	for i, e := range l.entries {
		if i < head && e.Before == 0 {
			continue
		}
		l.entries[j], l.seqs[j] = e, l.seqs[i]
		j++
	}
	clear(l.entries[j:])
	l.entries, l.seqs = l.entries[:j], l.seqs[:j]
	return moves
}

// forgetRevokesLocked drops the log's n oldest entries, and the stored
// records of the leaves and removals among them that no newer entry
// replaced (their record is the newer one's now).
func (c *Central) forgetRevokesLocked(n int) {
	l := &c.revokes
	for _, e := range l.entries[:n] {
		if e.Before == 0 {
			continue
		}
		rest := l.byRoom[e.Room][1:]
		if len(rest) > 0 {
			l.byRoom[e.Room] = rest
		} else {
			delete(l.byRoom, e.Room)
		}
		if !slices.ContainsFunc(rest, func(r centralapi.Revocation) bool { return r.User == e.User }) {
			c.storeErr("delete revocation", c.st.DeleteRevocation(store.RevocationID(e.Room, e.User)))
		}
	}
	l.entries, l.seqs = l.entries[n:], l.seqs[n:]
}

// loadRevokesLocked puts the stored leaves and removals whose tickets may
// still live back into the log, as they were, and deletes the others.
func (c *Central) loadRevokesLocked(now time.Time) error {
	recs, err := c.st.Revocations()
	if err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b store.Revocation) int { return cmp.Compare(a.Before, b.Before) })
	for _, rec := range recs {
		if rec.Until < now.Unix() {
			c.storeErr("delete revocation", c.st.DeleteRevocation(rec.ID()))
			continue
		}
		c.revokes.add(centralapi.Revocation{Room: rec.Room, User: rec.User, Before: rec.Before, Until: rec.Until})
	}
	return nil
}

// leftLocked reports whether user left room, or room was removed, after a
// ticket issued at issued (Unix ns; 0 for a membership known without a
// ticket, which predates any leave this Central saw: a member let in
// again would be one in Central's own picture).
func (c *Central) leftLocked(room, user string, issued int64) bool {
	for _, r := range c.revokes.byRoom[room] {
		if (r.User == "" || r.User == user) && issued <= r.Before {
			return true
		}
	}
	return false
}

// pruneRevokesLocked forgets entries whose tickets have all expired.
func (c *Central) pruneRevokesLocked(now time.Time) {
	l := &c.revokes
	i := 0
	for i < len(l.entries) && l.entries[i].Until < now.Unix() {
		i++
	}
	if i == 0 {
		return
	}
	c.forgetRevokesLocked(i)
	if cap(l.entries) > 2*len(l.entries)+64 {
		l.entries, l.seqs = slices.Clone(l.entries), slices.Clone(l.seqs)
	}
}

// revocationsLocked fills out's revocation fields for a server that holds
// log id up to seq.
func (c *Central) revocationsLocked(out *centralapi.HeartbeatResponse, id string, seq uint64, now time.Time) {
	if c.cfg.TicketKey == nil {
		return
	}
	l := &c.revokes
	c.pruneRevokesLocked(now)
	if id != l.id || seq > l.next {
		seq = 0
	}
	i, _ := slices.BinarySearch(l.seqs, seq+1)
	j := min(i+revokePage, len(l.entries))
	out.Revocations = slices.Clone(l.entries[i:j])
	out.RevokeLog, out.RevokeSeq = l.id, l.next
	if j > i {
		out.RevokeSeq = l.seqs[j-1]
	}
}
