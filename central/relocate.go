// Relocation: the scan and the decisions it makes, the pushes that carry
// a room's placement to its members until they acknowledge it, and the
// members' reports that a room's server is unreachable.

package central

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/rtt"
	"nearchat/pkg/selection"
	"nearchat/pkg/ticket"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

// refreshDenseLocked lays u's vector out in server order.
func (c *Central) refreshDenseLocked(u *user) {
	if u.denseLayout == c.layout && u.denseGen == u.latGen {
		return
	}
	u.dense = slices.Grow(u.dense[:0], len(c.servers))[:len(c.servers)]
	u.spread = slices.Grow(u.spread[:0], len(c.servers))[:len(c.servers)]
	for i, s := range c.servers {
		d, sp := selection.Unmeasured, time.Duration(0)
		if smp, ok := u.lat[s.rec.ID]; ok && smp.Count > 0 && smp.Median >= 0 {
			d, sp = smp.Median, max(smp.Spread, 0)
		}
		u.dense[i], u.spread[i] = d, sp
	}
	u.denseLayout, u.denseGen = c.layout, u.latGen
}

// refreshDirtyLocked brings every dense vector up to date, so that matrix
// rebuilds can read them from several goroutines at once.
func (c *Central) refreshDirtyLocked() {
	if c.denseAt != c.layout {
		for _, u := range c.users {
			c.refreshDenseLocked(u)
		}
		c.denseAt = c.layout
	} else {
		for u := range c.dirty {
			c.refreshDenseLocked(u)
		}
	}
	clear(c.dirty)
}

// refreshMatrix rebuilds r.m if stale. It writes only r and reads the
// members' dense vectors, which refreshDirtyLocked made current.
func (c *Central) refreshMatrix(r *room) {
	if r.mFresh && r.mLayout == c.layout {
		return
	}
	k := len(r.members)
	n := len(c.servers)
	if cap(r.m.RTT) < n*k {
		r.m.RTT = make([]time.Duration, n*k)
		r.m.Spread = make([]time.Duration, n*k)
	}
	r.m.RTT, r.m.Spread = r.m.RTT[:n*k], r.m.Spread[:n*k]
	r.m.Servers, r.m.Members = n, k
	for j, u := range r.members {
		for s := range n {
			r.m.RTT[s*k+j] = u.dense[s]
			r.m.Spread[s*k+j] = u.spread[s]
		}
	}
	r.mLayout, r.mFresh = c.layout, true
}

// move is a relocation decided by a scan.
type move struct {
	r       *room
	to      int
	epoch   uint64
	reason  string
	prevRTT time.Duration
	rtt     time.Duration
}

// decide runs the policy for one room without changing anything but its
// matrix; it is safe to call for different rooms from several goroutines.
func (c *Central) decide(r *room, now time.Time, rnd *rand.Rand) (move, bool) {
	if len(r.members) == 0 {
		return move{}, false
	}
	if r.srv == nil && r.lostSrv != "" && now.Sub(c.started) < c.cfg.OfflineAfter {
		return move{}, false // its server may still come back and report it
	}
	if c.vectorsBehind(r, now) {
		return move{}, false
	}
	c.refreshMatrix(r)
	cur := r.cur()
	last := r.lastMove
	if r.unmoved {
		// The dwell keeps a room from moving back and forth on noise
		// between servers it has chosen among. A room never moved has
		// not chosen yet: its placement rested on its members' first
		// rounds, the noisiest (a stalled one put a make demo room on
		// serv4 at 87 ms, not serv3 at 62, and the dwell held it 8.5 s),
		// or it could not choose a server that came up after (a chat
		// begun just before its best server came up waited out the
		// whole dwell, 4.6 s in the Mininet screen test). A server
		// better by the margins and spreads takes it at once.
		last = time.Time{}
	}
	d, err := c.cfg.Policy.DecideMatrix(cur, last, now, c.sel, r.m, rnd)
	if err != nil || !d.Move {
		return move{}, false
	}
	mv := move{r: r, to: d.To.Index, epoch: r.epoch, reason: d.Reason, rtt: d.To.Max}
	if cur >= 0 {
		if sc, ok := selection.ScoreMatrix(c.sel, r.m, cur); ok {
			mv.prevRTT = sc.Max
		}
	}
	return mv, true
}

// vectorsBehind reports whether a member's vector lacks r's current server
// (healthy) only because the member reported it before this Central knew
// the server: a vector keeps only servers Central knows, and after a
// restart on the in-memory store the servers register again one by one,
// so a member that reported between two registrations was taken as not
// measuring the room's own server, and the room moved at once (fuzz sweep
// 2, F3). A member probes a server as soon as it hears it is up, and
// reports after, changed or not; until it does (an older client may not),
// or for OfflineAfter at most, the room stays.
//
// A vector reported within roundSpan (or SettleWait, if longer) after the
// server became known may still come from a round the member began
// before: it fetched the server list, then probed for up to its probe
// timeout. Taken at its word, such a vector moved a healthy room 80 ms
// after its server registered again (chatload, 1,000 rooms of three,
// Central restarted: 1 move). The room waits for a report from after that
// (a member reports a newly announced server once probed, changed or not;
// latencyLocked notes a report that repeats the vector too), or for
// OfflineAfter since the registration at most, and the next scan.
func (c *Central) vectorsBehind(r *room, now time.Time) bool {
	s := r.srv
	if s == nil || s.gone || s.rec.Down || s.rec.Draining || now.Sub(s.knownAt) >= c.cfg.OfflineAfter {
		return false
	}
	window := max(c.cfg.SettleWait, roundSpan)
	for _, u := range r.members {
		if _, ok := u.lat[s.rec.ID]; ok {
			continue
		}
		before := u.latGen <= s.knownGen
		maybeBefore := !u.latAt.IsZero() && u.latAt.Sub(s.knownAt) < window
		if before || maybeBefore {
			return true
		}
	}
	return false
}

