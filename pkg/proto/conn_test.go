package proto_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
)

// listen serves each connection with answer, given the Hello it sent.
func listen(t *testing.T, answer func(*proto.Hello) wire.Message) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, ln, func(nc net.Conn) {
		c := proto.NewConn(nc, 0)
		m, err := c.Recv()
		if err != nil {
			return
		}
		h, _ := m.(*proto.Hello)
		if reply := answer(h); reply != nil {
			_ = c.Send(reply)
		}
		_, _ = c.Recv() // hold the connection until the dialer closes it
	})
	return ln.Addr().String()
}

func TestDialHandshake(t *testing.T) {
	welcome := func(h *proto.Hello) wire.Message {
		if _, err := proto.CheckHello(h, "this test"); err != nil {
			var f *proto.Fatal
			errors.As(err, &f)
			return &proto.Error{Code: f.Code, Reason: f.Reason, Fatal: true}
		}
		return &proto.Welcome{V: h.V, Server: "s1", Max: wire.MaxFrame}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, w, err := proto.Dial(ctx, nil, listen(t, welcome), &proto.Hello{Agent: "test/1"})
	if err != nil || w.Server != "s1" {
		t.Fatalf("Dial = %+v, %v", w, err)
	}
	if err := c.Send(&proto.Ping{ID: 1}); err != nil {
		t.Fatal(err)
	}
	c.Close()

	refuse := func(h *proto.Hello) wire.Message {
		h.V++ // as if the dialer spoke the next version
		return welcome(h)
	}
	_, _, err = proto.Dial(ctx, nil, listen(t, refuse), &proto.Hello{})
	var e *proto.Error
	if !errors.As(err, &e) || e.Code != proto.CodeVersion || proto.CodeOf(err) != proto.CodeVersion {
		t.Fatalf("Dial in another version = %v, want an Error{version}", err)
	}

	other := func(h *proto.Hello) wire.Message { return &proto.Welcome{V: wire.Version + 1} }
	if _, _, err = proto.Dial(ctx, nil, listen(t, other), &proto.Hello{}); err == nil {
		t.Fatal("Dial accepted a Welcome in another version")
	}

	pong := func(h *proto.Hello) wire.Message { return &proto.Pong{ID: 1} }
	if _, _, err = proto.Dial(ctx, nil, listen(t, pong), &proto.Hello{}); err == nil {
		t.Fatal("Dial accepted a Pong for a Welcome")
	}
}

func TestDialCancelUnblocksASilentListener(t *testing.T) {
	silent := func(*proto.Hello) wire.Message { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := proto.Dial(ctx, nil, listen(t, silent), &proto.Hello{})
	t.Logf("Dial returned after %v: %v", time.Since(start), err)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want context.Canceled", err)
	}
}

func TestCodeOf(t *testing.T) {
	_, _, _, tooLarge := wire.ParseFrame([]byte{0xff, 0xff, 0xff, 0xff}, 0)
	_, _, _, empty := wire.ParseFrame([]byte{0, 0, 0, 0}, 0)
	_, unknown := proto.Decode(0x7f, []byte{0x80})
	_, badBody := proto.Decode(proto.TPing, []byte{0x01})
	for _, tc := range []struct {
		err  error
		want proto.Code
	}{
		{nil, 0},
		{tooLarge, proto.CodeTooLarge},
		{empty, proto.CodeBadFrame},
		{unknown, proto.CodeUnknownType},
		{badBody, proto.CodeBadBody},
		{proto.Fatalf(proto.CodeRoomFull, "full"), proto.CodeRoomFull},
		{fmt.Errorf("wrapped: %w", proto.Fatalf(proto.CodeNoHello, "x")), proto.CodeNoHello},
		{&proto.Error{Code: proto.CodeShutdown}, proto.CodeShutdown},
		{errors.New("disk on fire"), proto.CodeInternal},
	} {
		if got := proto.CodeOf(tc.err); got != tc.want {
			t.Errorf("CodeOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if got := proto.ReasonOf(proto.Fatalf(proto.CodeBadJoin, "room %q", "x")); got != `room "x"` {
		t.Errorf("ReasonOf = %q", got)
	}
}

// TestCheckHelloAgent: a Hello's agent is a short printable name; one
// that was not UTF-8, or 4 KiB of control characters, was taken (black-box
// sweep, 2026-12-04).
func TestCheckHelloAgent(t *testing.T) {
	for agent, ok := range map[string]bool{
		"chat/1": true, "chatload/1": true, "": true, "bot/1 (été)": true,
		"\xff\xfe": false, "chat\x1b[2J": false, "a\nb": false, strings.Repeat("a", proto.MaxAgent+1): false,
	} {
		_, err := proto.CheckHello(&proto.Hello{V: wire.Version, Agent: agent}, "this test")
		if (err == nil) != ok || (!ok && proto.CodeOf(err) != proto.CodeBadRequest) {
			t.Errorf("agent %q: %v, want ok %v", agent, err, ok)
		}
	}
}

// TestCheckHelloVersions: a listener speaks every version from
// wire.MinVersion to wire.Version, answers in the Hello's own, and refuses
// the others with Error{version}.
func TestCheckHelloVersions(t *testing.T) {
	for v := wire.MinVersion - 1; v <= wire.Version+1; v++ {
		got, err := proto.CheckHello(&proto.Hello{V: v}, "this test")
		spoken := v >= wire.MinVersion && v <= wire.Version
		switch {
		case spoken && (err != nil || got != v):
			t.Errorf("CheckHello(v%d) = %d, %v; want %d", v, got, err, v)
		case !spoken && proto.CodeOf(err) != proto.CodeVersion:
			t.Errorf("CheckHello(v%d) = %d, %v; want Error{version}", v, got, err)
		}
	}
	// No version, and 2^64-1 as the decoder wraps it into an int: said so,
	// not "version 0" and "version -1" (black-box sweep, 2026-12-04).
	for v, want := range map[int]string{0: "names no protocol version", -1: "past 2^63-1"} {
		_, err := proto.CheckHello(&proto.Hello{V: v}, "this test")
		if proto.CodeOf(err) != proto.CodeVersion || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckHello(v%d) = %v; want Error{version} saying %q", v, err, want)
		}
	}
}

// pipeDialer hands Dial one end of an in-memory pipe whose other end says
// Welcome with a frame encoded once, sends after it what the test gives, and
// allocates nothing per connection of its own, so that the bytes a dial
// allocates are the dialer's.
type pipeDialer struct {
	welcome, then []byte
}

func (d pipeDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		var buf [512]byte
		if _, err := io.ReadFull(b, buf[:wire.LenSize]); err != nil {
			return
		}
		n, err := wire.FrameLen(buf[:wire.LenSize], 0)
		if err != nil || n > len(buf) {
			return
		}
		if _, err := io.ReadFull(b, buf[wire.LenSize:n]); err != nil {
			return
		}
		if _, err := b.Write(d.welcome); err != nil {
			return
		}
		if _, err := b.Write(d.then); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, b)
	}()
	return a, nil
}

