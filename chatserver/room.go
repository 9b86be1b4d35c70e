package chatserver

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/bytebufferpool"
	"golang.org/x/time/rate"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// room is one conversation hosted here.
type room struct {
	id  string
	srv *Server

	mu      sync.Mutex // taken after Server.mu when both are held
	closed  bool       // removed from the server's map; a joiner must look again
	epoch   uint64
	proof   []byte // a ticket for epoch, from a joiner: what the heartbeat shows Central
	seq     uint64 // last room sequence number given to a message
	ev      uint64 // last fan-out item number (messages and presence)
	members map[string]*member
	shards  []*shard      // one per event loop that has had members here
	hist    []*frame      // ring of the last History message frames
	histPos int           // next slot to overwrite once hist is full
	acks    []heldAck     // Acks withheld while a member is behind (flow.go)
	nbehind atomic.Int32  // members behind; read without mu
	replays *rate.Limiter // bytes of history replayed to joiners (replayAllowed); nil until the first
}

// join makes m a member of j.Room. Event loop only.
func (s *Server) join(m *member, j *proto.Join) error {
	var r *room
	for {
		s.mu.Lock()
		r = s.rooms[j.Room]
		if r == nil {
			if s.closing.Load() {
				s.mu.Unlock()
				return proto.Fatalf(proto.CodeShutdown, "server is shutting down")
			}
			if len(s.rooms) >= s.cfg.MaxRooms {
				s.mu.Unlock()
				return proto.Fatalf(proto.CodeServerFull, "server hosts its maximum of %d rooms", s.cfg.MaxRooms)
			}
			if err := s.overBudget(true); err != nil {
				s.mu.Unlock()
				return err
			}
			r = &room{id: j.Room, members: make(map[string]*member), srv: s}
			s.rooms[j.Room] = r
		}
		s.mu.Unlock()
		r.mu.Lock()
		if !r.closed {
			break
		}
		r.mu.Unlock()
	}

	if s.cfg.TicketKey != nil && j.Epoch < r.epoch {
		r.mu.Unlock()
		return proto.Fatalf(proto.CodeUnauthorized, "ticket is for epoch %d; room %q is at epoch %d here", j.Epoch, j.Room, r.epoch)
	}
	old := r.members[j.User]
	if old == nil && len(r.members) >= s.cfg.MaxMembers {
		r.mu.Unlock()
		return proto.Fatalf(proto.CodeRoomFull, "room %q has its maximum of %d members", j.Room, s.cfg.MaxMembers)
	}
	if err := s.overBudget(false); old == nil && err != nil {
		r.mu.Unlock()
		return err
	}
	if old != nil {
		// The same user again: a reconnect whose old connection we have not
		// seen die yet. The newer connection wins.
		s.detach(r, old, m.loop)
		r.ev++
		old.loop.push(item{target: old, f: s.sharedError(proto.CodeConflict, "replaced by a newer connection"), ev: r.ev, bye: true}, m.loop)
	}
	if j.Epoch > r.epoch || (j.Epoch == r.epoch && r.proof == nil) {
		// The first ticket at a new epoch is the room's proof, for Central,
		// that it placed the room here (never modified: joiners replace it).
		r.epoch, r.proof = j.Epoch, nil
		if len(j.Ticket) > 0 {
			r.proof = bytes.Clone(j.Ticket)
		}
	}
	m.room, m.user, m.lastSent, m.inc = r, j.User, j.LastSent, j.Inc
	m.noHold = s.slowCuts.recent(slowKey{r.id, j.User}, time.Now())
	sh := r.shardFor(m.loop)
	sh.count++
	m.shard = sh
	r.members[j.User] = m

	r.presence(&proto.Presence{User: j.User, Here: true, LastSent: j.LastSent, Inc: j.Inc}, m, m.loop)
	m.joinEv = r.ev

	// A frame holds at most joinedMembers members; the rest of a big room
	// follows in Presences frames (Presence frames in version 2), so the
	// joiner always gets its answer.
	all := make([]proto.Member, 0, len(r.members))
	all = append(all, proto.Member{User: m.user, LastSent: m.lastSent, Inc: m.inc})
	for _, x := range r.members {
		if x != m {
			all = append(all, proto.Member{User: x.user, LastSent: x.lastSent, Inc: x.inc})
		}
	}
	joined := proto.Joined{Room: r.id, Epoch: r.epoch, Seq: r.seq, Members: all[:min(len(all), joinedMembers)]}
	rest := all[len(joined.Members):]
	var replay []*frame
	if (j.Since > 0 || j.Move) && j.Since < r.seq {
		replay, joined.Oldest = r.historyAfter(j.Since, s.cfg.MaxOutbound/replayShare)
		if !r.replayAllowed(replay, s.cfg.MaxOutbound) {
			for _, f := range replay {
				f.release()
			}
			replay, joined.Oldest = nil, r.seq+1
		}
		joined.Truncated = joined.Oldest > j.Since+1
	}
	r.mu.Unlock()

	// Writes happen outside the room lock: a failing write closes the
	// connection at once, and closing takes the lock. Fan-out items for m
	// cannot run in between, since they run on this same loop.
	m.idx = len(sh.members)
	sh.members = append(sh.members, m)
	sh.resized()
	s.reply(m, &joined)
	for len(rest) > 0 {
		n := min(len(rest), presencesMembers)
		if m.v2 {
			n = 1
		}
		batch := proto.Presences{Changes: make([]proto.Presence, n)}
		for i, x := range rest[:n] {
			batch.Changes[i] = proto.Presence{User: x.User, Here: true, LastSent: x.LastSent, Inc: x.Inc}
		}
		if m.v2 {
			s.reply(m, &batch.Changes[0])
		} else {
			s.reply(m, &batch)
		}
		rest = rest[n:]
	}
	for _, f := range replay {
		m.write(f.b, s.cfg.MaxOutbound)
		f.release()
	}
	return nil
}

