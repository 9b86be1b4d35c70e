package chatserver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"nearchat/pkg/mono"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Flow control. A member's backlog is what the server holds for it and has
// not sent: its connection's unsent bytes, the deliveries held for it
// (member.held, counted there until written, then as unsent bytes if they
// are), plus the fan-out queued for its shard on its event loop and not
// yet written (shard.queued). The queued part matters when the member's
// loop lags behind the sender's: the sender's loop acknowledges at once,
// and without it the senders would run on while the lagging loop's queue
// grew, to be written to the member all at once past MaxOutbound.
//
// A member whose backlog passes HighWater is behind: while any member of a
// room is behind, the room's senders get no Acks (they are held in the
// room, in order), and a sender's session writes no more than its
// SendWindow unacknowledged bytes, so the senders slow to the slowest
// reader's pace instead of the reader's backlog growing without bound. The
// member's loop marks the member (after each write to it); the sender's
// loop marks the shard when what it queues there, plus the largest backlog
// but the queue among the shard's members when their loop last delivered
// to them (shard.peak), passes HighWater, so a loop that has not run yet
// holds the senders too. A member is caught up again once its backlog
// drains below half of HighWater, a shard once its queue does; the held
// Acks are then sent. So a member's backlog stays under HighWater plus the
// SendWindows of the room's senders. A member that stays behind longer
// than SlowTimeout, or whose backlog passes MaxOutbound all the same (more
// senders than the windows allow for), is cut off as a slow consumer: it
// rejoins and recovers what it lacks from the history and the senders, or
// is told exactly what it missed.
//
// A member that was cut off as a slow consumer and joins the same room
// again within slowMemory holds the room no more: it is never behind, so
// the room's Acks never wait for it; it gets what fits in its MaxOutbound
// (its input paused past half of it, cut off after maxPause so) and is
// cut off again past it, the others going on at their own pace. Before,
// a member that stopped reading and kept pinging held every other
// member's messages for SlowTimeout, rejoined with the same ticket (valid
// for Central's -ticket-ttl, 10 minutes by default) and did it again
// (abuse sweep, 2026-12-03: the others' messages stalled for 52 s and
// then 59 s, over and over).
//
// Liveness: every connection must send something (its session pings) at
// least every IdleTimeout; one silent longer is closed with a timeout error
// by the guard's sweep (guard.go), and its room sees it leave.

// Pacing. A member's Chat frames are taken at SendRate (burst SendBurst):
// past it, its input is left unread (pace), and its loop's watcher wakes
// it every flowTick to take what its rate allows by then. A session's
// sender is so slowed through its SendWindow, as by a slow reader; only
// one that goes on sending maxPausedInbound bytes past its rate is cut
// off (rate_limited).

// pace reports whether m's next frame, a Chat, must wait for its rate;
// a Chat it lets through is counted. buffered is m's unread input. Event
// loop only.
func (s *Server) pace(m *member, now time.Time, buffered int) bool {
	if m.sends.allow(now.UnixNano(), s.sendEvery, s.sendSpan) {
		return false
	}
	if buffered > maxPausedInbound {
		m.kill(proto.CodeRateLimited, fmt.Sprintf("more than %d bytes sent past %v messages a second", maxPausedInbound, s.cfg.SendRate))
		return true
	}
	m.waitInput()
	return true
}

// sendBucket paces one member's Chat frames: a token bucket of SendRate
// tokens a second holding at most SendBurst, kept as the time at which the
// bucket will have given out every token taken so far (tat, Unix ns; the
// generic cell rate algorithm). The zero value is a full bucket. It does
// what rate.Limiter.AllowN(now, 1) does, on the loop alone, so without
// the limiter's mutex and floating-point clock arithmetic, which were 2-3%
// of a room of two's server CPU, paid on every Chat. Event loop only.
type sendBucket struct{ tat int64 }

// allow takes a token at now (Unix ns) if the bucket has one, every being
// the nanoseconds a token takes to come back and span (burst-1)*every.
func (b *sendBucket) allow(now, every, span int64) bool {
	t := max(b.tat, now)
	if t-now > span {
		return false
	}
	b.tat = t + every
	return true
}

// sendPace returns sendBucket's parameters for a rate a second and a
// burst: the nanoseconds per token (at least 1) and how far ahead of now
// the bucket may run.
func sendPace(rate float64, burst int) (every, span int64) {
	every = max(int64(float64(time.Second)/rate), 1)
	return every, int64(max(burst-1, 0)) * every
}

