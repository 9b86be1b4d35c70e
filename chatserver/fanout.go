package chatserver

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/proto"
	"nearchat/pkg/unsent"
)

// shard is the part of a room whose members live on one event loop. count,
// pres and presAt are guarded by the room's mutex; members is touched only
// on the loop.
type shard struct {
	loop    *loop
	room    *room
	count   int
	members []*member

	// pres collects the room's joins and leaves for this shard's members
	// until its loop delivers them, all in one Presences frame per member
	// (presence.go). Anything else queued for the shard closes it first, so
	// the members see the changes in their place among the messages.
	pres    *presBatch
	presAt  time.Time     // when the loop last took a batch
	presGap time.Duration // how long after presAt the next batch waits

	// Flow control (flow.go): the bytes of items queued for the shard's
	// members on loop and not yet written, the largest backlog among them
	// (unsent and held bytes) when their loop last delivered to them, and
	// whether the two together put the shard behind (counted in
	// room.nbehind).
	queued atomic.Int64
	peak   atomic.Int64
	behind atomic.Bool

	// big says the shard has paceShard members or more, so its rounds are
	// paced. Its loop sets it as members come and go; pushes from other
	// loops read it (loop.push).
	big atomic.Bool
}

// resized records a change in the shard's members. Event loop only.
func (sh *shard) resized() { sh.big.Store(len(sh.members) >= paceShard) }

// frame is an encoded frame shared by every recipient, returned to the pool
// when the last holder releases it. Its buffer is pooled with it: one pool
// operation a frame each way, not two (the frame's, then a bytebufferpool
// buffer's: 19% of a room of two's server CPU went to the two pools).
type frame struct {
	b    []byte
	seq  uint64
	refs atomic.Int32
}

var frames = sync.Pool{New: func() any { return new(frame) }}

// frameKeep is the largest buffer a released frame keeps for its next
// use; a bigger one (a rare large message) is left to the collector, so
// the pool does not pin big buffers for small frames.
const frameKeep = 8 << 10

func newFrame() *frame {
	f := frames.Get().(*frame)
	f.b = f.b[:0]
	f.refs.Store(1)
	return f
}

func (f *frame) retain() { f.refs.Add(1) }

// frameOverhead is what a held frame costs beyond its buffer's bytes: the
// frame and its slot in a history ring.
const frameOverhead = int(unsafe.Sizeof(frame{}) + unsafe.Sizeof(&frame{}))

// held is the memory f holds while kept: its buffer's capacity, which a
// pooled buffer may have grown well past this frame's length, and the
// structures around it. HistoryBudget is counted in it, so the budget
// bounds memory, not payload.
func (f *frame) held() int { return cap(f.b) + frameOverhead }

func (f *frame) release() {
	if f.refs.Add(-1) == 0 {
		if cap(f.b) > frameKeep {
			f.b = nil
		}
		f.seq = 0
		frames.Put(f)
	}
}

// item is one unit of fan-out work queued on a loop: write f to every
// member of sh except skip (the sender), or only to target when it is set.
// ev orders the item against joins: members that joined at or after ev
// already have what it carries. size is what the item counts in
// sh.queued until it is written (0: not counted).
type item struct {
	sh     *shard
	size   int
	f      *frame
	skip   *member
	target *member
	ev     uint64
	bye    bool  // after writing f, close the recipients
	ack    bool  // f is an Ack for target, counted in its acksQueued
	at     int64 // when a fan-out item was queued (Unix ns), for the latency histogram
	// pb, in place of f, is a batch of joins and leaves for sh's members.
	pb *presBatch
}

// release drops the item's hold on its frame.
func (it *item) release() {
	if it.f != nil {
		it.f.release()
	}
}

