package central

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

// TestControlNonReaderClosedWithReset: a control connection Central closes
// after a fatal error while its kernel still holds replies the client
// never took is reset, not closed gracefully, which left them to an
// orphan socket for as long as the client kept its own (abuse sweep,
// 2026-12-03). The client sees the reset rather than the replies and EOF.
func TestControlNonReaderClosedWithReset(t *testing.T) {
	cfg := testConfig(t)
	cfg.ControlIdle = time.Second
	h := startCentral(t, cfg)
	s := h.register(t, "mute")
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		return serr
	}}
	c, err := d.Dial("tcp", h.c.ControlAddr())
	if err != nil {
		t.Fatal(err)
	}
	k := &ctl{Peer: wiretest.NewPeer(t, c), t: t, nc: c}
	k.Hello(&proto.Hello{Agent: "test/1", Token: s.Token})
	// More Pongs than its window takes, then silence until ControlIdle.
	var pings []byte
	for i := range 1000 {
		pings, _ = wire.AppendFrame(pings, &proto.Ping{ID: uint64(i + 1)})
	}
	k.Raw(pings)
	testkit.WaitFor(t, 30*time.Second, "Central to close it", func() bool { return h.c.ctrlPort.InUse() == 0 })
	buf := make([]byte, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err = c.Read(buf); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("a silent non-reader closed for its silence with its Pongs unsent: read ended with %v, want a reset", err)
	}
}