// roundSpan is how long a member's probe round may run: the default
// probe timeout (rtt.DefaultConfig, 2 s) twice, for the server list
// fetched first and probes queued behind others.
const roundSpan = 4 * time.Second

// evaluateLocked decides and applies one room's move.
func (c *Central) evaluateLocked(r *room, now time.Time, rnd *rand.Rand) {
	if mv, ok := c.decide(r, now, rnd); ok {
		c.applyMoveLocked(mv, now)
	}
}

func (c *Central) applyMoveLocked(mv move, now time.Time) {
	r := mv.r
	if c.roomByID[r.id] != r || r.epoch != mv.epoch {
		return
	}
	if t := c.sel[mv.to]; !t.Up || t.Draining || (t.Full && mv.to != r.cur()) {
		return // a move applied earlier in this scan filled it; the next scan retries
	}
	to := c.servers[mv.to]
	prev := r.srv
	prevID := ""
	if prev != nil {
		prevID = prev.rec.ID
		prev.assigned--
		r.unhold()
		if prev.idx >= 0 {
			c.sel[prev.idx].Full = prev.full()
		}
	}
	r.srv = to
	r.unmoved = false
	to.assigned++
	if r.joined {
		r.hold(now) // its members rejoin it there
	} else {
		to.fresh++
	}
	c.sel[to.idx].Full = to.full()
	r.epoch = c.nextEpoch(r, now)
	r.lastMove = now
	c.revokeLocked(centralapi.Revocation{Room: r.id, Epoch: r.epoch}, now)
	r.lostSrv = ""
	c.storeErr("put room", c.st.PutRoom(r.record()))
	c.log.Info("room moved", "room", r.id, "epoch", r.epoch, "from", prevID, "to", to.rec.ID, "reason", mv.reason, "rtt", mv.rtt, "prev_rtt", mv.prevRTT)
	c.noteMoveLocked(r, prev, mv, now)
	c.pushAssignLocked(r, mv.reason, prevID, mv.prevRTT, mv.rtt, now)
}

// nextEpoch is the epoch of r's next placement. A room Central created
// counts up from 1. A room it adopted may have had placements this process
// never saw (a move made just before a restart, which some member follows),
// so its next epoch is also at least the current Unix time in
// milliseconds: epochs never repeat across restarts.
func (c *Central) nextEpoch(r *room, now time.Time) uint64 {
	e := r.epoch + 1
	if r.adopted {
		e = max(e, uint64(now.UnixMilli()))
	}
	return e
}

// scanChunk is how many rooms one scan worker takes at a time.
const scanChunk = 1024

// scanLocked re-evaluates every room, in parallel over the CPUs. Decisions
// only read shared state (each worker writes the matrices of its own rooms
// alone), and moves are applied afterwards on this goroutine.
func (c *Central) scanLocked() int {
	c.syncSelLocked()
	c.refreshDirtyLocked()
	now := c.now()
	// Heartbeat answers and new revocations prune the log too, but
	// without tickets nothing reads it: its expired leaves, and their
	// store records, would wait for the next leave.
	c.pruneRevokesLocked(now)
	workers := len(c.workerRnds)
	if len(c.rooms) < 2*scanChunk {
		workers = 1
	}
	found := make([][]move, workers)
	if workers == 1 {
		found[0] = c.scanRange(0, len(c.rooms), now, c.workerRnds[0], nil)
	} else {
		var wg sync.WaitGroup
		var next chunkCounter
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					lo := next.take(scanChunk)
					if lo >= len(c.rooms) {
						return
					}
					found[w] = c.scanRange(lo, min(lo+scanChunk, len(c.rooms)), now, c.workerRnds[w], found[w])
				}
			}()
		}
		wg.Wait()
	}
	n := 0
	for _, mvs := range found {
		for _, mv := range mvs {
			c.applyMoveLocked(mv, now)
			n++
		}
	}
	return n
}

func (c *Central) scanRange(lo, hi int, now time.Time, rnd *rand.Rand, out []move) []move {
	for _, r := range c.rooms[lo:hi] {
		if mv, ok := c.decide(r, now, rnd); ok {
			out = append(out, mv)
		}
	}
	return out
}

// chunkCounter hands out consecutive ranges of the room slice to scan
// workers.
type chunkCounter struct{ n atomic.Int64 }

func (k *chunkCounter) take(size int) int { return int(k.n.Add(int64(size))) - size }

