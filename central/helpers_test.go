package central

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// fakeClock is an injectable clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.RESTListen = "127.0.0.1:0"
	cfg.ControlListen = "127.0.0.1:0"
	cfg.Logger = testkit.Logger(t)
	cfg.ScanInterval = 200 * time.Millisecond
	cfg.AwaitingEvery = 100 * time.Millisecond
	cfg.AssignRetry = 100 * time.Millisecond
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.OfflineAfter = 15 * time.Second
	cfg.Policy.MinDwell = 0
	// Tests and benchmarks request far faster than a person; the limits
	// have their own test.
	cfg.RequestRate, cfg.RequestBurst = 1e6, 1e6
	return cfg
}

type harness struct {
	c   *Central
	api *centralapi.Client
}

// startCentral starts a Central on loopback ports and stops it on cleanup.
func startCentral(t testing.TB, cfg Config) *harness {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &harness{c: c, api: centralapi.NewClient(c.RESTAddr(), nil)}
}

func ctx(t testing.TB) context.Context {
	cx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return cx
}

// register registers a user over REST.
func (h *harness) register(t testing.TB, name string) centralapi.Session {
	t.Helper()
	s, err := h.api.RegisterClient(ctx(t), name, "")
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return s
}

// ctl is a test control-port client: a raw protocol peer.
type ctl struct {
	*wiretest.Peer
	t    testing.TB
	name string
	nc   net.Conn
	// events collects the ServerEvents expect passed over: server
	// announcements interleave with everything, and tests that care read
	// them here.
	events []proto.ServerEvent
	// listed collects the ServerList frames after the Welcome (version 9).
	listed []proto.ServerList
}

func dialCtl(t testing.TB, addr string) *ctl {
	t.Helper()
	p := wiretest.Dial(t, addr)
	return &ctl{Peer: p, t: t, nc: p.Conn.NetConn()}
}

func (k *ctl) send(m wire.Message) { k.t.Helper(); k.Send(m) }

// expect returns the next frame that is not skipped by skip, failing after
// 5 s.
func expect[T wire.Message](k *ctl, skip func(wire.Message) bool) T {
	k.t.Helper()
	return wiretest.Expect[T](k.Peer, func(m wire.Message) bool {
		switch ev := m.(type) {
		case *proto.ServerEvent:
			k.events = append(k.events, *ev)
			return true
		case *proto.ServerList:
			k.listed = append(k.listed, *ev)
			return true
		}
		return skip != nil && skip(m)
	})
}

// skipAwaiting skips the periodic AWAITING_REQ status.
func skipAwaiting(m wire.Message) bool {
	s, ok := m.(*proto.Status)
	return ok && s.Code == proto.AwaitingReq
}

// expectStatus expects a Status with code (AWAITING_REQ skipped unless
// asked for).
func (k *ctl) expectStatus(code proto.StatusCode) *proto.Status {
	k.t.Helper()
	skip := skipAwaiting
	if code == proto.AwaitingReq {
		skip = nil
	}
	s := expect[*proto.Status](k, skip)
	if s.Code != code {
		k.t.Fatalf("%s: status %v (%q), want %v", k.name, s.Code, s.Detail, code)
	}
	return s
}

// expectClosed waits for the connection to be closed by Central.
func (k *ctl) expectClosed() { k.t.Helper(); k.ExpectClosed(0) }

// connect registers name and opens its control connection.
func (h *harness) connect(t testing.TB, name string) (*ctl, centralapi.Session) {
	t.Helper()
	s := h.register(t, name)
	k := h.connectAs(t, s)
	return k, s
}

func (h *harness) connectAs(t testing.TB, s centralapi.Session) *ctl {
	t.Helper()
	k := dialCtl(t, h.c.ControlAddr())
	k.name, k.Name = s.Name, s.Name
	w := k.Hello(&proto.Hello{Agent: "test/1", Token: s.Token})
	if w.User != s.Name || w.Server != "central" {
		t.Fatalf("welcome %+v for %s", w, s.Name)
	}
	return k
}