// overWindow reports whether m's next frame, a Chat, must wait because
// more than HighWater bytes (at least minWithheld) of m's messages wait
// for Acks its room withholds (a member is behind): a session stops at
// its SendWindow, a sender that does not would fill the slow member's
// backlog until that member, not it, is cut off (abuse probe,
// 2026-12-01). Its input waits, like a rate-paced member's, until the
// Acks are released; one that sends maxPausedInbound more meanwhile is
// cut off. Event loop only.
func (s *Server) overWindow(m *member, buffered int) bool {
	limit := int64(max(s.cfg.HighWater, minWithheld))
	if m.withheld.Load() <= limit {
		return false
	}
	if buffered > maxPausedInbound {
		m.kill(proto.CodeRateLimited, fmt.Sprintf("more than %d bytes sent past %d bytes of messages its room had not acknowledged", maxPausedInbound, limit))
		return true
	}
	m.waitInput()
	return true
}

// minWithheld is the least overWindow allows whatever HighWater: twice a
// session's default SendWindow, since the server counts the Deliver frames
// it makes, a little bigger than the Chat frames a session counts, so a
// session that keeps its window never waits for it.
const minWithheld = 128 << 10

// waitInput leaves m's input unread until its loop's watcher wakes it
// (every flowTick). Event loop only.
func (m *member) waitInput() {
	if !m.paced {
		m.paced = true
		l := m.loop
		l.paced = append(l.paced, m)
		l.npaced.Store(int32(len(l.paced)))
	}
}

// heldAck is an Ack withheld while the room has a member behind.
type heldAck struct {
	m        *member
	num, seq uint64
	size     int // the message's bytes, counted in m.withheld while held
}

// flowTick is how often behind members are checked for having drained.
const flowTick = 20 * time.Millisecond

// noteBacklog records m's unsent and held bytes in the server's total and
// marks m behind when its backlog passed HighWater. Event loop only, right
// after a write to m.
func (m *member) noteBacklog() {
	s := m.loop.srv
	n := m.c.OutboundBuffered()
	if out := n + m.heldBytes(); out != m.outb {
		s.outBytes.Add(int64(out - m.outb))
		m.outb = out
	}
	if m.behind != nil || m.room == nil || m.noHold || m.backlog(n) <= s.cfg.HighWater {
		return
	}
	m.behind, m.behindSince = m.room, time.Now()
	m.room.nbehind.Add(1)
	l := m.loop
	l.st.behind()
	l.behind = append(l.behind, m)
	l.nbehind.Store(int32(len(l.behind)))
}

// heldBytes is the bytes of the deliveries held for m. Event loop only.
func (m *member) heldBytes() int {
	if m.held == nil {
		return 0
	}
	return len(m.held.B)
}

// backlog is m's backlog given its connection's unsent bytes: those
// plus what is held for it (holdDelay) and queued for its shard. Event
// loop only.
func (m *member) backlog(unsent int) int {
	unsent += m.heldBytes()
	if m.shard == nil {
		return unsent
	}
	return unsent + int(m.shard.queued.Load())
}

// enqueue counts n bytes queued on sh's loop for its members, and marks
// sh behind when they and the largest backlog among its members pass
// HighWater. Caller holds the room's mutex, and pushes the item after.
func (sh *shard) enqueue(n int) {
	q := sh.queued.Add(int64(n))
	if q+sh.peak.Load() > int64(sh.room.srv.cfg.HighWater) && sh.behind.CompareAndSwap(false, true) {
		sh.room.nbehind.Add(1)
	}
}

// settle clears sh's behind mark once its queue is down to half of
// HighWater (sending the held Acks when it was the room's last). Its loop
// calls it after writing a run of items to the members, having taken them
// out of sh.queued. Event loop only (sh's), holding no lock. Every mark
// is cleared in time: the item queued right after a mark is set is
// written, and settle called, after it.
func (sh *shard) settle() {
	if sh.queued.Load() > int64(sh.room.srv.cfg.HighWater/2) || !sh.behind.CompareAndSwap(true, false) {
		return
	}
	if sh.room.nbehind.Add(-1) == 0 {
		sh.room.srv.releaseAcks(sh.room)
	}
}