// kickScan asks the scan loop to run now; it never blocks.
func (c *Central) kickScan() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Central) scanLoop() {
	t := time.NewTicker(c.cfg.ScanInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		start := time.Now()
		c.mu.Lock()
		c.scanLocked()
		c.mu.Unlock()
		c.obs.scan.Observe(time.Since(start).Seconds())
	}
}

// push is the placement Central wants one member to follow, repeated until
// the member acknowledges it. There is at most one per (member, room): a
// newer placement replaces the older push.
type push struct {
	u      *user
	room   string
	epoch  uint64
	server string
	frame  []byte    // immutable once built: AsyncWrite may still hold it
	first  time.Time // start of the give-up clock: the member's last connect
	next   time.Time
	tries  int
}

// pushAssignLocked sends r's placement to every member and keeps it until
// acknowledged.
func (c *Central) pushAssignLocked(r *room, reason, prev string, prevRTT, rtt time.Duration, now time.Time) {
	m := &proto.Assign{
		Room: r.id, Epoch: r.epoch, Server: proto.ServerRef{ID: r.srv.rec.ID, Addr: r.srv.rec.Addr},
		Members: r.memberNames(), Reason: reason, Prev: prev, PrevRTT: prevRTT, RTT: rtt,
	}
	for _, u := range r.members {
		c.pushToLocked(u, r, m, now)
	}
}

// pushToLocked replaces u's push for r with m and sends it.
func (c *Central) pushToLocked(u *user, r *room, m *proto.Assign, now time.Time) {
	c.dropPushLocked(u, r.id)
	frame, err := c.assignFrame(m, u.name, now)
	if err != nil {
		c.log.Error("encode assign", "room", r.id, "err", err)
		return
	}
	p := &push{u: u, room: r.id, epoch: m.Epoch, server: m.Server.ID, frame: frame, first: now, next: now}
	u.pushes[r.id] = p
	c.pushes[p] = struct{}{}
	c.sendPushLocked(p, now)
}

// resendPlacementLocked pushes r's current placement to u alone, unless a
// push of that very placement is already pending (it is being retried).
func (c *Central) resendPlacementLocked(u *user, r *room, reason string) {
	if r.srv == nil {
		return
	}
	if p := u.pushes[r.id]; p != nil && p.epoch == r.epoch && p.server == r.srv.rec.ID {
		return
	}
	c.pushToLocked(u, r, &proto.Assign{
		Room: r.id, Epoch: r.epoch, Server: proto.ServerRef{ID: r.srv.rec.ID, Addr: r.srv.rec.Addr},
		Members: r.memberNames(), Reason: reason,
	}, c.now())
}

// assignFrame encodes m for one member, with that member's own ticket when
// Central signs tickets. Each frame is built fresh: pushes keep theirs
// immutable while AsyncWrite may hold it.
func (c *Central) assignFrame(m *proto.Assign, user string, now time.Time) ([]byte, error) {
	m.Ticket = nil
	if c.cfg.TicketKey != nil {
		t, err := ticket.Sign(c.cfg.TicketKey, ticket.Claims{Room: m.Room, User: user, Epoch: m.Epoch,
			Server: m.Server.ID, Expires: now.Add(c.cfg.TicketTTL).Unix(), Issued: now.UnixNano()})
		if err != nil {
			return nil, err
		}
		m.Ticket = t
	}
	return wire.AppendFrame(nil, m)
}

func (c *Central) sendPushLocked(p *push, now time.Time) {
	if p.u.sess == nil {
		return
	}
	p.tries++
	p.next = now.Add(c.cfg.AssignRetry)
	c.writeLocked(p.u.sess, p.frame)
}

// dropPushLocked forgets u's push for room, whatever its epoch.
func (c *Central) dropPushLocked(u *user, room string) {
	if p := u.pushes[room]; p != nil {
		delete(u.pushes, room)
		delete(c.pushes, p)
	}
}

// removePushLocked forgets p itself, and nothing that replaced it.
func (c *Central) removePushLocked(p *push) {
	if p.u.pushes[p.room] == p {
		delete(p.u.pushes, p.room)
	}
	delete(c.pushes, p)
}

// ackLocked clears u's push for the room once it follows that epoch.
func (c *Central) ackLocked(u *user, m *proto.AssignAck) {
	// Only a member's acknowledgement counts: r.held kept anyone's, and a
	// loop of registrations acknowledging known rooms grew Central's
	// memory without bound (abuse probe, 2026-12-01).
	if r := c.roomByID[m.Room]; r != nil && r.srv != nil && m.Epoch == r.epoch && r.hasMember(u) {
		r.confirm(u, m.Epoch)
	}
	if p := u.pushes[m.Room]; p != nil && m.Epoch >= p.epoch {
		c.dropPushLocked(u, m.Room)
	}
}

// tickPushesLocked resends due pushes. A push is given up only after
// AssignGiveUp of being offered to a connected member (the clock restarts
// at every connect, and stands still while the member is offline); the
// member's next Holding report brings it back if the member still holds
// something else.
func (c *Central) tickPushesLocked(now time.Time) {
	for p := range c.pushes {
		switch {
		case p.u.sess == nil:
		case now.Sub(p.first) >= c.cfg.AssignGiveUp:
			c.log.Warn("assign never acknowledged; giving up until the member reports again", "user", p.u.name, "room", p.room, "epoch", p.epoch, "tries", p.tries)
			c.removePushLocked(p)
		case !now.Before(p.next):
			c.sendPushLocked(p, now)
		}
	}
}

