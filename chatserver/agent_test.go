package chatserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nearchat/bench/cluster"
	"nearchat/central"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
)

// startCentral runs a real Central on loopback, on the given REST address
// ("127.0.0.1:0" for a fresh port).
func startCentral(t *testing.T, rest string) *central.Central {
	t.Helper()
	cfg := central.DefaultConfig()
	cfg.RESTListen = rest
	cfg.ControlListen = "127.0.0.1:0"
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.ClusterSecret = "s3cret"
	cfg.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	c, err := central.New(cfg)
	if err != nil {
		t.Fatalf("central.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func serverInfo(t *testing.T, api *centralapi.Client, id string) (centralapi.ServerInfo, bool) {
	t.Helper()
	list, err := api.AllServers(context.Background())
	if err != nil {
		return centralapi.ServerInfo{}, false
	}
	for _, s := range list {
		if s.ID == id {
			return s, true
		}
	}
	return centralapi.ServerInfo{}, false
}

func TestRegistersHeartbeatsAndReregisters(t *testing.T) {
	// Central restarts on this port below, once the server has seen it
	// gone. A port from a :0 listener is one the kernel hands out again:
	// in that window any :0 listener on the machine (another test's, in
	// this package or one running beside it) could take it, and the new
	// Central failed on "address already in use". cluster.FreeAddr's
	// ports lie below the ephemeral range.
	rest, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	c := startCentral(t, rest)
	api := centralapi.NewClient(rest, nil)
	s := startServer(t, func(cfg *Config) {
		cfg.ID = "serv1"
		cfg.Central = rest
		cfg.Secret = "s3cret"
	})
	testkit.WaitFor(t, 5*time.Second, "registration", func() bool {
		info, ok := serverInfo(t, api, "serv1")
		return ok && info.Up && info.Addr == s.Addr()
	})
	for _, u := range []string{"alice", "bob"} {
		p := hello(t, s)
		p.send(&proto.Join{Room: "r-live", User: u, Epoch: 1})
		p.expect(proto.TJoined)
	}
	testkit.WaitFor(t, 5*time.Second, "heartbeat with the room", func() bool {
		info, _ := serverInfo(t, api, "serv1")
		return info.Conns == 2
	})

	// Central restarts on the same port: the server registers again by
	// itself and its heartbeat hands the live room back.
	c.Close()
	testkit.WaitFor(t, 5*time.Second, "server to notice Central is gone", func() bool { return !s.CentralOK() })
	c2 := startCentral(t, rest)
	_ = c2
	testkit.WaitFor(t, 10*time.Second, "re-registration and room adoption", func() bool {
		rooms, err := api.Rooms(context.Background(), "s3cret")
		if err != nil {
			return false
		}
		for _, r := range rooms {
			if r.ID == "r-live" && r.Server == "serv1" {
				m := slices.Clone(r.Members)
				slices.Sort(m)
				return slices.Equal(m, []string{"alice", "bob"})
			}
		}
		return false
	})
}

func TestWrongSecretIsRefused(t *testing.T) {
	c := startCentral(t, "127.0.0.1:0")
	api := centralapi.NewClient(c.RESTAddr(), nil)
	s := startServer(t, func(cfg *Config) {
		cfg.ID = "intruder"
		cfg.Central = c.RESTAddr()
		cfg.Secret = "wrong"
	})
	time.Sleep(300 * time.Millisecond) // several heartbeat intervals
	if _, ok := serverInfo(t, api, "intruder"); ok {
		t.Fatal("a server with the wrong secret was registered")
	}
	if s.CentralOK() {
		t.Fatal("server believes Central accepted it")
	}
}

func TestDrainWaitsForRoomsToLeave(t *testing.T) {
	c := startCentral(t, "127.0.0.1:0")
	api := centralapi.NewClient(c.RESTAddr(), nil)
	s := startServer(t, func(cfg *Config) {
		cfg.ID = "serv-d"
		cfg.Central = c.RESTAddr()
		cfg.Secret = "s3cret"
	})
	testkit.WaitFor(t, 5*time.Second, "registration", func() bool { _, ok := serverInfo(t, api, "serv-d"); return ok })
	p, _ := joinAs(t, s, "r-d", "alice")
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	testkit.WaitFor(t, 5*time.Second, "Central to mark the server draining", func() bool {
		info, _ := serverInfo(t, api, "serv-d")
		return info.Draining
	})
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v while a room was still here", err)
	case <-time.After(100 * time.Millisecond):
	}
	p.conn.Close() // the member moved away
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// TestRestartTakesIDBackWithTokenFile crashes a registered server (no
// deregistration) and starts another process in its place, at a new
// address: with the token file it takes the id back at once, long before
// Central declares the old instance down (a live id is nobody else's).
func TestRestartTakesIDBackWithTokenFile(t *testing.T) {
	c := startCentral(t, "127.0.0.1:0")
	api := centralapi.NewClient(c.RESTAddr(), nil)
	file := filepath.Join(t.TempDir(), "serv-t.token")
	edit := func(cfg *Config) {
		cfg.ID, cfg.Central, cfg.Secret, cfg.TokenFile = "serv-t", c.RESTAddr(), "s3cret", file
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	edit(&cfg)
	old, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The agent writes the token file after Central's answer, so Central
	// may list the server before the file exists: wait for both.
	testkit.WaitFor(t, 5*time.Second, "registration and its token file", func() bool {
		info, ok := serverInfo(t, api, "serv-t")
		b, err := os.ReadFile(file)
		return ok && info.Up && info.Addr == old.Addr() && err == nil && len(b) >= 32
	})
	// A crash: the agent stops without telling Central.
	old.stopAgent()
	<-old.agentDone
	old.cfg.Central = ""
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	s := startServer(t, edit)
	testkit.WaitFor(t, 5*time.Second, "the restarted server to take its id back", func() bool {
		info, ok := serverInfo(t, api, "serv-t")
		return ok && info.Up && info.Addr == s.Addr()
	})
	t.Logf("id taken back in %v (Central declares a server down after %v)", time.Since(start).Round(time.Millisecond), central.DefaultConfig().OfflineAfter)
}

// TestRefusedRegistrationStops: a registration Central refuses for good
// (a wrong secret, an id it will never take) ends Run with Central's
// reason instead of asking again forever with the server up and unused.
func TestRefusedRegistrationStops(t *testing.T) {
	c := startCentral(t, "127.0.0.1:0")
	// A Central whose rules are stricter than ours (an id we take and it
	// does not): the chat server's own checks cannot catch that.
	strict := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"code":"bad_request","message":"server id: not one of ours"}`)
	}))
	defer strict.Close()
	// A Central that takes client certificates of its own CA only, and
	// one of another CA presented to it: refused in the TLS handshake,
	// which was taken for Central being unreachable, retried for ever
	// (abuse sweep, 2026-12-03).
	ours, err := tlsconfig.WriteDev(t.TempDir(), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := tlsconfig.WriteDev(t.TempDir(), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := tlsconfig.Server(ours.ServerCert, ours.ServerKey, ours.CA)
	if err != nil {
		t.Fatal(err)
	}
	certOnly := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a request got past the client-certificate check: %s %s", r.Method, r.URL)
	}))
	certOnly.TLS = srvTLS
	certOnly.StartTLS()
	defer certOnly.Close()
	wrongCert, err := tlsconfig.Client(ours.CA, theirs.ClientCert, theirs.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, central, secret, want string
		tls                         *tls.Config
	}{
		{"wrong secret", c.RESTAddr(), "wrong", "unauthorized", nil},
		{"bad id", strings.TrimPrefix(strict.URL, "http://"), "s3cret", "bad_request", nil},
		{"certificate of another CA", strings.TrimPrefix(certOnly.URL, "https://"), "", "unknown certificate authority", wrongCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Listen = "127.0.0.1:0"
			cfg.Logger = testkit.LoggerAt(t, slog.LevelError)
			cfg.ID, cfg.Central, cfg.Secret, cfg.CentralTLS = "serv1", tc.central, tc.secret, tc.tls
			s, err := New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = s.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "refused to register") {
				t.Fatalf("Run = %v, want Central's %s refusal", err, tc.want)
			}
			t.Logf("Run: %v", err)
		})
	}
}

// A server registered with an advertised address nobody reaches was
// listed as up with nothing said: Central checks the address now (a Hello
// answered by this server), lists why it failed, and the server logs it.
// An address answered by another server fails too; a right one passes.
func TestAdvertisedAddressChecked(t *testing.T) {
	rest, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	startCentral(t, rest)
	api := centralapi.NewClient(rest, nil)
	dead, err := cluster.FreeAddr() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	good := startServer(t, func(cfg *Config) { cfg.ID, cfg.Central, cfg.Secret = "good", rest, "s3cret" })
	var logs testkit.LogBuffer
	startServer(t, func(cfg *Config) {
		cfg.ID, cfg.Central, cfg.Secret, cfg.Advertise = "dead", rest, "s3cret", dead
		cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, testkit.Writer(t)), &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	startServer(t, func(cfg *Config) {
		cfg.ID, cfg.Central, cfg.Secret, cfg.Advertise = "twin", rest, "s3cret", good.Addr()
	})
	// Central's own REST port answers a frame with an Error (wrong_port);
	// that was taken for a live chat server.
	startServer(t, func(cfg *Config) {
		cfg.ID, cfg.Central, cfg.Secret, cfg.Advertise = "atcentral", rest, "s3cret", rest
	})
	for id, want := range map[string]string{"dead": "connect", "twin": "another server", "atcentral": "wrong_port"} {
		testkit.WaitFor(t, 10*time.Second, id+"'s address error listed", func() bool {
			info, ok := serverInfo(t, api, id)
			return ok && info.AddrError != ""
		})
		info, _ := serverInfo(t, api, id)
		t.Logf("%s at %s: %s", id, info.Addr, info.AddrError)
		if !strings.Contains(info.AddrError, want) {
			t.Errorf("%s: addr_error %q, want it to say %q", id, info.AddrError, want)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the dead server's warning", func() bool {
		return strings.Contains(logs.String(), "Central cannot reach this server at its advertised address")
	})
	if info, _ := serverInfo(t, api, "good"); info.AddrError != "" || !info.Up {
		t.Fatalf("good: %+v", info)
	}
}

// A budget reached is said until budgetHold after it last was, then no
// more: a server whose backlog hovers at the outbound budget is not full
// and not full from one beat to the next, and one whose budget lifted
// takes new rooms again.
func TestBudgetSaidForItsHold(t *testing.T) {
	var a agent
	t0 := time.Unix(1_800_000_000, 0)
	steps := []struct {
		after   time.Duration
		reached string
		want    string
	}{
		{0, "", ""},
		{time.Second, budgetOutbound, budgetOutbound},
		{2 * time.Second, "", budgetOutbound},
		{5 * time.Second, budgetOutbound, budgetOutbound}, // reached again: the hold starts over
		{5*time.Second + budgetHold - time.Millisecond, "", budgetOutbound},
		{5*time.Second + budgetHold, "", ""},
		{6*time.Second + budgetHold, budgetHistory, budgetHistory},
	}
	for _, st := range steps {
		if got := a.budgetSaid(st.reached, t0.Add(st.after)); got != st.want {
			t.Fatalf("at %v with %q reached the heartbeat says %q, want %q", st.after, st.reached, got, st.want)
		}
	}
}
