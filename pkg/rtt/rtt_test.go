package rtt

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// silent never answers Hello; refuse answers it with a fatal Error.
var (
	silent = func(*proto.Hello) wire.Message { return nil }
	refuse = func(*proto.Hello) wire.Message {
		return &proto.Error{Code: proto.CodeServerFull, Reason: "full", Fatal: true}
	}
)

func TestProbe(t *testing.T) {
	tests := []struct {
		name    string
		delay   time.Duration
		samples int
	}{
		{"fast", 0, 5},
		{"delay=20ms", 20 * time.Millisecond, 5},
		{"one-sample", 10 * time.Millisecond, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := wiretest.EchoServer(t, tt.delay, nil)
			res, err := Probe(context.Background(), &net.Dialer{}, Target{Addr: s.Addr()}, tt.samples, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("median %v spread %v min %v max %v", res.Median, res.Spread, res.Min, res.Max)
			if res.Count != tt.samples || len(res.Samples) != tt.samples {
				t.Fatalf("count %d, samples %d, want %d", res.Count, len(res.Samples), tt.samples)
			}
			if res.Median < tt.delay || res.Median > tt.delay+50*time.Millisecond {
				t.Errorf("median %v, want within [%v, %v]", res.Median, tt.delay, tt.delay+50*time.Millisecond)
			}
			if res.Min > res.Median || res.Median > res.Max || res.Spread < 0 {
				t.Errorf("inconsistent summary %+v", res)
			}
		})
	}
}

func TestProbeFailures(t *testing.T) {
	silent := wiretest.EchoServer(t, 0, silent)
	refusing := wiretest.EchoServer(t, 0, refuse)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name    string
		addr    string
		samples int
		want    error
	}{
		{"no-samples", silent.Addr(), 0, ErrNoSamples},
		{"no-welcome", silent.Addr(), 3, context.DeadlineExceeded},
		{"server-error", refusing.Addr(), 3, nil},
		{"refused", closedAddr, 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := Probe(context.Background(), nil, Target{Addr: tt.addr}, tt.samples, 300*time.Millisecond)
			took := time.Since(start)
			t.Logf("err %v after %v", err, took)
			if err == nil {
				t.Fatal("expected an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if took > 2*time.Second {
				t.Errorf("took %v, timeout was 300ms", took)
			}
		})
	}
}

func TestProbeCancel(t *testing.T) {
	s := wiretest.EchoServer(t, 0, silent)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := Probe(ctx, nil, Target{Addr: s.Addr()}, 3, 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("cancel took %v", took)
	}
}

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name           string
		in             []time.Duration
		median, spread time.Duration
	}{
		{"empty", nil, 0, 0},
		{"one", ms(7), 7 * time.Millisecond, 0},
		{"odd", ms(50, 10, 30, 20, 40), 30 * time.Millisecond, 20 * time.Millisecond},
		{"even", ms(10, 20, 30, 40), 25 * time.Millisecond, 15 * time.Millisecond},
		{"outlier", ms(40, 41, 40, 42, 400), 41 * time.Millisecond, 2 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Summarize(tt.in)
			if r.Median != tt.median || r.Spread != tt.spread || r.Count != len(tt.in) {
				t.Errorf("got median %v spread %v count %d, want %v %v %d", r.Median, r.Spread, r.Count, tt.median, tt.spread, len(tt.in))
			}
		})
	}
}

func TestProberRound(t *testing.T) {
	slow := wiretest.EchoServer(t, 30*time.Millisecond, nil)
	var targets []Target
	for i := range 6 {
		targets = append(targets, Target{ID: string(rune('a' + i)), Addr: slow.Addr()})
	}
	targets = append(targets, Target{ID: "dead", Addr: wiretest.EchoServer(t, 0, silent).Addr()})
	cd := &countingDialer{}
	cfg := DefaultConfig()
	cfg.Dialer = cd
	cfg.Samples = 3
	cfg.Concurrency = 2
	cfg.Timeout = 500 * time.Millisecond
	cfg.Keep = 0 // open connections count the probes running
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := p.Round(context.Background(), targets)
	if len(res) != len(targets) {
		t.Fatalf("%d results, want %d", len(res), len(targets))
	}
	for id, r := range res {
		if id == "dead" {
			if r.Err == nil {
				t.Errorf("dead server reported no error: %+v", r)
			}
			continue
		}
		if r.Err != nil || r.Count != 3 || r.Median < 30*time.Millisecond {
			t.Errorf("%s: %+v", id, r)
		}
	}
	t.Logf("max concurrent probes: %d", cd.max.Load())
	if m := cd.max.Load(); m > 2 || m < 1 {
		t.Errorf("saw %d concurrent probes, limit 2", m)
	}
}

