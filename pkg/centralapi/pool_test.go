package centralapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"
)

// TestClientsKeepTheirConnections: many Clients in one process (a bot
// farm, the load generator's thousands of users) each keep their
// keep-alive connection to Central. With http.DefaultTransport they
// shared two idle connections per host, so nearly every request of every
// user opened and closed a TCP connection (250 a second to chatload's
// Central at 300 rooms x 3).
func TestClientsKeepTheirConnections(t *testing.T) {
	const clients, rounds = 8, 4
	var accepted, closed atomic.Int64
	var mu sync.Mutex
	inFlight := 0
	all := sync.NewCond(&mu)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Hold each request until every client has one in flight, so
		// each round uses one connection per client at once.
		mu.Lock()
		inFlight++
		if inFlight%clients == 0 {
			all.Broadcast()
		}
		for round := (inFlight - 1) / clients; inFlight < (round+1)*clients; {
			all.Wait()
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"servers":[]}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			accepted.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	cs := make([]*centralapi.Client, clients)
	for i := range cs {
		cs[i] = centralapi.NewClient(srv.Listener.Addr().String(), nil)
		defer cs[i].CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range rounds {
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Go(func() {
				if _, err := c.Servers(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	t.Logf("%d clients x %d requests: %d connections", clients, rounds, accepted.Load())
	if n := accepted.Load(); n != clients {
		t.Fatalf("%d connections for %d clients over %d rounds, want one each", n, clients, rounds)
	}
	// Idle, they close on their own: a process of thousands of users
	// holds no descriptor per user between its rounds.
	start := time.Now()
	testkit.WaitFor(t, 20*time.Second, "the idle connections to close", func() bool { return closed.Load() == clients })
	t.Logf("idle connections closed %v after the last request", time.Since(start).Round(time.Millisecond))
}

// TestTLSClientClosesIdleConnections: a client over https closes its idle
// connection like a plaintext one. Its transport used to have no idle
// timeout, so every TLS user of a bot farm held a descriptor in Central
// between its rounds for as long as it ran.
func TestTLSClientClosesIdleConnections(t *testing.T) {
	var closed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"servers":[]}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c := centralapi.NewClientTLS(srv.Listener.Addr().String(), &tls.Config{RootCAs: roots})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Servers(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testkit.WaitFor(t, 20*time.Second, "the idle TLS connection to close", func() bool { return closed.Load() == 1 })
	t.Logf("idle TLS connection closed %v after the request", time.Since(start).Round(time.Millisecond))
}