// catchUp clears m's behind mark and, if it was its room's last member
// behind, sends the Acks held meanwhile. Event loop only.
func (m *member) catchUp() {
	r := m.behind
	m.behind = nil
	if r.nbehind.Add(-1) == 0 {
		m.loop.srv.releaseAcks(r)
	}
}

// releaseAcks sends r's held Acks, each on its sender's loop, in order.
func (s *Server) releaseAcks(r *room) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nbehind.Load() > 0 {
		return
	}
	for _, a := range r.acks {
		a.m.withheld.Add(-int64(a.size))
		r.queueAck(a, nil)
	}
	clear(r.acks)
	r.acks = r.acks[:0]
}

// watcher checks a loop's behind members. It runs on the loop, scheduled
// by Server.flowLoop.
type watcher struct{ l *loop }

func (w *watcher) Run(context.Context) error {
	l := w.l
	s := l.srv
	now := time.Now()
	keep := l.behind[:0]
	for _, m := range l.behind {
		switch {
		case m.behind == nil:
			// Caught up already (the connection closed and was counted).
		case m.gone:
			m.catchUp()
		case m.dead || m.backlog(m.c.OutboundBuffered()) <= s.cfg.HighWater/2:
			m.noteBacklog()
			m.catchUp()
			if !m.dead {
				// Left to the guard's sweep, a drain shorter than
				// guardTick went unseen, and a member that filled up
				// again short of HighWater was cut off as paused since
				// before it caught up (TestBehindMemberOutlastsPause, on
				// a loaded machine).
				s.resumeIfDrained(m)
			}
		case now.Sub(m.behindSince) > s.cfg.SlowTimeout:
			l.st.cutOff()
			m.kill(proto.CodeSlowConsumer, fmt.Sprintf("more than %d bytes unread for over %v", s.cfg.HighWater, s.cfg.SlowTimeout))
			m.catchUp()
		default:
			m.noteBacklog()
			keep = append(keep, m)
		}
	}
	clear(l.behind[len(keep):])
	l.behind = keep
	l.nbehind.Store(int32(len(keep)))

	// Paced members read again: serve takes what their rate allows now.
	for _, m := range l.paced {
		m.paced = false
		if !m.gone && !m.dead {
			_ = m.c.Wake(nil)
		}
	}
	clear(l.paced)
	l.paced = l.paced[:0]
	l.npaced.Store(0)
	return nil
}

// flowLoop runs the loops' periodic work: closing cut-off members
// (reaper), catching up behind members (watcher) and, every guardTick,
// the connections' deadlines, silence (IdleTimeout) among them (guard.go).
func (s *Server) flowLoop() {
	t := time.NewTicker(flowTick)
	defer t.Stop()
	var lastReap, lastGuard time.Time
	for {
		select {
		case <-s.stopReap:
			return
		case now := <-t.C:
			s.now.Store(mono.Now())
			reap := now.Sub(lastReap) >= doomGrace/8
			if reap {
				lastReap = now
			}
			s.loopsMu.Lock()
			for _, l := range s.loops {
				if reap && l.ndoomed.Load() > 0 {
					_ = l.el.Execute(context.Background(), &l.reaper)
				}
				if l.nbehind.Load() > 0 || l.npaced.Load() > 0 {
					_ = l.el.Execute(context.Background(), &l.watcher)
				}
				if l.nbeats.Load() > 0 {
					_ = l.el.Execute(context.Background(), &l.beater)
				}
			}
			s.loopsMu.Unlock()
			if now.Sub(lastGuard) >= guardTick {
				lastGuard = now
				s.sweepGuards()
			}
		}
	}
}

// holdAck holds m's Ack for num while r has a member behind (or Acks
// held before it); otherwise it reports that the caller must write it.
// Caller holds r.mu.
//
// Released Acks reach their sender's loop through its queue, so an Ack
// due while some of m's are still on it goes through the queue too,
// behind them: written at once, it would overtake them, and a session
// pairs its resends' Acks (Seq 0) with their sizes in order.
func (r *room) holdAck(m *member, num, seq uint64, size int) (write bool) {
	a := heldAck{m: m, num: num, seq: seq, size: size}
	switch {
	case r.nbehind.Load() > 0 || len(r.acks) > 0:
		r.acks = append(r.acks, a)
		m.withheld.Add(int64(size))
	case m.acksQueued.Load() > 0:
		r.queueAck(a, m.loop)
	default:
		return true
	}
	return false
}