// maxHolding bounds the rooms of one Holding report; maxAdopted the rooms
// a member may be in for its reports to make Central adopt one more. Rooms
// past it come back with their chat servers' heartbeats; without tickets,
// it bounds what one made-up member can make Central hold (25 members made
// Central adopt 102,403 invented rooms, 150 MB, at 4,096 each).
const (
	maxHolding = 4096
	maxAdopted = 256
)

// adoptRate is how many rooms a second a member's reports may make Central
// adopt, past a burst of maxAdopted: maxAdopted a TicketTTL, the time a
// room adopted and left stays in the revocation log.
func (c *Central) adoptRate() float64 {
	return maxAdopted / max(c.cfg.TicketTTL, time.Minute).Seconds()
}

// Ticket verifications (an Ed25519 check each, about 50 µs, under
// Central's lock) are bounded across every report, Holding and heartbeat
// alike: 2,000 a second, 10% of a core, with a burst of 20,000 for the
// members and servers reporting after a restart (the rest are checked at
// their next reports). A member that reports a badly signed ticket, which
// no honest client does, has none checked for forgedPause. Before, 300
// accounts reporting forged tickets took 2.2 s of Central's CPU under its
// lock, and more accounts took more (abuse probe, 2026-12-03).
const (
	checkRate, checkBurst = 2000, 20000
	forgedPause           = time.Minute
)

// allowCheckLocked takes one ticket verification from the budget.
func (c *Central) allowCheckLocked(now time.Time) bool {
	return c.checks.allow(now, checkRate, checkBurst)
}

// maxHeldTickets bounds the tickets one Holding report may have checked
// (an Ed25519 verification each); an honest member needs them only for the
// few rooms Central lost in a restart, and its next report brings the rest.
const maxHeldTickets = 32

// epochAhead is how far past the current Unix time in milliseconds an
// epoch may claim to be. Epochs count up from 1, or from that time for a
// room Central adopted (nextEpoch), so no placement reaches past it; a
// report that does is refused, and no epoch can wrap.
const epochAhead = uint64(24 * time.Hour / time.Millisecond)

// epochPlausible reports whether epoch could be a placement's at now.
func epochPlausible(epoch uint64, now time.Time) bool {
	return epoch != 0 && epoch <= uint64(max(now.UnixMilli(), 0))+epochAhead
}

// Members' reports are rate-limited per member: Holding comes every few
// seconds and Unreachable every second per broken room, so these leave
// room for honest bursts (a reconnect, several rooms on one dead server).
const (
	holdingRate, holdingBurst         = 1, 5
	unreachableRate, unreachableBurst = 20, 50
	// A member reports its vector after a probe round that changed it
	// (every few seconds at most, faster while it settles): each report
	// is a store write, which with etcd is a put and an fsync; one member
	// in a loop made 450 a second (abuse probe, 2026-12-01).
	latencyRate, latencyBurst = 2, 10
)