func TestProberConfig(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"samples", func(c *Config) { c.Samples = 0 }},
		{"timeout", func(c *Config) { c.Timeout = 0 }},
		{"concurrency", func(c *Config) { c.Concurrency = 0 }},
		{"jitter", func(c *Config) { c.Jitter = 2 }},
		{"keep", func(c *Config) { c.Keep = -time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			if _, err := New(c); err == nil {
				t.Fatal("expected an error")
			}
		})
	}
}

func TestProberRun(t *testing.T) {
	s := wiretest.EchoServer(t, 0, nil)
	p, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var rounds atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, 20*time.Millisecond, func() []Target { return []Target{{ID: "s", Addr: s.Addr()}} },
			func(r map[string]Result) {
				if r["s"].Err == nil && r["s"].Count == 5 {
					rounds.Add(1)
				}
			})
	}()
	testkit.WaitFor(t, 5*time.Second, "three good rounds", func() bool { return rounds.Load() >= 3 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

// The rounds of a Prober share one connection per server: one dial,
// however many rounds, and Close closes it.
func TestProberKeepsConnections(t *testing.T) {
	a, b := wiretest.EchoServer(t, 0, nil), wiretest.EchoServer(t, 0, nil)
	targets := []Target{{ID: "a", Addr: a.Addr()}, {ID: "b", Addr: b.Addr()}}
	p, cd := keepingProber(t, time.Minute)
	for i := range 4 {
		for id, r := range p.Round(context.Background(), targets) {
			if r.Err != nil || r.Count != 3 {
				t.Fatalf("round %d, %s: %+v", i, id, r)
			}
		}
	}
	if n, open := cd.dials.Load(), cd.active.Load(); n != 2 || open != 2 {
		t.Fatalf("4 rounds of 2 servers: %d dials, %d connections open; want 2 and 2", n, open)
	}
	p.Close()
	if open := cd.active.Load(); open != 0 {
		t.Fatalf("%d connections open after Close", open)
	}
	// A closed Prober still probes, and keeps nothing.
	if r := p.Round(context.Background(), targets[:1])["a"]; r.Err != nil || cd.active.Load() != 0 {
		t.Fatalf("after Close: %+v, %d connections open", r, cd.active.Load())
	}
}

// A kept connection whose server went away meanwhile (restarted on the
// same address, as a crashed chat server comes back) fails before its
// first Pong; the probe dials again and succeeds, within one round. A
// server that stays away fails the probe, and nothing is kept for it.
func TestProberRedialsEndedConnection(t *testing.T) {
	old := wiretest.EchoServer(t, 0, nil)
	addr := old.Addr()
	targets := []Target{{ID: "s", Addr: addr}}
	p, cd := keepingProber(t, time.Minute)
	if r := p.Round(context.Background(), targets)["s"]; r.Err != nil {
		t.Fatal(r.Err)
	}
	old.Stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	back := wiretest.EchoOn(t, ln, 0, nil)
	if r := p.Round(context.Background(), targets)["s"]; r.Err != nil || r.Count != 3 {
		t.Fatalf("the round after the restart: %+v", r)
	}
	if n := cd.dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2 (the first round's, the redial)", n)
	}
	back.Stop()
	if r := p.Round(context.Background(), targets)["s"]; r.Err == nil {
		t.Fatalf("a stopped server measured: %+v", r)
	}
	if open := cd.active.Load(); open != 0 {
		t.Fatalf("%d connections open to a stopped server", open)
	}
}

// A connection unused for Keep is closed at the next probe of any
// server, not reused; one used within Keep is reused.
func TestProberKeepExpires(t *testing.T) {
	a, b := wiretest.EchoServer(t, 0, nil), wiretest.EchoServer(t, 0, nil)
	p, cd := keepingProber(t, time.Minute)
	if r := p.Round(context.Background(), []Target{{ID: "a", Addr: a.Addr()}})["a"]; r.Err != nil {
		t.Fatal(r.Err)
	}
	if h := p.take(b.Addr(), time.Now().Add(59*time.Second)); h != nil || cd.active.Load() != 1 {
		t.Fatalf("within Keep: took %v for another server, %d open; want nothing taken, a's kept", h, cd.active.Load())
	}
	if h := p.take(b.Addr(), time.Now().Add(time.Minute)); h != nil || cd.active.Load() != 0 {
		t.Fatalf("after Keep: took %v, %d open; want a's closed", h, cd.active.Load())
	}
}

func keepingProber(t *testing.T, keep time.Duration) (*Prober, *countingDialer) {
	t.Helper()
	cd := &countingDialer{}
	cfg := DefaultConfig()
	cfg.Dialer, cfg.Samples, cfg.Keep = cd, 3, keep
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, cd
}

// countingDialer tracks how many of its connections are open at once,
// and how many it dialled.
type countingDialer struct {
	d                  net.Dialer
	active, max, dials atomic.Int32
}

type countedConn struct {
	net.Conn
	once sync.Once
	d    *countingDialer
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.d.active.Add(-1) })
	return c.Conn.Close()
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.dials.Add(1)
	n := d.active.Add(1)
	for {
		m := d.max.Load()
		if n <= m || d.max.CompareAndSwap(m, n) {
			break
		}
	}
	return &countedConn{Conn: c, d: d}, nil
}