// TestDialReadsThroughASmallBuffer: the connections Dial opens (probes,
// Central's control connection) read through a small buffer. Every probe of
// a client that cannot keep its probe connections open dials, and the
// 4 KB read buffer each dial allocated was a quarter of what 6,000 chatload
// members allocated (2,000 x 3, 2026-12-06), its collector's marking the
// spikes of their latency. A frame larger than the buffer still arrives
// whole.
func TestDialReadsThroughASmallBuffer(t *testing.T) {
	welcome, err := wire.AppendFrame(nil, &proto.Welcome{V: wire.Version, Server: "s1", Max: wire.MaxFrame})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("r", 3000)
	big, err := wire.AppendFrame(nil, &proto.Error{Code: proto.CodeInternal, Reason: long})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	c, _, err := proto.Dial(ctx, pipeDialer{welcome, big}, "pipe", &proto.Hello{Agent: "test/1"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Recv()
	if e, ok := m.(*proto.Error); err != nil || !ok || e.Reason != long {
		t.Fatalf("a frame of %d bytes after the Welcome: got %T, %v", len(big), m, err)
	}
	c.Close()

	// The pipe's own bytes (its channels, the serving goroutine) are
	// measured alone and taken off.
	d := pipeDialer{welcome: welcome}
	hello, err := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "test/1"})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(welcome))
	pipe := allocated(func() {
		nc, _ := d.DialContext(ctx, "tcp", "pipe")
		_, _ = nc.Write(hello)
		_, _ = io.ReadFull(nc, got)
		nc.Close()
	})
	dial := allocated(func() {
		c, _, err := proto.Dial(ctx, d, "pipe", &proto.Hello{Agent: "test/1"})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Logf("a dial and its handshake allocate %d bytes, %d of them the pipe's and the test's", dial, pipe)
	if own := int64(dial) - int64(pipe); own >= 1536 {
		t.Errorf("a dial and its handshake allocate %d bytes of their own, want under 1536 (a 4 KB read buffer each?)", own)
	}
}

// allocated returns the mean bytes one call of f allocates.
func allocated(f func()) uint64 {
	const calls = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range calls {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / calls
}