// holdingLocked reconciles what u says it holds with the desired placement
// of each room: every difference gets the room's placement pushed again,
// rooms Central does not know (it restarted) are adopted from the report,
// and rooms u should hold but does not list are pushed to it.
func (c *Central) holdingLocked(cn *conn, u *user, m *proto.Holding) {
	if len(m.Rooms) > maxHolding || len(m.Left) > maxHolding {
		c.sendLocked(cn, &proto.Error{Code: proto.CodeBadRequest, Reason: fmt.Sprintf("%d rooms held and %d left in one Holding report, limit %d each", len(m.Rooms), len(m.Left), maxHolding)})
		return
	}
	// A leave reported here is one whose LeaveRoom this Central never
	// read: it died, or the connection did, with the frame unread (fuzz
	// sweep, 2026-12-03: the next Central kept the leaver listed and
	// pushed it the room). The member repeats it until Central answers,
	// and 10 minutes after, so a room Central learns later (from a
	// heartbeat, after a restart) still loses it at the next report.
	// Before the rate limit: the member takes the Pong to the Ping behind
	// this report for proof that the leaves were taken in (a lookup each;
	// the frame bounds them).
	for _, id := range m.Left {
		c.leaveLocked(u, id, "holding")
	}
	if len(m.Left) > 0 {
		cn.leaving = true // the Pong behind this report waits for the store
	}
	now := c.now()
	if !u.holdLimit.allow(now, holdingRate, holdingBurst) {
		return // a member reports every few seconds; more is noise
	}
	listed := make(map[*room]struct{}, len(m.Rooms))
	checked, adopted := 0, 0
	defer func() {
		if adopted > 1 { // the first is logged on its own
			c.log.Info("rooms adopted from a member's report", "member", u.name, "rooms", adopted)
		}
	}()
	// proves reports whether h carries a ticket Central signed for u in
	// h's room (at h's placement too, with placement), still valid: what a
	// report needs to make u a member, or to move the room, where Central
	// signs tickets. An expired ticket proves nothing: one issued before
	// its holder left the room would let it back in once a restart has
	// forgotten the leave (abuse probe, 2026-12-01). Members still on the
	// room's chat server come back with its heartbeat whatever their
	// tickets; one that is not, with a ticket older than TicketTTL, is told
	// the room is closed.
	proves := func(h *proto.Held, placement bool) bool {
		if c.cfg.TicketKey == nil {
			return !c.leftLocked(h.Room, u.name, 0)
		}
		if len(h.Ticket) == 0 || checked >= maxHeldTickets || now.Sub(u.forged) < forgedPause {
			return false
		}
		// What would make even a genuine ticket prove nothing is found
		// before the budget is spent on its signature: u's own ticket,
		// expired or issued before u left the room (or it was removed),
		// shown over and over cost a check each, and some 63 accounts
		// doing so kept the budget spent (abuse sweep 3, 2026-12-06).
		cl, err := ticket.Inspect(h.Ticket, h.Room, u.name, now)
		switch {
		case err != nil:
		case c.leftLocked(h.Room, u.name, cl.Issued), placement && (cl.Epoch != h.Epoch || cl.Server != h.Server), !c.allowCheckLocked(now):
			return false
		default:
			checked++
			_, err = ticket.Verify(c.cfg.TicketKey.Public().(ed25519.PublicKey), h.Ticket, h.Room, u.name, now)
		}
		if errors.Is(err, ticket.ErrSignature) || errors.Is(err, ticket.ErrMalformed) || errors.Is(err, ticket.ErrMismatch) {
			// A member reports each room with its own ticket: one for
			// another room or member is misuse, as a forgery is, and
			// pauses u's checks (one genuine ticket shared by many
			// accounts spent every check: abuse sweep 3, 2026-12-06).
			u.forged = now
		}
		return err == nil
	}
	seen := make(map[string]struct{}, len(m.Rooms))
	for i := range m.Rooms {
		h := &m.Rooms[i]
		if proto.CheckRoom(h.Room) != nil || !epochPlausible(h.Epoch, now) || proto.CheckServer(h.Server) != nil {
			continue
		}
		if _, dup := seen[h.Room]; dup {
			continue // a room listed twice is taken once, and its ticket checked once
		}
		seen[h.Room] = struct{}{}
		r := c.roomByID[h.Room]
		if r == nil && (len(u.rooms) >= maxAdopted || !proves(h, true) || !u.adoptions.allow(now, c.adoptRate(), maxAdopted)) {
			// No member makes Central hold rooms without bound, or adopt
			// one it cannot show it was placed in, or more than
			// maxAdopted a TicketTTL: each room adopted and left is a
			// revocation kept that long, and one member adopting and
			// leaving 256 made-up rooms a second (no ticket key) filled
			// the log in minutes, evicting real rooms' removals (review,
			// 2026-12-03). A room whose members cannot show it comes
			// back with its chat server's heartbeat.
			continue
		}
		if r == nil {
			r = &room{id: h.Room, srv: c.srvByID[h.Server], epoch: h.Epoch, created: now, lastMove: now, adopted: true, joined: true, members: []*user{u}}
			if r.srv == nil {
				r.lostSrv = h.Server
			}
			c.insertRoomLocked(r)
			r.confirm(u, h.Epoch)
			c.storeErr("put room", c.st.PutRoom(r.record()))
			if adopted++; adopted == 1 {
				c.log.Info("room adopted from a member's report", "room", r.id, "server", h.Server, "known", r.srv != nil, "epoch", r.epoch, "member", u.name)
			}
			listed[r] = struct{}{}
			continue
		}
		if !r.hasMember(u) {
			if !r.adopted || len(r.members) >= c.cfg.MaxMembers || !proves(h, false) {
				c.sendLocked(cn, &proto.RoomClosed{Room: h.Room, Reason: "you are not a member of this room"})
				continue
			}
			r.members = append(r.members, u)
			u.rooms[r] = struct{}{}
			r.mFresh = false
			c.storeErr("put room", c.st.PutRoom(r.record()))
		}
		listed[r] = struct{}{}
		if h.Epoch > r.epoch && proves(h, true) {
			// u follows a placement newer than Central's: Central lost
			// the move that made it (a restart). The newest epoch wins.
			c.adoptPlacementLocked(r, c.srvByID[h.Server], h.Server, h.Epoch, now)
		}
		if r.srv != nil && h.Epoch == r.epoch && h.Server == r.srv.rec.ID {
			r.confirm(u, h.Epoch)
			if p := u.pushes[r.id]; p != nil && p.epoch <= h.Epoch {
				c.dropPushLocked(u, r.id)
			}
			continue
		}
		c.resendPlacementLocked(u, r, "your placement differs from the room's")
	}
	for r := range u.rooms {
		if _, ok := listed[r]; !ok && u.pushes[r.id] == nil {
			c.resendPlacementLocked(u, r, "you do not hold this room")
		}
	}
}