// queueAck queues a's Ack on its sender's loop, counted in
// member.acksQueued until written. from is the loop the caller runs on,
// nil if none. Caller holds r.mu.
func (r *room) queueAck(a heldAck, from *loop) {
	if a.seq == 0 && !a.m.v4 {
		return // a resend's, which a member before version 4 is not sent
	}
	f := newFrame()
	f.b, _ = wire.AppendFrame(f.b, &proto.Ack{Num: a.num, Seq: a.seq})
	r.ev++
	a.m.acksQueued.Add(1)
	a.m.loop.push(item{target: a.m, f: f, ev: r.ev, ack: true}, from)
}

// forgetBacklog takes a closed member's backlog out of the server's total.
// Event loop only, from OnClose.
func (m *member) forgetBacklog() {
	m.loop.srv.outBytes.Add(-int64(m.outb))
	m.outb = 0
}

// overBudget refuses a new room while the server's history bytes are
// within a frame of their budget, and a new room or member while its
// outbound bytes are past theirs; members already in keep working. A
// member joining a room here adds nothing to the room's history, so the
// history budget leaves the room's members free to come back: it locked
// them out of their own room, and Central, not told, sent them back
// (abuse sweep 3, 2026-12-06). The heartbeat tells Central (Budget).
func (s *Server) overBudget(newRoom bool) error {
	if h, full := s.historyFull(); newRoom && full {
		return proto.Fatalf(proto.CodeServerFull, "%s (%d of %d bytes): try another server", budgetHistory, h, s.cfg.HistoryBudget)
	}
	if o, full := s.outboundFull(); full {
		return proto.Fatalf(proto.CodeServerFull, "%s (%d of %d bytes unsent): try another server", budgetOutbound, o, s.cfg.OutboundBudget)
	}
	return nil
}

// historyFull and outboundFull return the bytes counted against each
// budget, and whether it refuses a new room now.
func (s *Server) historyFull() (int64, bool) {
	h := s.histBytes.Load()
	return h, h+int64(s.cfg.MaxFrame) > s.cfg.HistoryBudget
}

func (s *Server) outboundFull() (int64, bool) {
	o := s.outBytes.Load()
	return o, o > s.cfg.OutboundBudget
}

// What a heartbeat says of a budget reached (centralapi.HeartbeatRequest's
// Budget): the same words each time, so that Central sees a change only
// when the budget reached changes.
const (
	budgetHistory  = "history memory budget reached"
	budgetOutbound = "outbound memory budget reached"
)

// budgetReached names the budget that refuses a new room now, or "".
func (s *Server) budgetReached() string {
	if _, full := s.historyFull(); full {
		return budgetHistory
	}
	if _, full := s.outboundFull(); full {
		return budgetOutbound
	}
	return ""
}

// slowMemory is how long a member cut off as slow is remembered in its
// room (slowCuts): a ticket's default lifetime. Each cut-off, of a member
// remembered too, starts it afresh.
const slowMemory = 10 * time.Minute

// maxSlowCuts bounds the members slowCuts remembers; past it the oldest
// are forgotten.
const maxSlowCuts = 4096

// slowKey is a member of a room: the room's id and the user.
type slowKey struct{ room, user string }

// slowCuts remembers members cut off as slow consumers, by room and user,
// for slowMemory.
type slowCuts struct {
	mu    sync.Mutex
	at    map[slowKey]time.Time // when each was last cut off
	order []slowCut             // every cut-off, oldest first; stale once its key was cut off again
}

type slowCut struct {
	k  slowKey
	at time.Time
}

// remember notes that k was cut off as slow at now.
func (sc *slowCuts) remember(k slowKey, now time.Time) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.at == nil {
		sc.at = make(map[slowKey]time.Time)
	}
	sc.at[k] = now
	sc.order = append(sc.order, slowCut{k, now})
	n := 0
	for ; n < len(sc.order); n++ {
		e := sc.order[n]
		if now.Sub(e.at) <= slowMemory && len(sc.at) <= maxSlowCuts && len(sc.order)-n <= 2*maxSlowCuts {
			break
		}
		if sc.at[e.k] == e.at {
			delete(sc.at, e.k)
		}
	}
	if n > 0 {
		sc.order = append(sc.order[:0], sc.order[n:]...)
	}
}

// recent reports whether k was cut off as slow within slowMemory of now.
func (sc *slowCuts) recent(k slowKey, now time.Time) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	at, ok := sc.at[k]
	return ok && now.Sub(at) <= slowMemory
}