// deliverOverhead bounds a Deliver frame's bytes beyond its sender's name
// and text: the header, the keys and the numbers.
const deliverOverhead = 80

// joinedMembers is how many members a Joined frame lists: with names of
// up to proto.MaxUser bytes that stays well under wire.MaxFrame. A variable
// so tests can exercise the split with small rooms.
var joinedMembers = 900

// presencesMembers is how many joins a Presences frame listing the rest of
// a big room holds (each entry a little larger than a Joined member's).
const presencesMembers = 800

// replayShare: a joiner is replayed at most MaxOutbound/replayShare bytes
// of history, so the replay alone never comes near the cut-off, and
// leaves room for the senders' answers to its Resends and the room's
// traffic. With the defaults (1 MiB of 4 MiB, History 256) a history of
// messages averaging up to 4 KiB fits whole.
const replayShare = 4

// replayAllowed reports whether the room's replay budget covers replay,
// and takes it: MaxOutbound bytes a second, in bursts of four times that
// (16 whole replays at the defaults, a room of members rejoining at
// once). A joiner past it is replayed nothing and asks the senders
// (Truncated), as for history the server no longer has. Before, one
// member that rejoined in a loop, announcing it had seen nothing, was sent
// the whole history each time: 6.9 GB in 15 s from 100-byte Joins (abuse
// probe, 2026-12-01). Caller holds r.mu.
func (r *room) replayAllowed(replay []*frame, maxOutbound int) bool {
	n := 0
	for _, f := range replay {
		n += len(f.b)
	}
	if n == 0 {
		return true
	}
	if r.replays == nil {
		r.replays = rate.NewLimiter(rate.Limit(maxOutbound), 4*maxOutbound)
	}
	return r.replays.AllowN(time.Now(), n)
}

// historyAfter returns the newest kept frames with sequence numbers above
// since that fit in budget bytes, in order and retained for the caller,
// and the oldest sequence number they reach back to (the oldest kept when
// there are none after since). Caller holds r.mu.
func (r *room) historyAfter(since uint64, budget int) ([]*frame, uint64) {
	n := len(r.hist)
	if n == 0 {
		return nil, r.seq + 1
	}
	start := 0
	if n == cap(r.hist) {
		start = r.histPos
	}
	oldest := r.hist[start].seq
	k, size := n, 0 // the replay is hist[start+k...], newest last
	for k > 0 {
		f := r.hist[(start+k-1)%n]
		if f.seq <= since || size+len(f.b) > budget {
			break
		}
		size += len(f.b)
		k--
	}
	if k > 0 && r.hist[(start+k-1)%n].seq > since {
		oldest = r.hist[(start+k)%n].seq // cut by the budget
		if k == n {
			oldest = r.seq + 1
		}
	}
	out := make([]*frame, 0, n-k)
	for i := k; i < n; i++ {
		f := r.hist[(start+i)%n]
		f.retain()
		out = append(out, f)
	}
	return out, oldest
}