// loop is our fan-out queue for one gnet event loop. gnet runs the loop
// (as a gnet.Runnable) whenever the queue goes from empty to non-empty.
type loop struct {
	el  gnet.EventLoop
	srv *Server

	mu        sync.Mutex // a leaf: taken under room.mu (push) or Server.loopsMu (idle)
	queue     []item
	spare     []item
	scheduled bool
	// paused says a drain waits for a big shard's pause (drainBeside ran)
	// and no wake-up has been asked since: a push from another loop of an
	// item beside the pause wakes the loop, once.
	paused bool

	// depth counts the gnet callbacks and queue drains running on the loop
	// (they nest: a write that fails closes its connection inside the
	// drain). A push to the loop's own queue from inside one needs no
	// wake-up: deferred asks the outermost to drain before it returns.
	depth    int       // loop only
	deferred bool      // loop only
	now      time.Time // when the outermost callback running began; loop only
	// Held writes (see holdDelay). acks holds the Ack frames owed to
	// ackTo, written in one call when the callback ends, or held longer
	// for a sender that streams, or written ahead of the next bytes going
	// to ackTo, in the same write. holding lists the members whose
	// deliveries are held (member.held). endHolds writes what is due when
	// a callback ends; holdTimer writes the rest once it is due, if no
	// callback did first. All loop only.
	acks      []byte
	nacks     int     // frames in acks
	ackBytes  int     // bytes of the messages acks acknowledge
	ackTo     *member // who acks are owed to
	ackLast   *member // who Acks were last written to, and when
	ackAt     time.Time
	holding   []*member
	holdTimer *time.Timer
	holdArmed bool      // holdTimer is set and holdRun not run since
	holdAt    time.Time // when holdTimer fires, while armed
	holdRun   holdFlusher
	// Paced rounds (see paceShard): when the last round to a big shard
	// ended and how long it took, and, while a drain waits for that, when
	// it may run (zero if none waits). All loop only.
	paceAt  time.Time
	paceFor time.Duration
	drainAt time.Time

	batch []byte // frames of a run of broadcasts, concatenated; loop only
	own   []byte // the joins and leaves one member gets; loop only
	pres  []byte // Presence frames being gathered into a Presences; loop only
	// TLS scratch, loop only: a member's ciphertext and plaintext while it
	// is served, records being sealed, and the AEAD nonce.
	plain     plainIn
	plainBuf  []byte
	cipherBuf []byte
	sealBuf   []byte
	nonce     [12]byte
	doomed    []*member    // cut off, waiting for their error frame to drain; loop only
	ndoomed   atomic.Int32 // len(doomed), for the reaper goroutine
	reaper    reaper

	st *loopStats // nil when Config.Metrics is off

	behind  []*member    // members past HighWater; loop only (flow.go)
	nbehind atomic.Int32 // len(behind), for Server.flowLoop
	paced   []*member    // members whose input waits for their send rate; loop only (flow.go)
	npaced  atomic.Int32 // len(paced), for Server.flowLoop
	watcher watcher

	beats  map[*member]struct{} // members that asked for beats; loop only (beat.go)
	nbeats atomic.Int32         // len(beats), for Server.flowLoop
	beater beater
}

func (l *loop) doom(m *member) {
	l.doomed = append(l.doomed, m)
	l.ndoomed.Store(int32(len(l.doomed)))
}

// reaper closes doomed members whose backlog drained, from gnet's buffer
// and the kernel's, or whose grace ran out. It runs on the loop,
// scheduled by Server.flowLoop.
type reaper struct{ l *loop }

