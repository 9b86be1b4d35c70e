package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"
)

// TestRegistrationWaitsOutRateLimit: users behind one address starting
// at once, past Central's registration rate from one address, are all
// registered and connected in the end: a client refused as one too many
// tries again after its back-off. Before, Run returned the refusal and
// those users never came up (chatload at 1,000 x 3: 79 rooms short).
func TestRegistrationWaitsOutRateLimit(t *testing.T) {
	cen := startBareCentral(t, func(c *central.Config) { c.RegisterRate, c.RegisterBurst = 20, 1 })
	const n = 6
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	connected := make(chan string, 4*n) // a user may connect more than once
	failed := make(chan error, n)
	for i := range n {
		opts := DefaultConfig()
		opts.Central, opts.Control, opts.User = cen.RESTAddr(), cen.ControlAddr(), fmt.Sprintf("u%d", i)
		opts.BackoffMin, opts.BackoffMax = 20*time.Millisecond, 200*time.Millisecond
		opts.Logger = testkit.LoggerAt(t, slog.LevelWarn)
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				select {
				case ev := <-c.Events():
					if _, ok := ev.(Connected); ok {
						select {
						case connected <- opts.User:
						case <-ctx.Done():
							return
						}
					}
				case <-ctx.Done():
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				failed <- err
			}
		}()
	}
	deadline := time.After(30 * time.Second)
	for got := 0; got < n; {
		select {
		case <-connected:
			got++
		case err := <-failed:
			t.Fatalf("a user starting beside %d others: %v", n-1, err)
		case <-deadline:
			t.Fatalf("%d of %d users connected", got, n)
		}
	}
}

// A registration Central failed (5xx: busy, failing over) is tried again,
// as one it rate-limited is; one it refused for good is not. Before, one
// slow or failed answer ended a bot (abuse probe, 2026-12-03).
func TestRegistrationOutlastsPassingFailures(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"code":"internal","message":"no leader yet"}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"name":"bob","token":"`+strings.Repeat("ab", 32)+`"}`)
	}))
	defer srv.Close()
	opts := DefaultConfig()
	opts.Central, opts.Control, opts.User = strings.TrimPrefix(srv.URL, "http://"), "127.0.0.1:1", "bob"
	opts.BackoffMin, opts.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	opts.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.registerPatiently(ctx); err != nil {
		t.Fatalf("after two 503s: %v", err)
	}
	if calls != 3 {
		t.Fatalf("%d registrations, want 3", calls)
	}
	if passing(&centralapi.Error{Status: http.StatusConflict, Code: centralapi.CodeNameTaken}) {
		t.Fatal("a name taken is taken for a passing failure")
	}
}