// A server that sends its Pongs ahead of the Pings cannot look nearer than
// it is: Ping IDs are random. With IDs counting 1, 2, 3 a server 200 ms
// away measured 0.001 ms (abuse probe, 2026-12-03).
func TestPongsAheadDoNotCount(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const delay = 30 * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		c := proto.NewConn(nc, 0)
		for {
			m, err := c.Recv()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *proto.Hello:
				c.Send(&proto.Welcome{V: m.V, Server: "liar"})
				for id := range uint64(64) {
					c.Send(&proto.Pong{ID: id + 1})
				}
			case *proto.Ping:
				time.Sleep(delay)
				c.Send(&proto.Pong{ID: m.ID, At: m.At})
			}
		}
	}()
	res, err := Probe(context.Background(), &net.Dialer{}, Target{Addr: ln.Addr().String()}, 5, 10*time.Second)
	ln.Close()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("median %v, min %v", res.Median, res.Min)
	if res.Min < delay {
		t.Fatalf("min %v: a Pong sent ahead was taken for an answer (the server answers after %v)", res.Min, delay)
	}
}

// TestOtherServerNotMeasured: a server registered at another's address
// (a look-alike, or a server restarted under a new id) was measured as
// that other server, and new rooms were placed on it and stuck (fuzz
// sweep, 2026-12-03). A Welcome naming another server fails the probe,
// on a new connection and on a kept one; a Welcome naming none (a
// stand-in) and a target without an id check nothing.
func TestOtherServerNotMeasured(t *testing.T) {
	serv1 := wiretest.EchoServer(t, 0, func(*proto.Hello) wire.Message { return &proto.Welcome{V: wire.Version, Server: "serv1"} })
	anon := wiretest.EchoServer(t, 0, nil)
	for _, tc := range []struct {
		t     Target
		other bool
	}{
		{Target{ID: "look", Addr: serv1.Addr()}, true},
		{Target{ID: "serv1", Addr: serv1.Addr()}, false},
		{Target{Addr: serv1.Addr()}, false},
		{Target{ID: "look", Addr: anon.Addr()}, false},
	} {
		_, err := Probe(context.Background(), nil, tc.t, 2, 5*time.Second)
		if errors.Is(err, ErrOtherServer) != tc.other || !tc.other && err != nil {
			t.Errorf("Probe %+v: %v", tc.t, err)
		}
	}
	p, cd := keepingProber(t, time.Minute)
	defer p.Close()
	targets := []Target{{ID: "serv1", Addr: serv1.Addr()}, {ID: "look", Addr: serv1.Addr()}}
	for round := range 3 {
		res := p.Round(context.Background(), targets)
		if r := res["serv1"]; r.Err != nil || r.Count == 0 {
			t.Errorf("round %d, serv1: %+v", round, r)
		}
		if r := res["look"]; !errors.Is(r.Err, ErrOtherServer) || r.Count != 0 {
			t.Errorf("round %d, look (serv1's address): %+v, want %v", round, r, ErrOtherServer)
		}
	}
	t.Logf("%d dials for 3 rounds", cd.dials.Load())
}