// adoptPlacementLocked makes (s, epoch) r's placement without a move: some
// member or server already holds it. s is nil when Central does not know
// the server (yet); id names it then. Members that follow something else
// are told.
func (c *Central) adoptPlacementLocked(r *room, s *serverRec, id string, epoch uint64, now time.Time) {
	if r.srv != nil {
		r.srv.assigned--
		r.unhold()
	}
	if epoch > r.epoch {
		c.log.Info("room's newer placement adopted from a report", "room", r.id, "server", id, "epoch", epoch, "was_epoch", r.epoch, "was_server", r.srvID())
		c.revokeLocked(centralapi.Revocation{Room: r.id, Epoch: epoch}, now)
	}
	r.srv, r.epoch, r.lostSrv = s, epoch, ""
	if s == nil {
		r.lostSrv = id
	} else {
		s.assigned++
		// A member or the server holds it there.
		c.markJoinedLocked(r, now)
	}
	c.storeErr("put room", c.st.PutRoom(r.record()))
	if s == nil {
		return
	}
	for _, v := range r.members {
		if r.held[v] != epoch {
			c.resendPlacementLocked(v, r, "the room's newest placement")
		}
	}
}

// announceLocked tells every connected client that s came up, drains or
// went down, so clients measure a new server at once instead of at their
// next probe round. One frame is shared by every connection.
func (c *Central) announceLocked(s *serverRec, state string) {
	frame, err := wire.AppendFrame(nil, &proto.ServerEvent{Server: proto.ServerRef{ID: s.rec.ID, Addr: s.rec.Addr}, State: state})
	if err != nil {
		return
	}
	for cn := range c.conns {
		if cn.user != nil {
			c.writeLocked(cn, frame)
		}
	}
}

// listServersLocked sends cn the servers up, after its Welcome (version
// 9): the list the announcements after it change. Entries go in frames of
// at most listFrameBytes of ids and addresses, the last with Last set; at
// most proto.MaxListed servers, which is all a client measures, so that
// the list stays well inside the connection's MaxOutbound.
func (c *Central) listServersLocked(cn *conn) {
	m := &proto.ServerList{Servers: []proto.ListedServer{}}
	size, n := 0, 0
	for _, s := range c.servers {
		if s.gone || s.rec.Down {
			continue
		}
		if n++; n > proto.MaxListed {
			break
		}
		entry := len(s.rec.ID) + len(s.rec.Addr) + listEntryBytes
		if size+entry > listFrameBytes && len(m.Servers) > 0 {
			c.sendLocked(cn, m)
			m.Servers, size = m.Servers[:0], 0
		}
		m.Servers = append(m.Servers, proto.ListedServer{ID: s.rec.ID, Addr: s.rec.Addr, Draining: s.rec.Draining})
		size += entry
	}
	m.Last = true
	c.sendLocked(cn, m)
}

// A ServerList frame holds entries of at most listFrameBytes in all, each
// its id and address and listEntryBytes more for the keys and lengths:
// well inside wire.MaxFrame. A variable for its test, read under c.mu.
var listFrameBytes = wire.MaxFrame / 2

const listEntryBytes = 32

// reporter is one member's report that its room's server is unreachable.
type reporter struct {
	u *user
	r *room
}

// maxReporters bounds the reports kept per server while its check runs.
const maxReporters = 4096

// unreachableLocked handles a member's report that its room's server is
// gone: a member behind the room's current placement is simply told it
// again; otherwise Central checks the server itself. Reports are kept once
// per (member, room).
func (c *Central) unreachableLocked(cn *conn, u *user, m *proto.Unreachable) {
	if !u.repLimit.allow(c.now(), unreachableRate, unreachableBurst) {
		return
	}
	if err := proto.CheckRoom(m.Room); err != nil {
		c.badIDLocked(cn, err)
		return
	}
	r := c.roomByID[m.Room]
	if r == nil || !r.hasMember(u) {
		c.sendLocked(cn, &proto.Error{Code: proto.CodeNotFound, Reason: "you are not a member of this room", Ref: m.Room})
		return
	}
	if r.srv == nil || r.epoch != m.Epoch || r.srv.rec.ID != m.Server {
		if p := u.pushes[r.id]; p != nil {
			c.sendPushLocked(p, c.now())
		} else {
			c.resendPlacementLocked(u, r, "current placement")
		}
		return
	}
	s := r.srv
	if s.rec.Down {
		return // the scan moves the room as soon as a server can take it
	}
	if s.reporters == nil {
		s.reporters = map[reporter]bool{}
	}
	rep := reporter{u, r}
	if silent, ok := s.reporters[rep]; ok {
		s.reporters[rep] = silent && m.Silent // a break outweighs a silence
	} else if len(s.reporters) < maxReporters {
		s.reporters[rep] = m.Silent
	}
	if s.suspectAt.IsZero() {
		s.suspectAt = c.now()
	}
	c.probeLocked(s)
}

// recheckGap is the least time between two of Central's echo checks of
// one server that answered the first.
const recheckGap = 250 * time.Millisecond

// probeTimeout is how long Central's check of s may take: ProbeTimeout,
// or, if longer, twice Central's last echo of s (which spans three round
// trips: connect, Hello, Ping) or four times the RTT to s that its
// reporters measured, so a distant server is not declared dead for being
// far.
func (c *Central) probeTimeoutLocked(s *serverRec) time.Duration {
	return max(c.cfg.ProbeTimeout, 2*s.echoRTT, 4*c.reportedRTTLocked(s))
}

