package chatserver

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// room is one conversation hosted here.
type room struct {
	id string

	mu      sync.Mutex
	closed  bool // removed from the server's map; a joiner must look again
	epoch   uint64
	seq     uint64 // last room sequence number given to a message
	ev      uint64 // last fan-out item number (messages and presence)
	members map[string]*member
	shards  []*shard // one per event loop that has had members here
	hist    []*frame // ring of the last History message frames
	histPos int      // next slot to overwrite once hist is full
}

// shard is the part of a room whose members live on one event loop. count
// is guarded by the room's mutex; members is touched only on the loop.
type shard struct {
	loop    *loop
	count   int
	members []*member
}

// frame is an encoded frame shared by every recipient, returned to the pool
// when the last holder releases it.
type frame struct {
	bb   *bytebufferpool.ByteBuffer
	seq  uint64
	refs atomic.Int32
}

var frames = sync.Pool{New: func() any { return new(frame) }}

func newFrame() *frame {
	f := frames.Get().(*frame)
	f.bb = bytebufferpool.Get()
	f.refs.Store(1)
	return f
}

func (f *frame) retain() { f.refs.Add(1) }

func (f *frame) release() {
	if f.refs.Add(-1) == 0 {
		bytebufferpool.Put(f.bb)
		f.bb, f.seq = nil, 0
		frames.Put(f)
	}
}

// item is one unit of fan-out work queued on a loop: write f to every
// member of sh except skip (the sender), or only to target when it is set.
// ev orders the item against joins: members that joined at or after ev
// already have what it carries.
type item struct {
	sh     *shard
	f      *frame
	skip   *member
	target *member
	ev     uint64
	bye    bool // after writing f, close the recipients
}

// loop is our fan-out queue for one gnet event loop. gnet runs the loop
// (as a gnet.Runnable) whenever the queue goes from empty to non-empty.
type loop struct {
	el  gnet.EventLoop
	srv *Server

	mu        sync.Mutex
	queue     []item
	spare     []item
	scheduled bool

	batch    []byte       // frames of a run of broadcasts, concatenated; loop only
	plain    plainIn      // a TLS member's decrypted input while it is served; loop only
	plainBuf []byte       // plain's buffer, kept between members; loop only
	doomed   []*member    // cut off, waiting for their error frame to drain; loop only
	ndoomed  atomic.Int32 // len(doomed), for the reaper goroutine
	reaper   reaper
}

func (l *loop) doom(m *member) {
	l.doomed = append(l.doomed, m)
	l.ndoomed.Store(int32(len(l.doomed)))
}

// reaper closes doomed members whose backlog drained or whose grace ran
// out. It runs on the loop, scheduled by Server.reapLoop.
type reaper struct{ l *loop }

func (r *reaper) Run(context.Context) error {
	l := r.l
	now := time.Now()
	keep := l.doomed[:0]
	for _, m := range l.doomed {
		switch {
		case m.gone:
		case m.c.OutboundBuffered() == 0 || now.After(m.doomedAt):
			_ = m.c.Close()
		default:
			keep = append(keep, m)
		}
	}
	clear(l.doomed[len(keep):])
	l.doomed = keep
	l.ndoomed.Store(int32(len(keep)))
	return nil
}

func (l *loop) push(it item) {
	l.mu.Lock()
	l.queue = append(l.queue, it)
	wake := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if wake {
		if err := l.el.Execute(context.Background(), l); err != nil {
			// The engine is stopping: nothing will run the queue again.
			l.mu.Lock()
			q := l.queue
			l.queue = nil
			l.mu.Unlock()
			for _, it := range q {
				it.f.release()
			}
		}
	}
}

// idle reports whether nothing is queued. Safe for concurrent use.
func (l *loop) idle() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue) == 0 && !l.scheduled
}

// Run drains the queue on the event loop; it implements gnet.Runnable.
func (l *loop) Run(context.Context) error {
	l.mu.Lock()
	q := l.queue
	l.queue = l.spare[:0]
	l.scheduled = false
	l.mu.Unlock()

	for i := 0; i < len(q); {
		it := &q[i]
		// Consecutive broadcasts to the same shard go out as one write per
		// member: under load a drained queue holds many messages of a busy
		// room, and a system call per member per message is the cost that
		// dominates fan-out.
		n, size := 1, len(it.f.bb.B)
		if it.target == nil && !it.bye {
			for i+n < len(q) && q[i+n].sh == it.sh && q[i+n].target == nil && !q[i+n].bye &&
				size+len(q[i+n].f.bb.B) <= maxBatch {
				size += len(q[i+n].f.bb.B)
				n++
			}
		}
		l.deliver(q[i : i+n])
		for k := i; k < i+n; k++ {
			q[k].f.release()
			q[k] = item{}
		}
		i += n
	}
	l.mu.Lock()
	l.spare = q[:0]
	l.mu.Unlock()
	return nil
}

// maxBatch bounds the bytes written to a member in one call, so the
// slow-consumer check between calls stays close to MaxOutbound.
const maxBatch = 64 << 10

