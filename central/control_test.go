package central

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/selection"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
)

func TestControlHandshakeErrors(t *testing.T) {
	h := startCentral(t, testConfig(t))
	s := h.register(t, "alice")
	frame := func(m wire.Message) []byte {
		b, err := wire.AppendFrame(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	huge := binary.BigEndian.AppendUint32(nil, wire.MaxFrame+1)
	cases := []struct {
		name string
		send []byte
		code proto.Code
	}{
		{"wrong token", frame(&proto.Hello{V: wire.Version, Token: "nope"}), proto.CodeUnauthorized},
		{"no token", frame(&proto.Hello{V: wire.Version}), proto.CodeUnauthorized},
		{"wrong version", frame(&proto.Hello{V: 99, Token: s.Token}), proto.CodeVersion},
		{"request before hello", frame(&proto.Request{To: []string{"bob"}}), proto.CodeNoHello},
		{"oversized frame", huge, proto.CodeTooLarge},
		// Before the Hello only MaxHelloFrame is buffered for a peer.
		{"big frame before hello", []byte{0, 0, byte((proto.MaxHelloFrame + 2) >> 8), 1, byte(proto.THello)}, proto.CodeTooLarge},
		{"empty frame", []byte{0, 0, 0, 0}, proto.CodeBadFrame},
		// As a chat server says: the type is not looked at before the
		// Hello (black-box sweep, 2026-12-05: Central said unknown_type).
		{"unknown type before hello", []byte{0, 0, 0, 1, 0x7f}, proto.CodeNoHello},
		{"bad body", []byte{0, 0, 0, 2, byte(proto.THello), 0xc1}, proto.CodeBadBody},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := dialCtl(t, h.c.ControlAddr())
			if _, err := k.nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			e := expect[*proto.Error](k, nil)
			if e.Code != tc.code || !e.Fatal {
				t.Fatalf("error %+v, want fatal %v", e, tc.code)
			}
			k.expectClosed()
		})
	}
	// The valid user is unaffected by all of the above.
	k := h.connectAs(t, s)
	k.send(&proto.Ping{ID: 7, At: 42})
	if p := expect[*proto.Pong](k, nil); p.ID != 7 || p.At != 42 {
		t.Fatalf("pong %+v", p)
	}
}

func TestControlNonFatalErrors(t *testing.T) {
	h := startCentral(t, testConfig(t))
	k, _ := h.connect(t, "alice")
	cases := []struct {
		name string
		msg  wire.Message
		code proto.Code
		ref  string
	}{
		{"answer unknown request", &proto.Answer{Req: "q-nothing", Accept: true}, proto.CodeNotFound, "q-nothing"},
		{"leave unknown room", &proto.LeaveRoom{Room: "r-nothing"}, proto.CodeNotFound, "r-nothing"},
		{"unreachable unknown room", &proto.Unreachable{Room: "r-nothing", Server: "s", Epoch: 1}, proto.CodeNotFound, "r-nothing"},
		{"second hello", &proto.Hello{V: wire.Version}, proto.CodeBadRequest, ""},
		{"chat-server frame", &proto.Chat{Num: 1, Text: "hi"}, proto.CodeUnknownType, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k.send(tc.msg)
			e := expect[*proto.Error](k, nil)
			if e.Code != tc.code || e.Fatal || e.Ref != tc.ref {
				t.Fatalf("error %+v, want non-fatal %v ref %q", e, tc.code, tc.ref)
			}
		})
	}
	k.send(&proto.Ping{ID: 1})
	expect[*proto.Pong](k, nil)
}

func TestControlReplacedConnection(t *testing.T) {
	h := startCentral(t, testConfig(t))
	s := h.register(t, "alice")
	old := h.connectAs(t, s)
	newer := h.connectAs(t, s)
	e := expect[*proto.Error](old, nil)
	if e.Code != proto.CodeConflict || !e.Fatal {
		t.Fatalf("old connection got %+v", e)
	}
	old.expectClosed()
	newer.send(&proto.Ping{ID: 3})
	expect[*proto.Pong](newer, nil)
	info, err := h.api.LookupClient(ctx(t), "alice")
	if err != nil || !info.Online {
		t.Fatalf("alice must still be online: %+v %v", info, err)
	}
}

func TestControlHelloTimeoutAndShutdown(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(t)
	cfg.Clock = clk.Now
	h := startCentral(t, cfg)
	silent := dialCtl(t, h.c.ControlAddr())
	testkit.WaitFor(t, 5*time.Second, "connection registered", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		return len(h.c.conns) == 1
	})
	clk.Advance(helloTimeout + time.Second)
	if e := expect[*proto.Error](silent, nil); e.Code != proto.CodeTimeout || !e.Fatal {
		t.Fatalf("silent connection got %+v", e)
	}
	k, _ := h.connect(t, "alice")
	h.c.Close()
	if e := expect[*proto.Error](k, nil); e.Code != proto.CodeShutdown || !e.Fatal {
		t.Fatalf("on shutdown got %+v", e)
	}
	k.expectClosed()
	if _, err := h.api.Health(ctx(t)); err == nil {
		t.Fatal("REST still answers after Close")
	}
}

