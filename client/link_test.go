package client

import (
	"log/slog"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
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

// A beat (an empty Pong) is read without decoding or allocating; every
// other frame, a Pong with an ID or time included, decodes as proto.Decode
// decodes it.
func TestDecodeBeat(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    wire.Message
		beat bool
	}{
		{"beat", &proto.Pong{}, true},
		{"pong to a ping", &proto.Pong{ID: 7, At: 12345}, false},
		{"pong with a time only", &proto.Pong{At: 1}, false},
		{"ping", &proto.Ping{ID: 1}, false},
		{"ack", &proto.Ack{Num: 3, Seq: 9}, false},
	} {
		f, err := wire.AppendFrame(nil, tc.m)
		if err != nil {
			t.Fatal(err)
		}
		typ, body := wire.Type(f[wire.LenSize]), f[wire.HeaderSize:]
		got, err := decode(typ, body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		want, _ := proto.Decode(typ, body)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %#v, want %#v", tc.name, got, want)
		}
		if (got == wire.Message(beatPong)) != tc.beat {
			t.Errorf("%s: taken for a beat: %v, want %v", tc.name, !tc.beat, tc.beat)
		}
		if tc.beat {
			if n := testing.AllocsPerRun(100, func() { _, _ = decode(typ, body) }); n != 0 {
				t.Errorf("%s: %v allocations a read, want 0", tc.name, n)
			}
		}
	}
}

// BenchmarkDecode: a beat against a Pong that answers a Ping, which is
// decoded as any frame.
func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name string
		m    wire.Message
	}{{"frame=beat", &proto.Pong{}}, {"frame=pong", &proto.Pong{ID: 7, At: 12345}}} {
		f, err := wire.AppendFrame(nil, bc.m)
		if err != nil {
			b.Fatal(err)
		}
		typ, body := wire.Type(f[wire.LenSize]), f[wire.HeaderSize:]
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decode(typ, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
