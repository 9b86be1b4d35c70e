package chatserver

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// startServer runs a chat server on a free loopback port for one test.
func startServer(t testing.TB, edit func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// peer is a raw protocol peer with the shorthands these tests use.
type peer struct {
	*wiretest.Peer
	t    testing.TB
	conn net.Conn
}

func dial(t testing.TB, s *Server) *peer {
	t.Helper()
	p := wiretest.Dial(t, s.Addr())
	return &peer{Peer: p, t: t, conn: p.Conn.NetConn()}
}

// newPeer makes a peer of c, which closes when the test ends.
func newPeer(t testing.TB, c net.Conn) *peer {
	return &peer{Peer: wiretest.NewPeer(t, c), t: t, conn: c}
}

// hello dials and completes the handshake.
func hello(t testing.TB, s *Server) *peer {
	t.Helper()
	p := dial(t, s)
	w := p.Hello(&proto.Hello{Agent: "test"})
	if w.Server != s.ID() || w.V != wire.Version {
		t.Fatalf("welcome = %+v, want server %q v%d", w, s.ID(), wire.Version)
	}
	return p
}

// joinAs dials, says hello and joins room as user.
func joinAs(t testing.TB, s *Server, room, user string) (*peer, *proto.Joined) {
	t.Helper()
	p := hello(t, s)
	p.send(&proto.Join{Room: room, User: user})
	return p, p.expect(proto.TJoined).(*proto.Joined)
}

func (p *peer) send(m wire.Message) { p.t.Helper(); p.Send(m) }

func (p *peer) raw(b []byte) { p.t.Helper(); p.Raw(b) }

func (p *peer) next(timeout time.Duration) (wire.Message, error) { return p.Next(timeout) }

// expect reads frames until one of type t arrives, skipping Presence and
// Presences.
func (p *peer) expect(t wire.Type) wire.Message {
	p.t.Helper()
	var skip func(wire.Message) bool
	if t != proto.TPresence && t != proto.TPresences {
		skip = func(m wire.Message) bool {
			return m.FrameType() == proto.TPresence || m.FrameType() == proto.TPresences
		}
	}
	return p.ExpectType(t, skip)
}

// expectClosed reads the fatal error frame with the given code and then EOF.
func (p *peer) expectClosed(code proto.Code) { p.t.Helper(); p.ExpectClosed(code) }

func (p *peer) expectEOF() { p.t.Helper(); p.ExpectClosed(0) }
