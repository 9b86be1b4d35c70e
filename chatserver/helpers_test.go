package chatserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gnet's shared worker pool outlives individual engines.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*Pool).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*Pool).ticktock"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		// Idle workers of that pool, which ran the enrolment of TLS
		// connections on their event loops.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"),
	)
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// startServer runs a chat server on a free loopback port for one test.
func startServer(t testing.TB, edit func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
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

// peer is a test client speaking the wire protocol over a plain net.Conn.
type peer struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	buf  []byte
}

func dial(t testing.TB, s *Server) *peer {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, conn: c, r: bufio.NewReaderSize(c, 64<<10)}
}

// hello dials and completes the handshake.
func hello(t testing.TB, s *Server) *peer {
	t.Helper()
	p := dial(t, s)
	p.send(&proto.Hello{V: wire.Version, Agent: "test"})
	w := p.expect(proto.TWelcome).(*proto.Welcome)
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

func (p *peer) send(m wire.Message) {
	p.t.Helper()
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		p.t.Fatalf("encode %T: %v", m, err)
	}
	p.raw(b)
}

func (p *peer) raw(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// next reads one frame, failing the test after timeout.
func (p *peer) next(timeout time.Duration) (wire.Message, error) {
	p.conn.SetReadDeadline(time.Now().Add(timeout))
	defer p.conn.SetReadDeadline(time.Time{})
	hdr, err := p.r.Peek(wire.LenSize)
	if err != nil {
		return nil, err
	}
	n, err := wire.FrameLen(hdr, 0)
	if err != nil {
		return nil, err
	}
	if cap(p.buf) < n {
		p.buf = make([]byte, n)
	}
	b := p.buf[:n]
	if _, err := io.ReadFull(p.r, b); err != nil {
		return nil, err
	}
	t, body, _, err := wire.ParseFrame(b, 0)
	if err != nil {
		return nil, err
	}
	return proto.Decode(t, body)
}

// expect reads frames until one of type t arrives, skipping Presence.
func (p *peer) expect(t wire.Type) wire.Message {
	p.t.Helper()
	for {
		m, err := p.next(5 * time.Second)
		if err != nil {
			p.t.Fatalf("waiting for frame 0x%02x: %v", byte(t), err)
		}
		if m.FrameType() == t {
			return m
		}
		if m.FrameType() == proto.TPresence && t != proto.TPresence {
			continue
		}
		p.t.Fatalf("waiting for frame 0x%02x: got %T %+v", byte(t), m, m)
	}
}

// expectClosed reads the fatal error frame with the given code and then EOF.
func (p *peer) expectClosed(code proto.Code) {
	p.t.Helper()
	for {
		m, err := p.next(5 * time.Second)
		if err != nil {
			p.t.Fatalf("waiting for error %s: %v", code, err)
		}
		if e, ok := m.(*proto.Error); ok {
			if e.Code != code || !e.Fatal {
				p.t.Fatalf("error frame = %+v, want fatal %s", e, code)
			}
			break
		}
	}
	p.expectEOF()
}

func (p *peer) expectEOF() {
	p.t.Helper()
	for {
		_, err := p.next(5 * time.Second)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return
		}
		p.t.Fatalf("want the server to close the connection, got %v", err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// raiseFDLimit lifts the soft open-file limit to the hard one, for tests
// that hold thousands of sockets.
func raiseFDLimit(t testing.TB) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("setrlimit: %v", err)
		}
	}
}