func (r *reaper) Run(context.Context) error {
	l := r.l
	now := time.Now()
	keep := l.doomed[:0]
	for _, m := range l.doomed {
		switch {
		case m.gone:
		case now.After(m.doomedAt):
			m.cut() // a reset if anything is still unsent
		case m.c.OutboundBuffered() == 0 && unsent.Bytes(m.c.Fd()) == 0:
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

// push queues it on l. from is the loop the caller runs on, nil if it
// runs on none.
func (l *loop) push(it item, from *loop) {
	l.mu.Lock()
	l.queue = append(l.queue, it)
	wake := !l.scheduled
	if !wake && l.paused && !it.paced() {
		// The queue waits for a big room's pause: this item need not.
		wake, l.paused = true, false
	}
	l.scheduled = true
	l.mu.Unlock()
	if wake && from == l && l.depth > 0 {
		// Our own callback drains the queue when it ends: no system call
		// to wake a loop that is awake, and the messages of one read go out
		// as one write per member.
		l.deferred = true
		return
	}
	if wake {
		if err := l.el.Execute(context.Background(), l); err != nil {
			// The engine is stopping: nothing will run the queue again.
			l.mu.Lock()
			q := l.queue
			l.queue = nil
			l.mu.Unlock()
			for _, it := range q {
				if it.size > 0 {
					it.sh.queued.Add(-int64(it.size))
				}
				if it.ack {
					it.target.acksQueued.Add(-1)
				}
				it.release()
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

// enter marks the start of a callback on l and returns the time it began:
// the clock is read once, by the outermost callback, for everything done
// in it (a clock read costs as much as a message's fan-out work on some
// virtual machines). Event loop only.
func (l *loop) enter() time.Time {
	if l.depth == 0 {
		l.now = time.Now()
	}
	l.depth++
	return l.now
}

// exit ends a callback on l that began at start; the outermost one drains
// what was queued on l from the loop itself, writes the held writes that
// are due, and hands the loop's tally to the metrics. Event loop only.
func (l *loop) exit(start time.Time) {
	if l.depth > 1 {
		l.depth--
		return
	}
	for {
		for l.deferred {
			if l.drainAt = l.drainDue(); !l.drainAt.IsZero() {
				l.drainBeside()
				break // the hold timer drains the rest (endHolds)
			}
			l.deferred = false
			l.drain()
		}
		l.endHolds()
		// A held write that failed closed its connection, and the leave
		// may have queued presence on this loop: drain that too.
		if !l.deferred || !l.drainAt.IsZero() {
			break
		}
	}
	l.depth--
	l.st.done(start)
}

// Writes to a member that streams are held and written together. A write
// is a system call, most of a small room's server CPU, and a loop writes
// to each member once per read it serves: in a room of two, a sender's
// read, the receiver's write and the sender's Acks were three calls for
// the few messages of one read (nats-server, whose writer goroutine
// gathers what several reads queued, writes a third as often). So the
// loop holds:
//
//   - a sender's Acks, while Acks were written to it less than ackDelay
//     ago, up to ackBatch of them or ackBatchBytes of messages
//     acknowledged (an eighth of a client's default SendWindow);
//   - a receiver's deliveries, while a delivery was written to it less
//     than holdDelay ago (Config.holdDelay), up to holdFrames frames or
//     holdBytes.
//
// What is held is written by the first callback to end once it is due, or
// by the loop's holdTimer if no callback comes first. So a lone message,
// and the first of a stream, goes out at once; a streaming receiver waits
// at most holdDelay more for a message, a streaming sender ackDelay for
// its Acks. Any other write to a member (a reply, a resend, presence, a
// goodbye, a fatal error but a slow consumer's) takes what is held for it
// along, ahead of its own bytes, so nothing is reordered or dropped. (The
// timer is a Go timer, and a process with nothing else to do sleeps in
// the runtime's epoll_pwait, whose timeout counts whole milliseconds: when
// the room goes quiet, what is held leaves about 1.1 ms after it was
// written, not holdDelay. A timerfd that woke the loop on time cost 14%
// of the server CPU per delivery in a room of two and 25% in a room of
// 16: bench/RESULTS.md, 2026-12-02.) Acks
// held for one member are written before another member's are queued, so
// a loop holds one member's Acks at a time. The timer costs a wake-up of
// the loop when it fires: in the benchmark's closed loop (64 messages in
// flight) it fires in most holds, since the sender waits for the very
// deliveries held, which is what bounds holdDelay to a fraction of that
// round trip (bench/RESULTS.md).
const (
	ackDelay      = 2 * time.Millisecond
	ackBatch      = 64
	ackBatchBytes = 8 << 10

	holdDelay  = 250 * time.Microsecond
	holdFrames = 64
	holdBytes  = 16 << 10
)

// ack queues an Ack frame for m, for a message of size bytes, to be
// written with the others of this callback or held (endHolds). Event loop
// only.
func (l *loop) ack(m *member, num, seq uint64, size int) {
	if l.ackTo != m {
		l.flushAcks()
		l.ackTo = m
	}
	l.acks = proto.AppendAck(l.acks, num, seq)
	l.nacks++
	l.ackBytes += size
}

// endHolds writes the held Acks and deliveries that are due when the
// outermost callback ends, and sets holdTimer for the rest. Event loop
// only.
func (l *loop) endHolds() {
	if m := l.ackTo; m != nil && (m != l.ackLast || l.now.Sub(l.ackAt) >= ackDelay || l.nacks >= ackBatch || l.ackBytes >= ackBatchBytes) {
		l.flushAcks()
	}
	var due time.Time
	if l.ackTo != nil {
		due = l.ackAt.Add(ackDelay)
	}
	if len(l.holding) > 0 {
		hold := l.srv.cfg.holdDelay
		keep := l.holding[:0]
		for _, m := range l.holding {
			if !m.dead && len(m.held.B) > 0 && l.now.Sub(m.wroteAt) < hold {
				keep = append(keep, m)
				if at := m.wroteAt.Add(hold); due.IsZero() || at.Before(due) {
					due = at
				}
				continue
			}
			m.flushHeld()
		}
		clear(l.holding[len(keep):])
		l.holding = keep
	}
	if !l.drainAt.IsZero() && (due.IsZero() || l.drainAt.Before(due)) {
		due = l.drainAt
	}
	l.armHold(due)
}

// A round of fan-out to a shard of paceShard members or more (one write
// to each) is followed by a pause as long as the round took, at most
// paceMax, before the loop drains its queue again. What the room's
// senders send meanwhile leaves in the next round, so a big room's
// messages go out in fewer and fuller writes per member, and a loop spends
// at most about half its time on one room's rounds. Without the pause a
// loop that woke as soon as a sender's next bytes arrived served a
// streaming sender in rounds of a few messages each, each round a write to
// every member: at 1,024 members 4-6 writes per 100 deliveries against 1.6
// with it (bench/RESULTS.md). The pause gates what concerns the big
// shard (drainBeside): what the loop serves for other rooms goes out
// meanwhile, and nothing is reordered on any connection.
const (
	paceShard = 64
	paceMax   = 10 * time.Millisecond
)

// drainDue returns when the queue may be drained: zero for now, or the
// end of the pause after a big round while a broadcast to a big shard is
// queued. Event loop only.
func (l *loop) drainDue() time.Time {
	due := l.paceAt.Add(l.paceFor)
	if !l.now.Before(due) {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.queue {
		if it := &l.queue[i]; it.target == nil && it.pb == nil && it.sh.big.Load() {
			return due
		}
	}
	return time.Time{}
}

// notePaced records a round to a big shard that began at start and ended now:
// the next drain waits as long (paceShard). Event loop only.
func (l *loop) notePaced(start time.Time) {
	l.paceAt = time.Now()
	l.paceFor = min(l.paceAt.Sub(start), paceMax)
	if p := l.srv.cfg.pace; p > 0 {
		l.paceFor = p
	}
}

// armHold makes holdTimer fire at due, the earliest time something held
// is due (endHolds), or stops it when due is zero (nothing is held).
// Event loop only.
//
// A timer set for earlier than due is moved to due: what it was set for
// has been written since, by a callback that ended after it was due. Left
// alone it fired anyway, for nothing but a wake-up of the loop (a timer
// goroutine, an eventfd write, a poll): in a streaming room of two about
// as many as there were writes of deliveries.
func (l *loop) armHold(due time.Time) {
	if due.IsZero() {
		if l.holdArmed && l.holdTimer.Stop() {
			l.holdArmed = false
		}
		return
	}
	if l.holdArmed && due.Equal(l.holdAt) {
		return
	}
	l.holdArmed, l.holdAt = true, due
	if l.holdTimer == nil {
		l.holdRun.l = l
		l.holdTimer = time.AfterFunc(due.Sub(l.now), l.holdRun.wake)
	} else {
		l.holdTimer.Reset(due.Sub(l.now))
	}
}

// flushAcks writes the queued acknowledgements. Event loop only.
func (l *loop) flushAcks() {
	m := l.ackTo
	if m == nil {
		return
	}
	l.ackTo = nil
	m.writeN(l.acks, l.srv.cfg.MaxOutbound, l.nacks)
	l.sentAcks(m)
}

// sentAcks records that the Acks queued for m left. Event loop only.
func (l *loop) sentAcks(m *member) {
	l.acks, l.nacks, l.ackBytes = l.acks[:0], 0, 0
	l.ackLast, l.ackAt = m, l.now
}

// holdFlusher writes what a loop holds when its holdTimer fires: the
// callback's end (endHolds) writes what is due by then.
type holdFlusher struct{ l *loop }

// wake runs the flusher on its loop; holdTimer calls it.
func (f *holdFlusher) wake() {
	// An error means the engine is stopping: what is held no longer
	// matters.
	_ = f.l.el.Execute(context.Background(), f)
}

func (f *holdFlusher) Run(context.Context) error {
	l := f.l
	start := l.enter()
	l.holdArmed = false
	if !l.drainAt.IsZero() {
		l.deferred = true // a paced drain: exit runs it once it is due
	}
	l.exit(start)
	return nil
}

// Run drains the queue on the event loop; it implements gnet.Runnable.
func (l *loop) Run(context.Context) error {
	start := l.enter()
	l.deferred = true // exit drains, unless a paced round must wait
	l.exit(start)
	return nil
}

// drain delivers everything queued. Event loop only, never nested: a
// callback or drain inside it sees depth > 0 and defers to it.
func (l *loop) drain() {
	l.mu.Lock()
	q := l.queue
	l.queue = l.spare[:0]
	l.scheduled, l.paused = false, false
	l.mu.Unlock()
	l.run(q)
}

// drainBeside delivers, while a big shard's round is paced (drainDue),
// what concerns no big shard: a small room on the loop does not wait for
// a big room's pause. Everything to a big shard's members (its broadcasts,
// its presence, the replies and Acks to them) stays queued in order, so
// no connection's frames are reordered: a member is in one shard, and
// what reaches it is its shard's items and those targeted at it. Like
// drain, event loop only.
func (l *loop) drainBeside() {
	l.mu.Lock()
	l.paused = true
	q := l.queue
	first := slices.IndexFunc(q, func(it item) bool { return !it.paced() })
	if first < 0 {
		l.mu.Unlock()
		return
	}
	keep := append(l.spare[:0], q[:first]...)
	n := 0
	for i := first; i < len(q); i++ {
		if q[i].paced() {
			keep = append(keep, q[i])
		} else {
			q[n] = q[i]
			n++
		}
	}
	clear(q[n:])
	l.queue = keep
	// scheduled stays set: what is kept is drained when the pause ends
	// (the hold timer); a push from another loop meanwhile wakes the loop
	// only if it is beside the pause (paused).
	l.mu.Unlock()
	l.run(q[:n])
}

// paced reports whether it concerns a shard whose rounds are paced: a
// broadcast or presence to a shard of paceShard members or more, or a
// write targeted at one of its members. Safe for concurrent use.
func (it *item) paced() bool {
	sh := it.sh
	if it.target != nil {
		sh = it.target.shard
	}
	return sh != nil && sh.big.Load()
}

// run delivers q, a queue taken from l, and keeps its array for the next
// queue. Event loop only.
func (l *loop) run(q []item) {
	for i := 0; i < len(q); {
		it := &q[i]
		// Consecutive broadcasts to the same shard go out as one write per
		// member: under load a drained queue holds many messages of a busy
		// room, and a system call per member per message is the cost that
		// dominates fan-out.
		n := 1
		if it.pb != nil {
			l.deliverPresence(it)
		} else {
			if it.target == nil && !it.bye {
				size := len(it.f.b)
				for i+n < len(q) && q[i+n].sh == it.sh && q[i+n].target == nil && !q[i+n].bye && q[i+n].pb == nil &&
					size+len(q[i+n].f.b) <= maxBatch {
					size += len(q[i+n].f.b)
					n++
				}
			}
			// The run leaves the queue as it goes into the members'
			// backlogs (flow.go).
			sh, counted := it.sh, 0
			for k := i; k < i+n; k++ {
				counted += q[k].size
			}
			if counted > 0 {
				sh.queued.Add(-int64(counted))
			}
			big := it.target == nil && it.sh.big.Load()
			var t0 time.Time
			if big {
				t0 = time.Now()
			}
			l.deliver(q[i : i+n])
			if big {
				l.notePaced(t0)
			}
			if counted > 0 {
				sh.settle()
			}
		}
		var now int64
		if l.st != nil {
			now = time.Now().UnixNano()
		}
		for k := i; k < i+n; k++ {
			l.st.observeFanout(q[k].at, now)
			q[k].release()
			q[k] = item{}
		}
		i += n
	}
	l.mu.Lock()
	l.spare = q[:0]
	l.mu.Unlock()
}

// maxBatch bounds the bytes of a run of broadcasts gathered for one
// write, so the slow-consumer check between writes stays close to
// MaxOutbound. A write to a member may carry more: what was held for it
// (under holdBytes) and the Acks owed to it go ahead of the run, so one
// reaches about maxBatch + holdBytes, and a member is cut off at most
// that far past MaxOutbound (80 KiB past 4 MiB by default), its bytes
// counted in OutboundBudget all the while.
const maxBatch = 64 << 10

// deliver writes a run of items: one targeted item, or broadcasts to one
// shard. Event loop only.
func (l *loop) deliver(run []item) {
	max := l.srv.cfg.MaxOutbound
	first := &run[0]
	if m := first.target; m != nil {
		if first.ev > m.joinEv {
			m.write(first.f.b, max)
			if first.bye {
				m.dead = true
				_ = m.c.Close()
			}
		}
		if first.ack {
			m.acksQueued.Add(-1)
		}
		return
	}
	batch := first.f.b
	if len(run) > 1 {
		l.batch = l.batch[:0]
		for k := range run {
			l.batch = append(l.batch, run[k].f.b...)
		}
		batch = l.batch
	}
	// A write that fails closes its connection on the spot, and OnClose
	// swaps the last member into the closed one's slot: index the slice
	// afresh and revisit a slot that changed.
	members := &first.sh.members
	peak := 0
	for i := 0; i < len(*members); i++ {
		m := (*members)[i]
		if m.joinEv < first.ev && !sentOne(run, m) {
			m.deliverN(batch, max, len(run))
		} else {
			// The member sent one of these messages, or joined in the
			// middle of the run: pick its frames one by one.
			for k := range run {
				if run[k].skip != m && run[k].ev > m.joinEv {
					m.deliverN(run[k].f.b, max, 1)
				}
			}
		}
		if first.bye {
			m.writeN(nil, max, 0) // what is held leaves before the close
			m.dead = true
			_ = m.c.Close()
		}
		// Its backlog but for the shard's queue: unsent and held bytes.
		if m.outb > peak && !m.noHold {
			peak = m.outb
		}
		if i < len(*members) && (*members)[i] != m {
			i--
		}
	}
	first.sh.peak.Store(int64(peak))
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
	sh := &shard{loop: l, room: r}
	r.shards = append(r.shards, sh)
	return sh
}

// fanout queues f for every member of r but skip. Caller holds r.mu, so
// items reach each loop in the room's order. The caller keeps its own
// reference to f.
func (r *room) fanout(f *frame, skip *member, from *loop) {
	r.ev++
	at := r.srv.stamp(from)
	for _, sh := range r.shards {
		sh.closePres(from)
		n := sh.count
		if skip != nil && skip.shard == sh {
			n--
		}
		if n <= 0 {
			continue
		}
		f.retain()
		size := len(f.b)
		sh.enqueue(size)
		sh.loop.push(item{sh: sh, size: size, f: f, skip: skip, ev: r.ev, at: at}, from)
	}
}

// loopFor returns our state for a gnet event loop, creating it on first use.
func (s *Server) loopFor(el gnet.EventLoop) *loop {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	l := s.loops[el]
	if l == nil {
		l = &loop{el: el, srv: s}
		if s.cfg.Metrics {
			l.st = new(loopStats)
		}
		l.reaper.l = l
		l.watcher.l = l
		l.beater.l = l
		s.loops[el] = l
	}
	return l
}