// deliver writes a run of items: one targeted item, or broadcasts to one
// shard. Event loop only.
func (l *loop) deliver(run []item) {
	max := l.srv.cfg.MaxOutbound
	first := &run[0]
	if m := first.target; m != nil {
		if first.ev > m.joinEv {
			m.write(first.f.bb.B, max)
			if first.bye {
				m.dead = true
				_ = m.c.Close()
			}
		}
		return
	}
	batch := first.f.bb.B
	if len(run) > 1 {
		l.batch = l.batch[:0]
		for k := range run {
			l.batch = append(l.batch, run[k].f.bb.B...)
		}
		batch = l.batch
	}
	// A write that fails closes its connection on the spot, and OnClose
	// swaps the last member into the closed one's slot: index the slice
	// afresh and revisit a slot that changed.
	members := &first.sh.members
	for i := 0; i < len(*members); i++ {
		m := (*members)[i]
		if m.joinEv < first.ev && !sentOne(run, m) {
			m.write(batch, max)
		} else {
			// The member sent one of these messages, or joined in the
			// middle of the run: pick its frames one by one.
			for k := range run {
				if run[k].skip != m && run[k].ev > m.joinEv {
					m.write(run[k].f.bb.B, max)
				}
			}
		}
		if first.bye {
			m.dead = true
			_ = m.c.Close()
		}
		if i < len(*members) && (*members)[i] != m {
			i--
		}
	}
}

// sentOne reports whether m sent one of the run's messages.
func sentOne(run []item, m *member) bool {
	for k := range run {
		if run[k].skip == m {
			return true
		}
	}
	return false
}

// shardFor returns r's shard for loop l, adding one if needed. Caller holds
// r.mu.
func (r *room) shardFor(l *loop) *shard {
	for _, sh := range r.shards {
		if sh.loop == l {
			return sh
		}
	}
	sh := &shard{loop: l}
	r.shards = append(r.shards, sh)
	return sh
}

// fanout queues f for every member of r but skip. Caller holds r.mu, so
// items reach each loop in the room's order. The caller keeps its own
// reference to f.
func (r *room) fanout(f *frame, skip *member) {
	r.ev++
	for _, sh := range r.shards {
		n := sh.count
		if skip != nil && skip.shard == sh {
			n--
		}
		if n <= 0 {
			continue
		}
		f.retain()
		sh.loop.push(item{sh: sh, f: f, skip: skip, ev: r.ev})
	}
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
				return fatal(proto.CodeShutdown, "server is shutting down")
			}
			if len(s.rooms) >= s.cfg.MaxRooms {
				s.mu.Unlock()
				return fatal(proto.CodeServerFull, "server hosts its maximum of %d rooms", s.cfg.MaxRooms)
			}
			r = &room{id: j.Room, members: make(map[string]*member)}
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
		return fatal(proto.CodeUnauthorized, "ticket is for epoch %d; room %q is at epoch %d here", j.Epoch, j.Room, r.epoch)
	}
	old := r.members[j.User]
	if old == nil && len(r.members) >= s.cfg.MaxMembers {
		r.mu.Unlock()
		return fatal(proto.CodeRoomFull, "room %q has its maximum of %d members", j.Room, s.cfg.MaxMembers)
	}
	if old != nil {
		// The same user again: a reconnect whose old connection we have not
		// seen die yet. The newer connection wins.
		s.detach(r, old)
		r.ev++
		old.loop.push(item{target: old, f: s.sharedError(proto.CodeConflict, "replaced by a newer connection"), ev: r.ev, bye: true})
	}
	if j.Epoch > r.epoch {
		r.epoch = j.Epoch
	}
	m.room, m.user, m.lastSent = r, j.User, j.LastSent
	sh := r.shardFor(m.loop)
	sh.count++
	m.shard = sh
	r.members[j.User] = m

	pres := newFrame()
	pres.bb.B, _ = wire.AppendFrame(pres.bb.B, &proto.Presence{User: j.User, Here: true, LastSent: j.LastSent})
	r.fanout(pres, m)
	pres.release()
	m.joinEv = r.ev

	// A frame holds at most joinedMembers members; the rest of a big room
	// follows as Presence frames, so the joiner always gets its answer.
	all := make([]proto.Member, 0, len(r.members))
	all = append(all, proto.Member{User: m.user, LastSent: m.lastSent})
	for _, x := range r.members {
		if x != m {
			all = append(all, proto.Member{User: x.user, LastSent: x.lastSent})
		}
	}
	joined := proto.Joined{Room: r.id, Epoch: r.epoch, Seq: r.seq, Members: all[:min(len(all), joinedMembers)]}
	rest := all[len(joined.Members):]
	var replay []*frame
	if j.Since > 0 && j.Since < r.seq {
		replay, joined.Oldest = r.historyAfter(j.Since)
		joined.Truncated = joined.Oldest > j.Since+1
	}
	r.mu.Unlock()

	// Writes happen outside the room lock: a failing write closes the
	// connection at once, and closing takes the lock. Fan-out items for m
	// cannot run in between, since they run on this same loop.
	m.idx = len(sh.members)
	sh.members = append(sh.members, m)
	s.reply(m, &joined)
	for i := range rest {
		s.reply(m, &proto.Presence{User: rest[i].User, Here: true, LastSent: rest[i].LastSent})
	}
	for _, f := range replay {
		m.write(f.bb.B, s.cfg.MaxOutbound)
		f.release()
	}
	return nil
}

