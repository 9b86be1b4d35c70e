package chatserver

import (
	"context"
	"fmt"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Flow control. A member whose unsent backlog passes HighWater is behind:
// while any member of a room is behind, the room's senders get no Acks
// (they are held in the room, in order), and a sender's session writes no
// more than its SendWindow unacknowledged bytes, so the senders slow to the
// slowest reader's pace instead of the reader's backlog growing without
// bound. A member is caught up again once its backlog drains below half of
// HighWater; the held Acks are then sent. A member that stays behind longer
// than SlowTimeout, or whose backlog passes MaxOutbound all the same (more
// senders than the windows allow for), is cut off as a slow consumer: it
// rejoins and recovers what it lacks from the history and the senders, or
// is told exactly what it missed.
//
// Liveness: every connection must send something (its session pings) at
// least every IdleTimeout; one silent longer is closed with a timeout error
// by the guard's sweep (guard.go), and its room sees it leave.

// heldAck is an Ack withheld while the room has a member behind.
type heldAck struct {
	m        *member
	num, seq uint64
}

// flowTick is how often behind members are checked for having drained.
const flowTick = 20 * time.Millisecond

// noteBacklog records m's backlog in the server's total and marks m
// behind when it passed HighWater. Event loop only, right after a write to
// m.
func (m *member) noteBacklog() {
	s := m.loop.srv
	n := m.c.OutboundBuffered()
	if n != m.outb {
		s.outBytes.Add(int64(n - m.outb))
		m.outb = n
	}
	if m.behind != nil || m.room == nil || n <= s.cfg.HighWater {
		return
	}
	m.behind, m.behindSince = m.room, time.Now()
	m.room.nbehind.Add(1)
	l := m.loop
	l.behind = append(l.behind, m)
	l.nbehind.Store(int32(len(l.behind)))
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
		f := newFrame()
		f.bb.B, _ = wire.AppendFrame(f.bb.B, &proto.Ack{Num: a.num, Seq: a.seq})
		r.ev++
		a.m.loop.push(item{target: a.m, f: f, ev: r.ev}, nil)
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
		case m.dead || m.c.OutboundBuffered() <= s.cfg.HighWater/2:
			m.noteBacklog()
			m.catchUp()
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
			s.now.Store(now.UnixNano())
			reap := now.Sub(lastReap) >= doomGrace/8
			if reap {
				lastReap = now
			}
			s.loopsMu.Lock()
			for _, l := range s.loops {
				if reap && l.ndoomed.Load() > 0 {
					_ = l.el.Execute(context.Background(), &l.reaper)
				}
				if l.nbehind.Load() > 0 {
					_ = l.el.Execute(context.Background(), &l.watcher)
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
func (r *room) holdAck(m *member, num, seq uint64) (write bool) {
	if r.nbehind.Load() == 0 && len(r.acks) == 0 {
		return true
	}
	r.acks = append(r.acks, heldAck{m: m, num: num, seq: seq})
	return false
}

// forgetBacklog takes a closed member's backlog out of the server's total.
// Event loop only, from OnClose.
func (m *member) forgetBacklog() {
	m.loop.srv.outBytes.Add(-int64(m.outb))
	m.outb = 0
}

// overBudget refuses a new room or member while the server's history
// bytes are within a frame of their budget, or its outbound bytes past
// theirs; members already in keep working.
func (s *Server) overBudget() error {
	if h := s.histBytes.Load(); h+int64(s.cfg.MaxFrame) > s.cfg.HistoryBudget {
		return proto.Fatalf(proto.CodeServerFull, "history memory budget reached (%d of %d bytes): try another server", h, s.cfg.HistoryBudget)
	}
	if o := s.outBytes.Load(); o > s.cfg.OutboundBudget {
		return proto.Fatalf(proto.CodeServerFull, "outbound memory budget reached (%d of %d bytes unsent): try another server", o, s.cfg.OutboundBudget)
	}
	return nil
}