// remember keeps f in r's history ring, unless the server keeps none. While the server's history
// bytes are over HistoryBudget a ring stops growing: it keeps the length
// it has, the new frame replacing its oldest. Caller holds r.mu.
func (r *room) remember(f *frame, s *Server) {
	if s.cfg.History == 0 {
		return
	}
	f.retain()
	if r.hist == nil {
		r.hist = make([]*frame, 0, s.cfg.History)
	}
	if len(r.hist) < cap(r.hist) && len(r.hist) > 0 && s.histBytes.Load()+int64(f.held()) > s.cfg.HistoryBudget {
		r.hist = r.hist[:len(r.hist):len(r.hist)]
	}
	if len(r.hist) < cap(r.hist) {
		s.countHistory(1, f.held())
		r.hist = append(r.hist, f)
		return
	}
	s.countHistory(0, f.held()-r.hist[r.histPos].held())
	r.hist[r.histPos].release()
	r.hist[r.histPos] = f
	r.histPos = (r.histPos + 1) % len(r.hist)
}

// detach removes m from r's bookkeeping (not from its shard's member list,
// which only m's loop may touch) and tells the others it left. Caller holds
// r.mu.
func (s *Server) detach(r *room, m *member, from *loop) {
	if r.members[m.user] != m {
		return
	}
	delete(r.members, m.user)
	// presence discounts the skipped member from its shard's count itself,
	// so the count drops only afterwards.
	r.presence(&proto.Presence{User: m.user}, m, from)
	m.shard.count--
}

// leave takes m out of its room and removes the room once empty. Event loop
// only.
func (s *Server) leave(m *member) {
	r := m.room
	if m.behind != nil {
		// It leaves while it holds the room's Acks: remembered as one cut
		// off as slow (slowCuts), or it could leave before SlowTimeout,
		// join again with the same ticket and hold the room anew each
		// time (verification of abuse sweep 6: bob got nothing for 130
		// of 150 s from a member rejoining every 50 s).
		s.slowCuts.remember(slowKey{r.id, m.user}, time.Now())
	}
	r.mu.Lock()
	s.detach(r, m, m.loop)
	if sh := m.shard; m.idx >= 0 {
		last := len(sh.members) - 1
		moved := sh.members[last]
		sh.members[m.idx] = moved
		moved.idx = m.idx
		sh.members[last] = nil
		sh.members = sh.members[:last]
		sh.resized()
		m.idx = -1
	}
	empty := len(r.members) == 0
	r.mu.Unlock()
	m.room = nil
	if !empty {
		return
	}
	s.mu.Lock()
	r.mu.Lock()
	if len(r.members) == 0 && !r.closed {
		r.closed = true
		delete(s.rooms, r.id)
		for _, f := range r.hist {
			s.countHistory(-1, -f.held())
			f.release()
		}
		r.hist = nil
	}
	r.mu.Unlock()
	s.mu.Unlock()
}

// broadcast gives msg the next room sequence number, queues one encoding of
// it for every other member and acknowledges it to the sender. Event loop
// only.
func (s *Server) broadcast(m *member, num uint64, at int64, text []byte) {
	r := m.room
	f := newFrame()
	r.mu.Lock()
	r.seq++
	f.seq = r.seq
	// One allocation at most, not one per doubling, for a buffer the pool
	// has just made (after a GC empties it).
	f.b = slices.Grow(f.b[:0], deliverOverhead+len(m.user)+len(text))
	f.b = proto.AppendDeliver(f.b, r.seq, m.user, num, at, text, m.inc)
	if num > m.lastSent {
		m.lastSent = num
	}
	r.fanout(f, m, m.loop)
	r.remember(f, s)
	seq, size := r.seq, len(f.b)
	ack := r.holdAck(m, num, seq, size)
	r.mu.Unlock()
	f.release()

	if ack {
		m.loop.ack(m, num, seq, size)
	}
}

