package client

import (
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/proto"
)

// Frames sent from several goroutines at once, while the peer does not
// read (so the socket fills and the writer goroutine waits on it with a
// backlog behind), all arrive, each once, and each goroutine's in the
// order it sent them.
func TestLinkSendKeepsOrderAcrossFullSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept() // the kernel completed the connect already
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// A small send buffer fills soon. (Not a small receive buffer: shrunk
	// under an advertised window, it drops segments and stalls the test
	// on retransmission timers.)
	_ = nc.(*net.TCPConn).SetWriteBuffer(4096)

	s := &Session{log: slog.New(slog.DiscardHandler), done: make(chan struct{})}
	l := &link{s: s, pc: proto.NewConn(nc, 0), conn: nc, wake: make(chan struct{}, 1)}
	s.wg.Add(1)
	go l.writeLoop()

	const senders, each = 4, 2000
	text := string(make([]byte, 200)) // big enough to fill the socket soon
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				l.send(&proto.Chat{Num: uint64(g*each + i + 1), Text: text})
			}
		}()
	}
	// Read only once the senders have filled the socket (or finished).
	filled := make(chan struct{})
	go func() { wg.Wait(); close(filled) }()
	select {
	case <-filled:
	case <-time.After(200 * time.Millisecond):
	}
	l.mu.Lock()
	queued := len(l.buf)
	l.mu.Unlock()
	t.Logf("queued for the writer when reading began: %d bytes", queued)

	pc := proto.NewConn(peer, 0)
	_ = peer.SetReadDeadline(time.Now().Add(30 * time.Second))
	last := make([]uint64, senders)
	for n := range senders * each {
		m, err := pc.Recv()
		if err != nil {
			l.mu.Lock()
			t.Fatalf("after %d frames: %v (%d bytes queued, closing %v)", n, err, len(l.buf), l.closing)
		}
		c, ok := m.(*proto.Chat)
		if !ok {
			t.Fatalf("frame %d: %T", n, m)
		}
		g := (c.Num - 1) / each
		if c.Num <= last[g] {
			t.Fatalf("sender %d: message %d after %d", g, c.Num, last[g])
		}
		last[g] = c.Num
	}
	for g, id := range last {
		if want := uint64((g + 1) * each); id != want {
			t.Fatalf("sender %d: last message %d, want %d", g, id, want)
		}
	}
	<-filled
	l.close(false)
	s.wg.Wait()
}
