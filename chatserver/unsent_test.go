package chatserver

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
)

// dialSmallWindow dials s with a 4 KiB receive buffer and says Hello.
func dialSmallWindow(t *testing.T, s *Server) *peer {
	t.Helper()
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		return serr
	}}
	c, err := d.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	p := newPeer(t, c)
	p.Hello(&proto.Hello{Agent: "test"})
	return p
}

// readToEnd reads c until an error and returns it.
func readToEnd(t *testing.T, c net.Conn) error {
	t.Helper()
	buf := make([]byte, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the server's side still sends, and does not end: %v", err)
			}
			return err
		}
	}
}

// TestNonReaderClosedWithReset: a connection the server closes while its
// kernel still holds bytes the peer never took is reset, not closed
// gracefully: a graceful close left them, with the FIN behind them, to an
// orphan socket that lived as long as the peer kept its own (abuse sweep,
// 2026-12-03: 2.2 MB for 6 minutes, outside every budget). The peer sees
// the reset (ECONNRESET) rather than the bytes and then EOF.
func TestNonReaderClosedWithReset(t *testing.T) {
	pings := func(n int) []byte {
		var b []byte
		for i := range n {
			b, _ = wire.AppendFrame(b, &proto.Ping{ID: uint64(i), At: 1})
		}
		return b
	}
	t.Run("cut off as slow", func(t *testing.T) {
		s := startServer(t, func(c *Config) {
			c.MaxOutbound = 64 << 10
			c.Metrics = true
		})
		slow := dialSmallWindow(t, s)
		slow.send(&proto.Join{Room: "r", User: "slow"})
		slow.expect(proto.TJoined)
		sender, _ := joinAs(t, s, "r", "sender")
		// Messages the slow member never reads, until its backlog passes
		// -max-outbound (past what the kernels take).
		text := strings.Repeat("z", 4000)
		var frames []byte
		num := uint64(0)
		testkit.WaitFor(t, 30*time.Second, "the slow member to be cut off", func() bool {
			if s.Metrics().SlowConsumers > 0 {
				return true
			}
			frames = frames[:0]
			for range 16 {
				num++
				frames, _ = wire.AppendFrame(frames, &proto.Chat{Num: num, Text: text})
			}
			sender.raw(frames)
			return false
		})
		testkit.WaitFor(t, 30*time.Second, "the server to close it", func() bool { return s.Metrics().Conns == 1 })
		if err := readToEnd(t, slow.conn); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a member cut off with its backlog unsent: read ended with %v, want a reset", err)
		}
	})
	t.Run("timed out", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.IdleTimeout = time.Second })
		p := dialSmallWindow(t, s)
		// More Pongs than its window takes, then silence.
		p.raw(pings(1000))
		testkit.WaitFor(t, 30*time.Second, "the server to close it", func() bool { return s.Metrics().Conns == 0 })
		if err := readToEnd(t, p.conn); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a silent non-reader timed out with its Pongs unsent: read ended with %v, want a reset", err)
		}
	})
	t.Run("reading client gets its error and EOF", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.IdleTimeout = time.Second })
		p := hello(t, s)
		p.send(&proto.Ping{ID: 1})
		p.expect(proto.TPong)
		p.expectClosed(proto.CodeTimeout)
	})
}
