package central

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gnet's global worker pool (ants) keeps a purge goroutine for
		// the life of the process.
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tlogHandler writes slog records through t.Log.
type tlogHandler struct {
	t     testing.TB
	attrs string
	mu    *sync.Mutex
	done  *bool
}

func (h tlogHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h tlogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message + h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if !*h.done {
		h.t.Log(b.String())
	}
	return nil
}
func (h tlogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		h.attrs += fmt.Sprintf(" %s=%v", a.Key, a.Value)
	}
	return h
}
func (h tlogHandler) WithGroup(string) slog.Handler { return h }

func testLogger(t testing.TB) *slog.Logger {
	h := tlogHandler{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() {
		h.mu.Lock()
		*h.done = true
		h.mu.Unlock()
	})
	return slog.New(h)
}

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
	cfg.Logger = testLogger(t)
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

// ctl is a test control-port client speaking pkg/wire.
type ctl struct {
	t      testing.TB
	name   string
	nc     net.Conn
	in     chan wire.Message
	mu     sync.Mutex
	err    error
	events []proto.ServerEvent // guarded by mu
}

func dialCtl(t testing.TB, addr string) *ctl {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial control: %v", err)
	}
	k := &ctl{t: t, nc: nc, in: make(chan wire.Message, 1024)}
	go k.read()
	t.Cleanup(func() { nc.Close() })
	return k
}

func (k *ctl) read() {
	defer close(k.in)
	var buf []byte
	tmp := make([]byte, 64<<10)
	for {
		t, body, n, err := wire.ParseFrame(buf, 0)
		if errors.Is(err, wire.ErrIncomplete) {
			m, rerr := k.nc.Read(tmp)
			if rerr != nil {
				return
			}
			buf = append(buf, tmp[:m]...)
			continue
		}
		if err != nil {
			k.mu.Lock()
			k.err = err
			k.mu.Unlock()
			return
		}
		msg, err := proto.Decode(t, body)
		buf = buf[n:]
		if err != nil {
			k.mu.Lock()
			k.err = err
			k.mu.Unlock()
			return
		}
		k.in <- msg
	}
}

func (k *ctl) send(m wire.Message) {
	k.t.Helper()
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		k.t.Fatalf("encode: %v", err)
	}
	if _, err := k.nc.Write(b); err != nil {
		k.t.Fatalf("%s: write: %v", k.name, err)
	}
}

// next returns the next frame, setting ServerEvents aside in events.
func (k *ctl) next(timeout time.Duration) (wire.Message, bool) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case m, ok := <-k.in:
			if !ok {
				return nil, false
			}
			if ev, ok := m.(*proto.ServerEvent); ok {
				// Server announcements interleave with everything; tests
				// that care read them from events.
				k.mu.Lock()
				k.events = append(k.events, *ev)
				k.mu.Unlock()
				continue
			}
			return m, true
		case <-tm.C:
			return nil, false
		}
	}
}

// expect returns the next frame that is not skipped by skip, failing after
// 5 s.
func expect[T wire.Message](k *ctl, skip func(wire.Message) bool) T {
	k.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, ok := k.next(time.Until(deadline))
		if !ok {
			var zero T
			k.t.Fatalf("%s: no %T arrived (closed or timed out)", k.name, zero)
		}
		if skip != nil && skip(m) {
			continue
		}
		v, ok := m.(T)
		if !ok {
			var zero T
			k.t.Fatalf("%s: got %T %+v, want %T", k.name, m, m, zero)
		}
		return v
	}
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
func (k *ctl) expectClosed() {
	k.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, ok := k.next(time.Until(deadline))
		if !ok {
			if time.Now().After(deadline) {
				k.t.Fatalf("%s: connection still open", k.name)
			}
			return
		}
		k.t.Logf("%s: before close: %T %+v", k.name, m, m)
	}
}

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
	k.name = s.Name
	k.send(&proto.Hello{V: wire.Version, Agent: "test/1", Token: s.Token})
	w := expect[*proto.Welcome](k, nil)
	if w.User != s.Name || w.Server != "central" {
		t.Fatalf("welcome %+v for %s", w, s.Name)
	}
	return k
}

// echoServer is a stand-in chat server: it answers Hello and Ping, which is
// all Central's echo check needs.
type echoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startEcho(t testing.TB) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, conns: map[net.Conn]struct{}{}}
	e.wg.Add(1)
	go e.serve()
	t.Cleanup(e.stop)
	return e
}

func (e *echoServer) addr() string { return e.ln.Addr().String() }

func (e *echoServer) stop() {
	e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

func (e *echoServer) serve() {
	defer e.wg.Done()
	for {
		nc, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		e.conns[nc] = struct{}{}
		e.mu.Unlock()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer nc.Close()
			var buf []byte
			tmp := make([]byte, 4096)
			for {
				t, body, n, err := wire.ParseFrame(buf, 0)
				if errors.Is(err, wire.ErrIncomplete) {
					k, rerr := nc.Read(tmp)
					if rerr != nil {
						return
					}
					buf = append(buf, tmp[:k]...)
					continue
				}
				if err != nil {
					return
				}
				msg, err := proto.Decode(t, body)
				buf = buf[n:]
				if err != nil {
					return
				}
				var out wire.Message
				switch m := msg.(type) {
				case *proto.Hello:
					out = &proto.Welcome{V: wire.Version, Server: "echo"}
				case *proto.Ping:
					out = &proto.Pong{ID: m.ID, At: m.At}
				}
				if out != nil {
					b, _ := wire.AppendFrame(nil, out)
					nc.Write(b)
				}
			}
		}()
	}
}

// addServer registers a chat server backed by an echo listener.
func (h *harness) addServer(t testing.TB, id string) *echoServer {
	t.Helper()
	e := startEcho(t)
	if _, err := h.api.Register(ctx(t), centralapi.RegisterServerRequest{ID: id, Addr: e.addr(), Secret: h.c.cfg.ClusterSecret}); err != nil {
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
	rooms, err := h.api.Rooms(ctx(t))
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
	return asA
}
