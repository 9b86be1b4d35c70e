package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/pkg/testkit"
)

// startBareCentral runs a Central on loopback ports until the test ends.
func startBareCentral(t *testing.T, edits ...func(*central.Config)) *central.Central {
	t.Helper()
	cfg := central.DefaultConfig()
	cfg.RESTListen, cfg.ControlListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	for _, edit := range edits {
		edit(&cfg)
	}
	cen, err := central.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cen.Run(ctx) }()
	t.Cleanup(func() { cancel(); cen.Close(); <-done })
	return cen
}

// TestControlNotCentral: a control address that answers, but not as
// Central's control port, ends Run with ErrNotCentral, where the client
// used to retry it forever: at once for a chat server, a service that
// answers the Hello, and Central's REST port (which answers a frame with
// Error wrong_port; it used to take the 5 s handshake timeout, an HTTP
// server waiting for a request line the Hello never ends).
func TestControlNotCentral(t *testing.T) {
	cen := startBareCentral(t)
	chat := startChat(t, "serv1")
	garbage, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, garbage, func(c net.Conn) {
		_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
		_, _ = io.Copy(io.Discard, c)
	})
	for i, tc := range []struct {
		name, control string
		within        time.Duration
	}{
		{"a chat server", chat.Addr(), time.Second},
		{"Central's REST port", cen.RESTAddr(), 2 * time.Second},
		{"another protocol", garbage.Addr().String(), time.Second},
		{"every replica wrong", chat.Addr() + "," + cen.RESTAddr(), 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultConfig()
			opts.User = fmt.Sprintf("user%d", i)
			opts.Central, opts.Control = cen.RESTAddr(), tc.control
			opts.Logger = testkit.Logger(t)
			c, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			start := time.Now()
			err = c.Run(ctx)
			if !errors.Is(err, ErrNotCentral) {
				t.Fatalf("Run = %v after %v, want ErrNotCentral", err, time.Since(start))
			}
			if took := time.Since(start); took > tc.within {
				t.Errorf("Run took %v to give up", took)
			}
			t.Logf("Run: %v (%v)", err, time.Since(start).Round(time.Millisecond))
		})
	}
	// One wrong address among replicas is skipped, not fatal: the next
	// is Central.
	t.Run("one replica wrong", func(t *testing.T) {
		opts := DefaultConfig()
		opts.User = "bob"
		opts.Central, opts.Control = cen.RESTAddr(), chat.Addr()+","+cen.ControlAddr()
		opts.Logger = testkit.Logger(t)
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		defer func() { cancel(); <-done }()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case e := <-c.Events():
				if cn, ok := e.(Connected); ok {
					if !strings.Contains(opts.Control, cn.Central) {
						t.Errorf("connected to %q", cn.Central)
					}
					return
				}
			case err := <-done:
				t.Fatalf("Run ended: %v", err)
			case <-deadline:
				t.Fatal("never connected")
			}
		}
	})
}

// TestNewChecksSessionSettings: New refuses a probe interval or liveness
// check out of range, naming the field, rather than starting a client
// that probes without pause or finds every connection broken.
func TestNewChecksSessionSettings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string // "" means valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"probe every min", func(c *Config) { c.ProbeEvery = MinProbeEvery }, ""},
		{"probe every 0", func(c *Config) { c.ProbeEvery = 0 }, "ProbeEvery"},
		{"probe every 1ms", func(c *Config) { c.ProbeEvery = time.Millisecond }, "ProbeEvery"},
		{"probe every past max", func(c *Config) { c.ProbeEvery = MaxProbeEvery + 1 }, "ProbeEvery"},
		{"liveness off", func(c *Config) { c.Session.Liveness = 0 }, ""},
		{"liveness negative", func(c *Config) { c.Session.Liveness = -time.Second }, "Liveness"},
		{"liveness 1ns", func(c *Config) { c.Session.Liveness = 1 }, "Liveness"},
		{"liveness past max", func(c *Config) { c.Session.Liveness = MaxLiveness + 1 }, "Liveness"},
		{"session window 0", func(c *Config) { c.Session.Window = 0 }, "window"},
		{"backoff", func(c *Config) { c.BackoffMin = 0 }, "BackoffMin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultConfig()
			opts.User = "alice"
			tc.edit(&opts)
			_, err := New(opts)
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
				t.Fatalf("New = %v, want an error naming %s", err, tc.field)
			}
		})
	}
}