// joinedMembers is how many members a Joined frame lists: with names of
// up to proto.MaxUser bytes that stays well under wire.MaxFrame. A variable
// so tests can exercise the split with small rooms.
var joinedMembers = 1000

// historyAfter returns the kept frames with sequence numbers above since, in
// order and retained for the caller, and the oldest sequence number kept.
// Caller holds r.mu.
func (r *room) historyAfter(since uint64) ([]*frame, uint64) {
	n := len(r.hist)
	if n == 0 {
		return nil, r.seq + 1
	}
	start := 0
	if n == cap(r.hist) {
		start = r.histPos
	}
	oldest := r.hist[start].seq
	var out []*frame
	for i := 0; i < n; i++ {
		f := r.hist[(start+i)%n]
		if f.seq > since {
			f.retain()
			out = append(out, f)
		}
	}
	return out, oldest
}

// remember keeps f in r's history ring. Caller holds r.mu.
func (r *room) remember(f *frame, limit int) {
	f.retain()
	if r.hist == nil {
		r.hist = make([]*frame, 0, limit)
	}
	if len(r.hist) < cap(r.hist) {
		r.hist = append(r.hist, f)
		return
	}
	r.hist[r.histPos].release()
	r.hist[r.histPos] = f
	r.histPos = (r.histPos + 1) % len(r.hist)
}

// detach removes m from r's bookkeeping (not from its shard's member list,
// which only m's loop may touch) and tells the others it left. Caller holds
// r.mu.
func (s *Server) detach(r *room, m *member) {
	if r.members[m.user] != m {
		return
	}
	delete(r.members, m.user)
	pres := newFrame()
	pres.bb.B, _ = wire.AppendFrame(pres.bb.B, &proto.Presence{User: m.user})
	// fanout discounts the skipped member from its shard's count itself,
	// so the count drops only afterwards.
	r.fanout(pres, m)
	pres.release()
	m.shard.count--
}

// leave takes m out of its room and removes the room once empty. Event loop
// only.
func (s *Server) leave(m *member) {
	r := m.room
	r.mu.Lock()
	s.detach(r, m)
	if sh := m.shard; m.idx >= 0 {
		last := len(sh.members) - 1
		moved := sh.members[last]
		sh.members[m.idx] = moved
		moved.idx = m.idx
		sh.members[last] = nil
		sh.members = sh.members[:last]
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
func (s *Server) broadcast(m *member, msg *proto.Chat) {
	r := m.room
	f := newFrame()
	r.mu.Lock()
	r.seq++
	f.seq = r.seq
	d := proto.Deliver{Seq: r.seq, From: m.user, Num: msg.Num, At: msg.At, Text: msg.Text}
	var err error
	f.bb.B, err = wire.AppendFrame(f.bb.B, &d)
	if err != nil {
		r.seq--
		r.mu.Unlock()
		f.release()
		m.kill(proto.CodeBadBody, fmt.Sprintf("message cannot be relayed: %v", err))
		return
	}
	if msg.Num > m.lastSent {
		m.lastSent = msg.Num
	}
	r.fanout(f, m)
	r.remember(f, s.cfg.History)
	seq := r.seq
	r.mu.Unlock()
	f.release()

	s.reply(m, &proto.Ack{Num: msg.Num, Seq: seq})
}

// forward delivers msg to the member named to, on that member's loop.
// Event loop only.
func (s *Server) forward(m *member, to string, msg wire.Message) {
	r := m.room
	r.mu.Lock()
	target := r.members[to]
	if target == nil {
		r.mu.Unlock()
		// Not fatal: the member may just have left.
		bb := bytebufferpool.Get()
		bb.B, _ = wire.AppendFrame(bb.B, &proto.Error{Code: proto.CodeNotFound, Reason: fmt.Sprintf("%q is not in room %q", to, r.id), Ref: to})
		m.write(bb.B, s.cfg.MaxOutbound)
		bytebufferpool.Put(bb)
		return
	}
	f := newFrame()
	f.bb.B, _ = wire.AppendFrame(f.bb.B, msg)
	r.ev++
	target.loop.push(item{target: target, f: f, ev: r.ev})
	r.mu.Unlock()
}

// sharedError encodes a fatal error frame for the fan-out queue.
func (s *Server) sharedError(code proto.Code, reason string) *frame {
	f := newFrame()
	f.bb.B = append(f.bb.B, errorFrame(code, reason)...)
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
			if sh.count > 0 {
				f.retain()
				sh.loop.push(item{sh: sh, f: f, ev: r.ev, bye: true})
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