// connectTimeoutLocked bounds the TCP connect of Central's check of s: a
// connect takes one round trip, so three of the reporters' RTT, or
// Central's last whole echo (three round trips), or minConnectTimeout if
// longer, and never more than the whole check. A dark path (SYNs lost) is
// told within it.
func (c *Central) connectTimeoutLocked(s *serverRec) time.Duration {
	d := max(minConnectTimeout, s.echoRTT, 3*c.reportedRTTLocked(s))
	return min(d, c.probeTimeoutLocked(s))
}

// maxReportedRTT bounds what members' figures may add to a check's time:
// no chat server worth keeping is a second away.
const maxReportedRTT = time.Second

// reportedRTTLocked is the lowest RTT to s that its reporters measured, at
// most maxReportedRTT: any member near s shows s is near, and a member's
// figures alone stretch the check by seconds at most (abuse probe,
// 2026-12-03: one member claiming an hour kept a stopped server up for
// 12.5 s instead of 2, until its heartbeats were overdue).
func (c *Central) reportedRTTLocked(s *serverRec) time.Duration {
	var low time.Duration
	for rep := range s.reporters {
		if smp, ok := rep.u.lat[s.rec.ID]; ok && smp.Count > 0 && (low == 0 || smp.Median < low) {
			low = smp.Median
		}
	}
	return min(low, maxReportedRTT)
}

// corroboratedLocked reports whether a failed check of s is backed by
// other evidence: a heartbeat overdue, or reports from two members. A
// member's silence (its liveness ping unanswered, the connection still
// open) counts only when Central's own check could not even connect
// (connected false): a server whose port accepts connections but answers
// late is slow, as everything is on a starved machine, not gone; silences
// from every member of its rooms at once, and a heartbeat a little late,
// say nothing more. Members' reports of broken connections, when Central's
// check connected and then ran out of time, count only with the server's
// heartbeat late too (half an interval past due): a process that stopped.
func (c *Central) corroboratedLocked(s *serverRec, now time.Time, connected, timedOut bool) (bool, string) {
	var first *user
	two, slow := false, false
	for rep, silent := range s.reporters {
		switch {
		case silent && connected:
		case connected && timedOut:
			// A server that accepted Central's connection and was only
			// too slow to answer it is loaded or stopped, and a broken
			// connection is only a member's word: two members who flooded
			// its TLS handshakes had it marked down, and every room on it
			// moved, while it heartbeat on time (abuse probe,
			// 2026-12-01). Its heartbeat decides.
			slow = true
		case first == nil:
			first = rep.u
		case rep.u != first:
			two = true
		}
	}
	if s.lapsed {
		return true, "its etcd lease lapsed (no heartbeat for OfflineAfter, whoever led)"
	}
	if first == nil && !slow {
		return false, "" // only silences, from a server that accepts connections
	}
	if late := now.Sub(s.rec.LastSeen); late > c.cfg.HeartbeatInterval*3/2 {
		return true, fmt.Sprintf("no heartbeat for %v", late.Round(time.Millisecond))
	}
	if two {
		if connected {
			return true, "connections broken for two members"
		}
		return true, "reported by two members"
	}
	return false, ""
}

// probeLocked starts one echo check of s unless one is running. A failed
// check marks s down only when corroborated; otherwise the reports stay
// and the next one (members repeat theirs every second) checks again. A
// check whose timer fired late (Central itself was starved of CPU) proves
// nothing either way.
func (c *Central) probeLocked(s *serverRec) {
	if s.probing || s.rec.Down || s.gone {
		return
	}
	if since := time.Since(s.answeredAt); since < recheckGap {
		// The server answered a check a moment ago: one more, when
		// recheckGap has passed, answers the reports that came meanwhile.
		// A check for every report let members have Central dial a server
		// (or, where it runs open, any address named as one) dozens of
		// times a second, each logged (abuse sweep, 2026-12-03).
		if !s.recheck {
			s.recheck = true
			time.AfterFunc(recheckGap-since, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				s.recheck = false
				if c.ctx.Err() == nil && c.srvByID[s.rec.ID] == s && (len(s.reporters) > 0 || s.lapsed) {
					c.probeLocked(s)
				}
			})
		}
		return
	}
	s.probing = true
	addr, id := s.rec.Addr, s.rec.ID
	timeout, connTimeout := c.probeTimeoutLocked(s), c.connectTimeoutLocked(s)
	// Whether the check ran late is judged on Central's clock (the wall
	// clock but in tests, which starve Central by moving theirs); the
	// echo's own time is the network's, on the wall clock.
	start := c.now()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		echoStart := time.Now()
		connected, err := echo(ctx, connTimeout, rtt.Target{ID: id, Addr: addr}, c.cfg.ChatTLS)
		echoTook := time.Since(echoStart)
		took := c.now().Sub(start)
		cancel()
		if !connected {
			timeout = connTimeout // what the late check below compares with
		}
		c.mu.Lock()
		s.probing = false
		s.checks++
		now := c.now()
		down, why := false, ""
		switch {
		case c.ctx.Err() != nil || c.srvByID[id] != s:
		case err == nil:
			s.echoRTT = echoTook
			s.answeredAt = time.Now()
			s.suspectAt = time.Time{}
			s.lapsed = false // alive: its heartbeats (or OfflineAfter) decide
			for rep, silent := range s.reporters {
				// A member whose connection broke rejoins (the server may
				// have restarted and lost the room); one whose connection
				// is only silent keeps it: the server is alive, and its
				// next frame makes the session whole again, where a rejoin
				// of every member of a slow server would only add load.
				if !silent && rep.r.srv == s && rep.r.hasMember(rep.u) && c.roomByID[rep.r.id] == rep.r && !c.rehomeLocked(rep.r, s, now) {
					c.resendPlacementLocked(rep.u, rep.r, "current placement")
				}
			}
			clear(s.reporters)
		case took > timeout+max(timeout/4, starvedSlack):
			c.log.Info("echo check of a server reported unreachable ran late; Central was starved, the check proves nothing", "server", id, "took", took.Round(time.Millisecond), "timeout", timeout, "err", err)
		default:
			var ok bool
			// rtt.Probe names a socket deadline as ctx's end too.
			timedOut := errors.Is(err, context.DeadlineExceeded)
			if ok, why = c.corroboratedLocked(s, now, connected, timedOut); ok {
				down = true
				c.markDownLocked(s, "failed Central's echo check and "+why,
					"check_took", echoTook.Round(time.Millisecond), "check_timeout", timeout, "connected", connected, "check_err", err)
			} else {
				c.log.Info("server reported unreachable failed one echo check; waiting for corroboration", "server", id, "connected", connected, "err", err)
			}
		}
		c.mu.Unlock()
		if down {
			c.kickScan()
		} else if err == nil {
			c.log.Info("server reported unreachable answers Central's echo", "server", id)
		}
	}()
}

