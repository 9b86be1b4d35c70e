package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"nearchat/bench/baseline"
	"nearchat/chatserver"
)

// Server kinds understood by StartServer.
const (
	// Gnet is nearchat's chat server (package chatserver).
	Gnet = "gnet"
	// Baseline is the goroutine-per-connection server of package baseline.
	Baseline = "baseline"
)

// server is what both chat servers offer.
type server interface {
	Run(ctx context.Context) error
	Addr() string
	Close() error
}

// starters build a server of each kind on 127.0.0.1, port 0, with limits
// wide enough for the benchmarks (10,000-member rooms, 20,000 connections).
var starters = map[string]func(log *slog.Logger) (server, error){
	Gnet: func(log *slog.Logger) (server, error) {
		cfg := chatserver.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.ID = "bench-gnet"
		cfg.MaxConns = 20_000
		cfg.MaxMembers = 10_000
		cfg.MaxConnsPerSource = 0 // every benchmark member dials from loopback
		cfg.Logger = log
		return chatserver.New(cfg)
	},
	Baseline: func(log *slog.Logger) (server, error) {
		cfg := baseline.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.ID = "bench-baseline"
		cfg.MaxMembers = 10_000
		// No write deadline: the baseline's fastest configuration, so the
		// comparison flatters it rather than us.
		cfg.WriteTimeout = 0
		cfg.Logger = log
		return baseline.New(cfg)
	},
}

// Kinds lists the server kinds, sorted.
func Kinds() []string {
	ks := make([]string, 0, len(starters))
	for k := range starters {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Target is a running chat server under test.
type Target struct {
	kind   string
	srv    server
	cancel context.CancelFunc
	done   chan error
}

// StartServer starts a server of the given kind (Gnet or Baseline) on a free
// loopback port. A nil log discards the server's logs. Stop it with Close.
func StartServer(kind string, log *slog.Logger) (*Target, error) {
	start, ok := starters[kind]
	if !ok {
		return nil, fmt.Errorf("bench: unknown server kind %q (have %v)", kind, Kinds())
	}
	srv, err := start(log)
	if err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", kind, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Target{kind: kind, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { t.done <- srv.Run(ctx) }()
	return t, nil
}

// Kind names the server.
func (t *Target) Kind() string { return t.kind }

// Addr is the server's host:port.
func (t *Target) Addr() string { return t.srv.Addr() }

// Close shuts the server down and waits up to ten seconds for Run to return.
// Call it once.
func (t *Target) Close() error {
	err := t.srv.Close()
	t.cancel()
	select {
	case rerr := <-t.done:
		return errors.Join(err, rerr)
	case <-time.After(10 * time.Second):
		return errors.Join(err, fmt.Errorf("bench: %s: Run did not return 10s after Close", t.kind))
	}
}