// TestControlPortInUse: a busy control port is reported as such, not as
// gnet's "setsockopt: bad file descriptor".
func TestControlPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t)
	cfg.ControlListen = ln.Addr().String()
	c, err := New(cfg)
	if err == nil {
		c.Close()
		t.Fatal("New succeeded on a control port in use")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %q does not say the address is in use", err)
	}
	t.Logf("message: %v", err)
}

// TestHealthNamesControlPort: a client learns the control port from
// GET /healthz, so it needs only the REST address.
func TestHealthNamesControlPort(t *testing.T) {
	h := startCentral(t, testConfig(t))
	hl, err := h.api.Health(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := h.c.ControlAddr(); !strings.HasSuffix(want, fmt.Sprintf(":%d", hl.ControlPort)) {
		t.Fatalf("health control_port %d, control listens on %s", hl.ControlPort, want)
	}
}

// A member's latency vector on its control connection counts as a REST
// report does: checked the same way, rate limited the same way, and only a
// refusal is answered.
func TestControlLatency(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(t)
	cfg.Clock = clk.Now
	h := startCentral(t, cfg)
	h.addServer(t, "serv1")
	k, _ := h.connect(t, "alice")
	vecOf := func() map[string]selection.Sample {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		return maps.Clone(h.c.users["alice"].lat)
	}
	k.send(&proto.Latency{Servers: []proto.ServerRTT{{Server: "serv1", MedianUS: 12000, SpreadUS: 500, Count: 5}, {Server: "serv9", MedianUS: 1000, Count: 5}}})
	k.sync(nil) // no Error before the Pong: taken
	want := map[string]selection.Sample{"serv1": {Median: 12 * time.Millisecond, Spread: 500 * time.Microsecond, Count: 5}}
	if got := vecOf(); !maps.Equal(got, want) {
		t.Fatalf("vector %v, want %v (an unknown server is dropped)", got, want)
	}
	many := make([]proto.ServerRTT, maxVector+1)
	for i := range many {
		many[i] = proto.ServerRTT{Server: fmt.Sprintf("s%d", i), MedianUS: 1000, Count: 1}
	}
	bad := []struct {
		name string
		vec  []proto.ServerRTT
	}{
		{"past an hour", []proto.ServerRTT{{Server: "serv1", MedianUS: maxSampleUS + 1, Count: 5}}},
		{"bad id", []proto.ServerRTT{{Server: "serv 1", MedianUS: 1000, Count: 5}}},
		{"twice", []proto.ServerRTT{{Server: "serv1", MedianUS: 1000, Count: 5}, {Server: "serv1", MedianUS: 2000, Count: 5}}},
		{"too many", many},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			k.send(&proto.Latency{Servers: tc.vec})
			e := expect[*proto.Error](k, nil)
			if e.Code != proto.CodeBadRequest || e.Fatal || e.Ref != proto.LatencyRef {
				t.Fatalf("error %+v, want non-fatal bad_request ref %q", e, proto.LatencyRef)
			}
			if got := vecOf(); !maps.Equal(got, want) {
				t.Fatalf("vector %v after a refused report, want %v", got, want)
			}
		})
	}
	// The burst is shared with REST reports; the clock stands still.
	for i := range latencyBurst - 1 {
		k.send(&proto.Latency{Servers: []proto.ServerRTT{{Server: "serv1", MedianUS: int64(20000 + i), Count: 5}}})
	}
	k.sync(nil)
	k.send(&proto.Latency{Servers: []proto.ServerRTT{{Server: "serv1", MedianUS: 30000, Count: 5}}})
	if e := expect[*proto.Error](k, nil); e.Code != proto.CodeRateLimited || e.Fatal || e.Ref != proto.LatencyRef {
		t.Fatalf("error %+v, want non-fatal rate_limited ref %q", e, proto.LatencyRef)
	}
	if got := vecOf()["serv1"].Median; got != (20000+latencyBurst-2)*time.Microsecond {
		t.Fatalf("median %v, want the last report taken", got)
	}
	clk.Advance(time.Second)
	k.send(&proto.Latency{Servers: []proto.ServerRTT{{Server: "serv1", MedianUS: 30000, Count: 5}}})
	k.sync(nil)
	if got := vecOf()["serv1"].Median; got != 30*time.Millisecond {
		t.Fatalf("median %v a second later, want 30ms", got)
	}
	// A negative figure is no figure at all: like every negative integer
	// on the wire, a malformed body, and the connection ends.
	k.send(&proto.Latency{Servers: []proto.ServerRTT{{Server: "serv1", MedianUS: -1, Count: 5}}})
	if e := expect[*proto.Error](k, nil); e.Code != proto.CodeBadBody || !e.Fatal {
		t.Fatalf("error %+v for a negative median, want fatal bad_body", e)
	}
	k.expectClosed()
	if got := vecOf()["serv1"].Median; got != 30*time.Millisecond {
		t.Fatalf("median %v after a negative report, want 30ms", got)
	}
}

