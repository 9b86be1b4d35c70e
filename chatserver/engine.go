package chatserver

import (
	"errors"
	"fmt"
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

// OnOpen admits a connection unless the server is full or closing.
func (e *engine) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s := e.s
	n := s.conns.Add(1)
	m := &member{c: c, loop: s.loopFor(c.EventLoop()), idx: -1}
	c.SetContext(m)
	if !s.admit(m) {
		m.dead = true
		return errorFrame(proto.CodeServerFull, "server has too many connections (from your address or in all); try again later"), gnet.Close
	}
	switch {
	case s.closing.Load():
		return errorFrame(proto.CodeShutdown, "server is shutting down"), gnet.Close
	case n > int64(s.cfg.MaxConns):
		return errorFrame(proto.CodeServerFull, fmt.Sprintf("server has its maximum of %d connections", s.cfg.MaxConns)), gnet.Close
	}
	return nil, gnet.None
}

// OnClose removes the connection from its room.
func (e *engine) OnClose(c gnet.Conn, _ error) gnet.Action {
	s := e.s
	s.conns.Add(-1)
	if m, ok := c.Context().(*member); ok {
		s.release(m)
		m.dead, m.gone = true, true
		if m.room != nil {
			s.leave(m)
		}
	}
	return gnet.None
}

// OnTraffic parses every complete frame buffered for c.
func (e *engine) OnTraffic(c gnet.Conn) gnet.Action {
	return e.s.serve(c.Context().(*member))
}

// serve handles every complete frame in m's inbound buffer. Event loop only.
func (s *Server) serve(m *member) gnet.Action {
	c := m.c
	now := time.Now()
	for !m.dead {
		buffered := c.InboundBuffered()
		if buffered == 0 {
			m.partialAt = time.Time{}
			return gnet.None
		}
		if s.backPressure(m, buffered) {
			return gnet.None
		}
		if buffered < wire.LenSize {
			m.startPartial(now)
			return gnet.None
		}
		hdr, _ := c.Peek(wire.LenSize)
		n, err := wire.FrameLen(hdr, s.cfg.MaxFrame)
		if err != nil {
			return s.reject(m, classify(err), err.Error())
		}
		if buffered < n {
			m.startPartial(now)
			return gnet.None
		}
		m.partialAt, m.lastIn = time.Time{}, now
		frame, _ := c.Peek(n)
		err = s.handle(m, wire.Type(frame[wire.LenSize]), frame[wire.HeaderSize:])
		_, _ = c.Discard(n)
		if err != nil {
			var f *errFatal
			if errors.As(err, &f) {
				return s.reject(m, f.code, f.reason)
			}
			return s.reject(m, proto.CodeInternal, err.Error())
		}
	}
	// A cut-off member's input is never read: drop it rather than let it
	// pile up while the error frame drains; one that goes on sending that
	// much is not reading its error frame either.
	n, _ := c.Discard(c.InboundBuffered())
	if m.dropped += n; m.dropped > maxDropped && !m.gone {
		_ = c.Close()
	}
	return gnet.None
}

// startPartial notes when an incomplete frame began to arrive. Loop only.
func (m *member) startPartial(now time.Time) {
	if m.partialAt.IsZero() {
		m.partialAt = now
	}
}

func classify(err error) proto.Code {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return proto.CodeTooLarge
	case errors.Is(err, wire.ErrBody):
		return proto.CodeBadBody
	}
	return proto.CodeBadFrame
}

// reject answers a protocol violation with a fatal error frame and closes
// the offender's connection.
func (s *Server) reject(m *member, code proto.Code, reason string) gnet.Action {
	s.log.Debug("closing connection", "remote", m.c.RemoteAddr(), "code", code, "reason", reason)
	m.kill(code, reason)
	return gnet.None
}
