package dashboard_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"nearchat/central"
	"nearchat/central/dashboard"
	"nearchat/chatserver"
	"nearchat/client"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/delaynet"
	"nearchat/pkg/metricshttp"
	"nearchat/pkg/testkit"
)

// cluster is a real Central, chat servers and clients on loopback, with
// metrics endpoints and the dashboard, all in this process. Clients see
// emulated round-trip times (delaynet), so placement has a clear answer.
type cluster struct {
	t        *testing.T
	cen      *central.Central
	api      *centralapi.Client
	dash     *dashboard.Server
	cenProm  string // Central's metrics address
	servers  map[string]*chatserver.Server
	prom     map[string]string // chat server ID -> metrics address
	delays   *delaynet.Delays
	restAddr string
	ctlAddr  string
}

const secret = "dashboard-test"

// rtts are the emulated round trips from every client to each server.
var rtts = map[string]time.Duration{"serv1": 40 * time.Millisecond, "serv3": 60 * time.Millisecond, "serv4": 80 * time.Millisecond}

func logger(t *testing.T) *slog.Logger { return testkit.LoggerAt(t, slog.LevelWarn) }

func startCluster(t *testing.T) *cluster {
	t.Helper()
	cfg := central.DefaultConfig()
	cfg.RESTListen, cfg.ControlListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.OfflineAfter = 3 * time.Second
	cfg.ScanInterval = 500 * time.Millisecond
	cfg.AssignRetry = 300 * time.Millisecond
	cfg.ClusterSecret = secret
	cfg.Logger = logger(t)
	cen, err := central.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cen.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	c := &cluster{t: t, cen: cen, api: centralapi.NewClient(cen.RESTAddr(), nil), servers: map[string]*chatserver.Server{},
		prom: map[string]string{}, delays: &delaynet.Delays{}, restAddr: cen.RESTAddr(), ctlAddr: cen.ControlAddr()}
	m, err := metricshttp.Listen("127.0.0.1:0", cen.Collector())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	c.cenProm = m.Addr()
	c.dash, err = dashboard.New(dashboard.Config{Listen: "127.0.0.1:0", Interval: 100 * time.Millisecond, Logger: logger(t)}, cen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.dash.Close() })
	return c
}

// startServer starts a chat server registered with Central, with its own
// metrics endpoint, and waits until Central lists it.
func (c *cluster) startServer(id string) {
	t := c.t
	t.Helper()
	cfg := chatserver.DefaultConfig()
	cfg.Listen, cfg.ID, cfg.Central, cfg.Secret = "127.0.0.1:0", id, c.restAddr, secret
	cfg.Heartbeat = 200 * time.Millisecond
	cfg.Loops = 2
	cfg.Logger = logger(t)
	s, err := chatserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	m, err := metricshttp.Listen("127.0.0.1:0", s.Collector())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	c.servers[id], c.prom[id] = s, m.Addr()
	c.delays.Set(s.Addr(), rtts[id]/2)
	testkit.WaitFor(t, 10*time.Second, id+" registered", func() bool {
		list, err := c.api.Servers(context.Background())
		if err != nil {
			return false
		}
		for _, v := range list {
			if v.ID == id && v.Up {
				return true
			}
		}
		return false
	})
}

// user starts a client and waits for its first latency report.
func (c *cluster) user(name string) *client.Client {
	t := c.t
	t.Helper()
	opts := client.DefaultConfig()
	opts.Central, opts.Control, opts.User = c.restAddr, c.ctlAddr, name
	opts.Dialer = &delaynet.Dialer{Delay: c.delays.Get}
	opts.ProbeEvery = 300 * time.Millisecond
	opts.Probe.Samples = 3
	opts.Logger = logger(t)
	cl, err := client.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-cl.Reported():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no latency report within 10s", name)
	}
	return cl
}

// next returns u's next controller event of type T.
func next[T client.Event](t *testing.T, u *client.Client, timeout time.Duration) T {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-u.Events():
			if e, ok := ev.(T); ok {
				return e
			}
		case <-deadline:
			var zero T
			t.Fatalf("%s: no %T within %v", u.User(), zero, timeout)
			return zero
		}
	}
}

// chat has a ask b for a chat, b accept, and returns both sessions once
// they are in the room.
func (c *cluster) chat(a, b *client.Client) (*client.Session, *client.Session, string) {
	t := c.t
	t.Helper()
	// Both must have measured every server, in the order of the emulated
	// RTTs (a round on a loaded machine can come out late), before the
	// request, so the room starts where the emulation says.
	testkit.WaitFor(t, 30*time.Second, "latency vectors that rank the servers as emulated", func() bool {
		snap := c.cen.Snapshot()
		n := 0
		for _, cv := range snap.Clients {
			ok := len(cv.RTT) == len(c.servers)
			for a := range cv.RTT {
				for b := range cv.RTT {
					if rtts[a] < rtts[b] && cv.RTT[a] >= cv.RTT[b] {
						ok = false
					}
				}
			}
			if ok {
				n++
			}
		}
		return n == 2
	})
	if err := a.Request(b.User()); err != nil {
		t.Fatal(err)
	}
	in := next[client.Incoming](t, b, 10*time.Second)
	if err := b.Answer(in.Req, true); err != nil {
		t.Fatal(err)
	}
	ra := next[client.RoomReady](t, a, 10*time.Second)
	rb := next[client.RoomReady](t, b, 10*time.Second)
	return ra.Session, rb.Session, ra.Assign.Server.ID
}

// roomServer returns the server Central has the only room on.
func (c *cluster) roomServer() string {
	snap := c.cen.Snapshot()
	if len(snap.Rooms) != 1 {
		return ""
	}
	return snap.Rooms[0].Server
}

// send has s send n messages and waits until other has them all.
// send has s send n messages and waits until the user to, whose Client
// stream carries every room's events, has them all.
func send(t *testing.T, s *client.Session, to *client.Client, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.Send(fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	deadline := time.After(10 * time.Second)
	for got < n {
		select {
		case ev := <-to.Events():
			if _, ok := ev.(client.Message); ok {
				got++
			}
		case <-deadline:
			t.Fatalf("%s got %d of %d messages", to.User(), got, n)
		}
	}
}

// scrape reads a /metrics endpoint and parses the exposition format.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s: %s", addr, resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include every pair in labels (counter, gauge, or a histogram's count);
// -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// drain has chat server id drain itself, as SIGTERM does: its agent tells
// Central with the server's own token (a cluster secret does not speak for
// a server), and it returns once the server's rooms have moved away.
func (c *cluster) drain(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.servers[id].Drain(ctx)
}
