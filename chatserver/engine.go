package chatserver

import (
	"errors"
	"time"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// engine is the Server's gnet event handler. The callbacks live on this
// unexported type so that they are not part of Server's API.
type engine struct {
	gnet.BuiltinEventEngine
	s *Server
}

// OnBoot runs once gnet has bound its listener; it records the engine.
// It runs before the event loops start, so what it sets needs no lock.
func (e *engine) OnBoot(eng gnet.Engine) gnet.Action {
	e.s.eng = eng
	e.s.booted <- nil
	return gnet.None
}

// OnTick runs first right after gnet has started the event loops: from
// then on connections may be enrolled on them. OnBoot comes too early for
// that, before the loops exist.
func (e *engine) OnTick() (time.Duration, gnet.Action) {
	e.s.loopsUpOnce.Do(func() { close(e.s.loopsUp) })
	return time.Hour, gnet.None
}

// OnOpen admits a connection unless the server is full or closing.
func (e *engine) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s := e.s
	s.conns.Add(1)
	m := &member{c: c, loop: s.loopFor(c.EventLoop()), idx: -1}
	m.lastRead.Store(s.now.Load())
	if rl, ok := c.Context().(*recordLayer); ok {
		m.rec = rl
	}
	c.SetContext(m)
	var refuse []byte
	switch {
	case !s.admit(m):
		refuse = errorFrame(proto.CodeServerFull, "server has too many connections (from your address or in all); try again later")
	case s.closing.Load():
		refuse = errorFrame(proto.CodeShutdown, "server is shutting down")
	default:
		if m.rec != nil && m.rec.pending != nil {
			// Records that arrived with the end of the handshake: have
			// OnTraffic look at them.
			_ = c.Wake(nil)
		}
		return nil, gnet.None
	}
	m.dead = true
	if m.rec != nil {
		m.send(refuse)
		return nil, gnet.Close
	}
	return refuse, gnet.Close
}

// OnClose removes the connection from its room.
func (e *engine) OnClose(c gnet.Conn, _ error) gnet.Action {
	s := e.s
	s.conns.Add(-1)
	if m, ok := c.Context().(*member); ok {
		s.release(m)
		defer m.loop.exit(m.loop.enter())
		m.dead, m.gone = true, true
		if m.loop.ackTo == m {
			m.loop.ackTo = nil
			m.loop.acks, m.loop.nacks, m.loop.ackBytes = m.loop.acks[:0], 0, 0
		}
		if m.loop.ackLast == m {
			m.loop.ackLast = nil
		}
		m.forgetBacklog()
		m.loop.stopBeats(m)
		if m.room != nil {
			s.leave(m)
		}
	}
	return gnet.None
}

// OnTraffic parses every complete frame buffered for c.
func (e *engine) OnTraffic(c gnet.Conn) gnet.Action {
	m := c.Context().(*member)
	start := m.loop.enter()
	var a gnet.Action
	if m.rec != nil {
		a = e.s.serveTLS(m)
	} else {
		a = e.s.serve(m, c)
	}
	m.loop.exit(start)
	return a
}

// inbound is where serve reads frames from: the gnet connection itself for
// plaintext, the decrypted bytes for TLS.
type inbound interface {
	InboundBuffered() int
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
}

// serve handles every complete frame in c, m's inbound bytes. Event loop
// only.
func (s *Server) serve(m *member, c inbound) gnet.Action {
	m.lastRead.Store(s.now.Load())
	now := m.loop.now
	for !m.dead {
		buffered := c.InboundBuffered()
		if buffered == 0 {
			m.partialAt = time.Time{}
			return gnet.None
		}
		if s.backPressure(m, buffered) {
			return gnet.None
		}
		limit := s.cfg.MaxFrame
		if !m.hello {
			limit = min(limit, proto.MaxHelloFrame)
		}
		t, body, n, err := wire.Next(c, limit)
		if errors.Is(err, wire.ErrIncomplete) {
			if m.partialAt.IsZero() {
				m.partialAt = now // a frame has begun: it must finish within FrameTimeout
			}
			return gnet.None
		}
		if err == nil {
			m.partialAt = time.Time{}
			if t == proto.TChat && m.room != nil && (s.overWindow(m, buffered) || s.pace(m, now, buffered)) {
				return gnet.None // the Chat stays unread until the member's rate allows it
			}
			m.loop.st.received(n)
			err = s.handle(m, t, body)
			_, _ = c.Discard(n)
		}
		if err != nil {
			return s.reject(m, proto.CodeOf(err), proto.ReasonOf(err))
		}
	}
	n, _ := c.Discard(c.InboundBuffered())
	m.drop(n)
	return gnet.None
}

// drop counts n bytes a cut-off member sent, discarded unread: its input
// is dropped rather than left to pile up while the error frame drains,
// and one that goes on sending past maxDropped is not reading its error
// frame either, so it is closed. Event loop only.
func (m *member) drop(n int) {
	if m.dropped += n; m.dropped > maxDropped && !m.gone {
		m.cut()
	}
}

// reject answers a protocol violation with a fatal error frame and closes
// the offender's connection.
func (s *Server) reject(m *member, code proto.Code, reason string) gnet.Action {
	s.log.Debug("closing connection", "remote", m.c.RemoteAddr(), "code", code, "reason", reason)
	m.kill(code, reason)
	return gnet.None
}
