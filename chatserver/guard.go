package chatserver

import (
	"context"
	"fmt"
	"time"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/connlimit"
	"nearchat/pkg/mono"
	"nearchat/pkg/proto"
)

// The guard enforces the connection-level bounds that keep one peer from
// holding the server's resources: deadlines on half-open work (Hello, a
// started frame, silence) and read back-pressure (a member whose output is
// backed up is not read from). It sits under both paths, plaintext and
// TLS, since TLS peers reach the same event loops.
//
// Each event loop has a guardSet of its connections, touched only on that
// loop; flowLoop (flow.go) asks every loop to sweep its set once per
// guardTick.

// guardTick is the period of the sweep (a multiple of flowLoop's ticks), and so
// the resolution of every deadline below.
const guardTick = doomGrace / 4

// guardState is the guard's part of a member. Loop only.
type guardState struct {
	opened    time.Time           // accepted
	partialAt time.Time           // the first byte of an incomplete frame arrived; zero when none
	paused    bool                // input left unread until the output drains
	pausedAt  time.Time           // when paused was last set
	counted   bool                // holds a descriptor of the budget
	newcomer  *connlimit.Newcomer // its place: evictable (connlimit.AcquireNew) until it joins a room, then only for a fair share
	joined    bool                // joined a room (settled its place)
	dropped   int                 // input discarded since the member was cut off
}

// maxDropped is how much a cut-off member may send while its error frame
// drains before it is closed at once.
const maxDropped = 1 << 20

type guardSet struct {
	conns map[*member]struct{} // loop only
	sweep sweeper
}

type sweeper struct {
	s   *Server
	set *guardSet
}

// guardFor returns the guard set of el, creating it on first use.
func (s *Server) guardFor(el gnet.EventLoop) *guardSet {
	s.guardMu.Lock()
	defer s.guardMu.Unlock()
	g := s.guards[el]
	if g == nil {
		g = &guardSet{conns: map[*member]struct{}{}}
		g.sweep = sweeper{s: s, set: g}
		s.guards[el] = g
	}
	return g
}

// sweepGuards schedules a sweep on every loop; flowLoop calls it each
// guardTick.
func (s *Server) sweepGuards() {
	s.guardMu.Lock()
	for el, g := range s.guards {
		_ = el.Execute(context.Background(), &g.sweep)
	}
	s.guardMu.Unlock()
	s.lim.Reclaim()
}

// Run sweeps one loop's connections. It runs on that loop.
func (w *sweeper) Run(context.Context) error {
	s, now := w.s, time.Now()
	for m := range w.set.conns {
		if m.dead {
			continue
		}
		switch {
		case !m.hello && now.Sub(m.opened) > s.cfg.HelloTimeout:
			m.kill(proto.CodeTimeout, fmt.Sprintf("no hello within %v", s.cfg.HelloTimeout))
		case !m.partialAt.IsZero() && now.Sub(m.partialAt) > s.cfg.FrameTimeout:
			m.kill(proto.CodeTimeout, fmt.Sprintf("a frame took more than %v to arrive", s.cfg.FrameTimeout))
		case m.hello && s.cfg.IdleTimeout > 0 && mono.Now()-m.lastRead.Load() > int64(s.cfg.IdleTimeout):
			m.kill(proto.CodeTimeout, fmt.Sprintf("nothing received for %v (clients ping)", s.cfg.IdleTimeout))
		case s.resumeIfDrained(m):
			// Drained since its input was paused: read again.
		case m.paused && m.behind == nil && now.Sub(m.pausedAt) > maxPause:
			// A member behind holds its room's senders, which bounds its
			// backlog; SlowTimeout (flow.go) bounds how long it may.
			m.kill(proto.CodeSlowConsumer, fmt.Sprintf("more than %d bytes unread for %v", s.cfg.MaxOutbound/2, maxPause))
		case m.paused:
			// gnet has no "writable" callback: look again at a member
			// whose input waits for its output to drain.
			_ = m.c.Wake(nil)
		}
	}
	return nil
}

// admit counts a new connection against the descriptor budget and joins
// it to its loop's guard set. It returns false when it must be refused.
// Loop only.
func (s *Server) admit(m *member) bool {
	m.opened = time.Now()
	m.guard = s.guardFor(m.c.EventLoop())
	m.guard.conns[m] = struct{}{}
	nc, ok := s.port.AcquireNew(m.c.RemoteAddr(), 1, func(settled bool) {
		_ = m.c.EventLoop().Execute(context.Background(), evictTask{m, settled})
	})
	if !ok {
		return false
	}
	m.counted, m.newcomer = true, nc
	return true
}

// evictTask closes a connection that has not joined a room, for a newer
// one that needs its place (connlimit.AcquireNew). A Hello alone does not
// keep a place: it takes no credential, so a flood would send one. It
// runs on the connection's loop.
// A member that joined is evicted only for a fair share (settled): its
// address holds more of a full server than the newer connection's.
type evictTask struct {
	m       *member
	settled bool
}

func (e evictTask) Run(context.Context) error {
	switch m := e.m; {
	case m.dead:
	case e.settled:
		m.kill(proto.CodeServerFull, "the server is at its connection limit, and your address holds more of its connections than any other: a connection from an address holding fewer took this one's place")
	case !m.joined:
		m.kill(proto.CodeServerFull, "a newer connection needed this one's place (the server is at its connection limit for your address or in all) and it had not joined a room")
	}
	return nil
}

// release undoes admit. Loop only.
func (s *Server) release(m *member) {
	if m.guard != nil {
		delete(m.guard.conns, m)
	}
	if m.counted {
		m.counted = false
		m.newcomer.Done()
		s.port.Release(m.c.RemoteAddr(), 1)
	}
}

// backPressure reports whether m's input must stay unread for now because
// its output is backed up past half its cap; a member that keeps sending
// meanwhile is cut off once maxPausedInbound bytes wait unread. Loop only.
func (s *Server) backPressure(m *member, inbound int) bool {
	if m.c.OutboundBuffered() <= s.cfg.MaxOutbound/2 {
		m.paused = false
		return false
	}
	if !m.paused {
		m.paused, m.pausedAt = true, time.Now()
	}
	if inbound > maxPausedInbound {
		m.kill(proto.CodeSlowConsumer, fmt.Sprintf("more than %d bytes unread; stopped reading you", s.cfg.MaxOutbound/2))
	}
	return true
}

// resumeIfDrained reads a paused member's input again once its output has
// drained, even if it sends nothing new (serve looks only when input
// waits), so a later pause starts its own clock. It reports whether it
// did. Loop only.
func (s *Server) resumeIfDrained(m *member) bool {
	if !m.paused || m.c.OutboundBuffered() > s.cfg.MaxOutbound/2 {
		return false
	}
	m.paused = false
	_ = m.c.Wake(nil)
	return true
}

// A member whose input is paused is cut off when it sends maxPausedInbound
// more bytes, or stays paused for maxPause unless it is behind in a room
// (flow.go), where SlowTimeout is its bound.
const (
	maxPausedInbound = 256 << 10
	maxPause         = 5 * time.Second
)