// addServer registers a chat server backed by an echo listener.
func (h *harness) addServer(t testing.TB, id string) *wiretest.Echo {
	t.Helper()
	e := wiretest.EchoServer(t, 0, nil)
	if _, err := h.api.Register(ctx(t), centralapi.RegisterServerRequest{ID: id, Addr: e.Addr(), Secret: h.c.cfg.ClusterSecret}); err != nil {
		t.Fatalf("register server %s: %v", id, err)
	}
	return e
}

func ms(d int) centralapi.Sample {
	return centralapi.SampleOf(time.Duration(d)*time.Millisecond, time.Millisecond, 5)
}

func (h *harness) latency(t testing.TB, s centralapi.Session, v map[string]centralapi.Sample) {
	t.Helper()
	if err := h.api.PutLatency(ctx(t), s.Name, s.Token, v); err != nil {
		t.Fatalf("latency %s: %v", s.Name, err)
	}
}

// roomOf returns the room with id from the REST listing.
func (h *harness) roomOf(t testing.TB, id string) (centralapi.RoomInfo, bool) {
	t.Helper()
	rooms, err := h.api.Rooms(ctx(t), h.c.cfg.ClusterSecret)
	if err != nil {
		t.Fatalf("rooms: %v", err)
	}
	for _, r := range rooms {
		if r.ID == id {
			return r, true
		}
	}
	return centralapi.RoomInfo{}, false
}

// chat makes a and b (already connected) agree on a room and returns the
// Assign both got (acknowledged).
func chat(t testing.TB, a, b *ctl) *proto.Assign {
	t.Helper()
	a.send(&proto.Request{To: []string{b.name}})
	ack := a.expectStatus(proto.AckConn)
	a.expectStatus(proto.ReqSent)
	in := expect[*proto.Incoming](b, nil)
	if in.Req != ack.Req || in.From != a.name {
		t.Fatalf("incoming %+v for req %s", in, ack.Req)
	}
	b.send(&proto.Answer{Req: in.Req, Accept: true})
	acc := a.expectStatus(proto.ReqAccepted)
	if acc.Room == "" {
		t.Fatal("REQ_ACCEPTED without a room")
	}
	asA := expect[*proto.Assign](a, skipAwaiting)
	b.expectStatus(proto.ReqAccepted)
	asB := expect[*proto.Assign](b, nil)
	if asA.Room != acc.Room || asB.Room != acc.Room || asA.Epoch != 1 || asB.Epoch != 1 || asA.Server.ID != asB.Server.ID {
		t.Fatalf("assign mismatch: %+v / %+v, room %s", asA, asB, acc.Room)
	}
	a.send(&proto.AssignAck{Room: asA.Room, Epoch: asA.Epoch})
	b.send(&proto.AssignAck{Room: asB.Room, Epoch: asB.Epoch})
	// A retry of the Assign may have gone out (on the real clock) before
	// the acknowledgement arrived: it is skipped.
	retried := func(m wire.Message) bool {
		as, ok := m.(*proto.Assign)
		return skipAwaiting(m) || ok && as.Room == asA.Room && as.Epoch == asA.Epoch
	}
	a.sync(retried)
	b.sync(retried)
	return asA
}

// sync makes a Ping round trip, skipping what skip says: once it returns,
// Central has handled everything k sent before (frames of one connection
// are handled in order), so a test that moves the fake clock next cannot
// have a retry overtake an acknowledgement still on its way.
func (k *ctl) sync(skip func(wire.Message) bool) {
	k.t.Helper()
	k.send(&proto.Ping{ID: 0x5c})
	if p := expect[*proto.Pong](k, skip); p.ID != 0x5c {
		k.t.Fatalf("%s: pong %+v", k.name, p)
	}
}