// forward delivers msg to the member named to, on that member's loop.
// Event loop only.
func (s *Server) forward(m *member, to string, msg wire.Message) {
	r := m.room
	r.mu.Lock()
	size := r.forward(m, to, msg)
	r.mu.Unlock()
	if size == 0 {
		s.notFound(m, r, to)
	}
}

// resend hands c, a resend of m's message c.Num, to the member c.To alone
// and acknowledges it with room sequence 0, in order with m's other Acks
// and held with them while the room has a member behind: a sender paces
// its resend answers by these Acks through its SendWindow, as it does its
// live messages, so a long answer cannot overrun the asker's MaxOutbound.
// A member of a version before 4 gets no such Ack, but its resends are
// held all the same (queueAck drops them when released): counted in its
// withheld bytes, they pause a sender that floods them (overWindow), as
// its live messages do, instead of cutting off the member it floods.
// Event loop only.
func (s *Server) resend(m *member, c *proto.Chat) {
	r := m.room
	r.mu.Lock()
	size := r.forward(m, c.To, &proto.Deliver{From: m.user, Num: c.Num, At: c.At, Text: c.Text, Inc: m.inc})
	ack := r.holdAck(m, c.Num, 0, size) && m.v4
	r.mu.Unlock()
	if size == 0 {
		s.notFound(m, r, c.To)
	}
	if ack {
		m.loop.ack(m, c.Num, 0, size)
	}
}

// forward queues msg for the member of r named to on its loop, and
// returns the size of its frame, 0 if there is no such member. Caller
// holds r.mu; m is the sender.
func (r *room) forward(m *member, to string, msg wire.Message) int {
	target := r.members[to]
	if target == nil {
		return 0
	}
	if _, ask := msg.(*proto.Resend); ask && target.asked.Load() < maxAsked {
		target.asked.Add(1) // one Missed it may answer with (onMissed)
	}
	f := newFrame()
	f.b, _ = wire.AppendFrame(f.b, msg)
	target.shard.closePres(m.loop)
	r.ev++
	size := len(f.b)
	target.shard.enqueue(size)
	target.loop.push(item{target: target, sh: target.shard, size: size, f: f, ev: r.ev}, m.loop)
	return size
}

// notFound tells m that the member to it addressed is not in room r.
// Not fatal: the member may just have left. Event loop only.
func (s *Server) notFound(m *member, r *room, to string) {
	bb := bytebufferpool.Get()
	// The name is the peer's own and may be anything up to a frame long:
	// echoed whole it made the Error too big to encode, and none was sent
	// (abuse probe, 2026-12-01). A name no user can have is cut.
	ref := to
	if proto.CheckUser(to) != nil {
		ref = ""
	}
	bb.B, _ = wire.AppendFrame(bb.B, &proto.Error{Code: proto.CodeNotFound, Reason: fmt.Sprintf("%.40q is not in room %q", to, r.id), Ref: ref})
	m.write(bb.B, s.cfg.MaxOutbound)
	bytebufferpool.Put(bb)
}

// sharedError encodes a fatal error frame for the fan-out queue.
func (s *Server) sharedError(code proto.Code, reason string) *frame {
	f := newFrame()
	f.b = append(f.b, errorFrame(code, reason)...)
	return f
}

// goodbye queues a shutdown error frame for every member and returns a
// function reporting whether all of them have been written.
func (s *Server) goodbye() func() bool {
	s.mu.Lock()
	rooms := make([]*room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	for _, r := range rooms {
		r.mu.Lock()
		f := s.sharedError(proto.CodeShutdown, "server is shutting down")
		r.ev++
		for _, sh := range r.shards {
			sh.closePres(nil)
			if sh.count > 0 {
				f.retain()
				sh.loop.push(item{sh: sh, f: f, ev: r.ev, bye: true}, nil)
			}
		}
		f.release()
		r.mu.Unlock()
	}
	return func() bool {
		s.loopsMu.Lock()
		defer s.loopsMu.Unlock()
		for _, l := range s.loops {
			if !l.idle() {
				return false
			}
		}
		return true
	}
}