// rehomeLocked moves r, reported unreachable on s though s answers, to the
// best server that can take it, when s is full and has not shown a member
// in r for holdFor (see serverRec.full): its members came back to a
// room s no longer holds a place for, and s refuses them (server_full).
// So does a room no member has got into yet on a server that refuses
// every new room, a memory budget of its own reached (serverRec.budget):
// placed there before Central heard (abuse sweep 3, 2026-12-06: such a
// room was sent back to its server for as long as its members asked). A
// server full by count is not enough for that: it may be full only by
// this room's own placement. Resending the placement would only have them
// refused again.
func (c *Central) rehomeLocked(r *room, s *serverRec, now time.Time) bool {
	if r.counted || !s.full() || !r.joined && s.budget == "" {
		return false
	}
	reason := reasonRehome
	if !r.joined {
		reason = reasonRefused
	}
	c.syncSelLocked()
	c.refreshDirtyLocked()
	c.refreshMatrix(r)
	ch, err := selection.ChooseMatrix(c.sel, r.m, c.rnd)
	if err != nil || ch.Index == r.cur() {
		return false
	}
	mv := move{r: r, to: ch.Index, epoch: r.epoch, reason: reason, rtt: ch.Max}
	if sc, ok := selection.ScoreMatrix(c.sel, r.m, r.cur()); ok {
		mv.prevRTT = sc.Max
	}
	c.applyMoveLocked(mv, now)
	return r.srv != s
}

// reasonRehome and reasonRefused are the reasons of rehomeLocked's moves
// (moves_total's server_full).
const (
	reasonRehome  = "its server is full and held no place for the room, empty there for the session grace"
	reasonRefused = "its server takes no new room, a memory budget there reached"
)

// minConnectTimeout is the shortest bound on the connect of an echo check.
const minConnectTimeout = 150 * time.Millisecond

// starvedSlack is how late past its timeout an echo check may end before
// it counts as run on a starved Central (timers firing late).
const starvedSlack = 50 * time.Millisecond

// echo checks that chat server t answers Hello, as itself, and one Ping.
// connected reports whether the TCP connection itself was made: the host
// and the path to it are up, whatever the server process then did.
func echo(ctx context.Context, connTimeout time.Duration, t rtt.Target, tc *tls.Config) (connected bool, err error) {
	base := &connectDialer{timeout: connTimeout}
	var d proto.Dialer = base
	if tc != nil {
		d = &tlsconfig.Dialer{Base: base, Config: tc}
	}
	_, err = rtt.Probe(ctx, d, t, 1, 0)
	// A chat server that refuses the check because it is full is up: a
	// refusal is an answer. Counting it as a failure let members who
	// filled a server with idle connections have it marked down and every
	// room on it moved (abuse probe, 2026-12-01). So is one that refuses
	// the version of our Hello: a chat server of another release, met in
	// a rolling upgrade, that serves its own clients. Any other Error is
	// no such answer: a port that says it is the wrong one (Central's own,
	// a TLS port spoken to in plaintext), or a server shutting down,
	// passed the address check and the liveness check alike (abuse sweep
	// 2, 2026-12-05).
	var refused *proto.Error
	if errors.As(err, &refused) && (refused.Code == proto.CodeServerFull || refused.Code == proto.CodeVersion) {
		err = nil
	}
	return base.connected.Load(), err
}