// TestControlTakesClientErrors checks that Central does not answer an
// Error with an Error (two peers that did would trade them forever): a
// non-fatal one is taken and the session goes on; a fatal one is the
// client closing, so Central closes the connection, writes nothing back,
// and the client is offline.
func TestControlTakesClientErrors(t *testing.T) {
	h := startCentral(t, testConfig(t))
	k, _ := h.connect(t, "alice")
	k.send(&proto.Error{Code: proto.CodeBadBody, Reason: "a frame we could not read"})
	k.send(&proto.Ping{ID: 5})
	if p := expect[*proto.Pong](k, skipAwaiting); p.ID != 5 {
		t.Fatalf("pong %+v, want id 5", p)
	}
	k.send(&proto.Error{Code: proto.CodeShutdown, Reason: "quitting", Fatal: true})
	k.ExpectClosedQuietly()
	testkit.WaitFor(t, 5*time.Second, "alice offline", func() bool {
		info, err := h.api.LookupClient(ctx(t), "alice")
		return err == nil && !info.Online
	})
}

// TestControlErrorBeforeHelloNotAnswered: an Error as the first frame on
// the control port was answered with a fatal no_hello Error, and one
// whose body did not decode with a bad_body one, at any time (black-box
// sweep, 2026-12-05). A non-fatal Error before the Hello is now taken and
// the Hello still awaited; a fatal or unreadable one closes the
// connection without a word.
func TestControlErrorBeforeHelloNotAnswered(t *testing.T) {
	h := startCentral(t, testConfig(t))
	garbled := []byte{0, 0, 0, 2, byte(proto.TError), 0x01} // body: msgpack 1, not a map
	t.Run("non-fatal, then hello", func(t *testing.T) {
		s := h.register(t, "early")
		k := dialCtl(t, h.c.ControlAddr())
		k.send(&proto.Error{Code: proto.CodeInternal, Reason: "not yet"})
		if w := k.Hello(&proto.Hello{Agent: "test/1", Token: s.Token}); w.User != "early" {
			t.Fatalf("welcome %+v", w)
		}
	})
	t.Run("fatal", func(t *testing.T) {
		k := dialCtl(t, h.c.ControlAddr())
		k.send(&proto.Error{Code: proto.CodeShutdown, Reason: "quitting", Fatal: true})
		k.ExpectClosedQuietly()
	})
	t.Run("unreadable", func(t *testing.T) {
		k := dialCtl(t, h.c.ControlAddr())
		k.Raw(garbled)
		k.ExpectClosedQuietly()
	})
	t.Run("unreadable after hello", func(t *testing.T) {
		k, _ := h.connect(t, "later")
		k.Raw(garbled)
		k.ExpectClosedQuietly()
	})
}

// TestControlFramesNeedTheirVersion: Central took a Latency frame
// (version 7) and a Holding's left rooms (version 8) from a client that
// said an older version in its Hello (black-box sweep, 2026-12-05), where
// a chat server refuses a frame newer than its connection's version. A
// frame or field the connection's version lacks is now refused, not
// acted on, and the session goes on.
func TestControlFramesNeedTheirVersion(t *testing.T) {
	h := startCentral(t, testConfig(t))
	s := h.register(t, "old")
	k := dialCtl(t, h.c.ControlAddr())
	k.send(&proto.Hello{V: 6, Agent: "test/1", Token: s.Token})
	if w := expect[*proto.Welcome](k, nil); w.V != 6 {
		t.Fatalf("welcome %+v, want version 6", w)
	}
	k.send(&proto.Latency{Servers: []proto.ServerRTT{{Server: "serv1", MedianUS: 12000, Count: 5}}})
	if e := expect[*proto.Error](k, skipAwaiting); e.Code != proto.CodeUnknownType || e.Fatal || !strings.Contains(e.Reason, "version 7") {
		t.Fatalf("a Latency on a version 6 connection: %+v, want a non-fatal unknown_type naming version 7", e)
	}
	k.send(&proto.Holding{Left: []string{"r-1"}})
	if e := expect[*proto.Error](k, skipAwaiting); e.Code != proto.CodeBadRequest || e.Fatal || !strings.Contains(e.Reason, "version 8") {
		t.Fatalf("a Holding with left rooms on a version 6 connection: %+v, want a non-fatal bad_request naming version 8", e)
	}
	k.send(&proto.Ping{ID: 9})
	if p := expect[*proto.Pong](k, skipAwaiting); p.ID != 9 {
		t.Fatalf("pong %+v, want id 9", p)
	}
}
