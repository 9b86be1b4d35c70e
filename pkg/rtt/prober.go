package rtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Target is one server to probe.
type Target struct {
	ID   string
	Addr string
}

// Config configures a Prober.
type Config struct {
	// Dialer opens probe connections; nil means a plain net.Dialer.
	Dialer Dialer
	// Samples per server per round.
	Samples int
	// Timeout bounds one probe of one server, dial included.
	Timeout time.Duration
	// Concurrency is the most probes in flight at once, so a round never
	// floods the client's link while it chats.
	Concurrency int
	// Jitter spreads periodic rounds by up to this fraction of the interval
	// (0 to 1) so many clients do not probe in lockstep.
	Jitter float64
	// Logger; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns 5 samples, a 2 s timeout, 4 concurrent probes and
// 10% jitter.
func DefaultConfig() Config {
	return Config{Samples: 5, Timeout: 2 * time.Second, Concurrency: 4, Jitter: 0.1}
}

// Prober probes lists of servers.
type Prober struct {
	cfg Config
	log *slog.Logger
}

// New validates cfg and returns a Prober.
func New(cfg Config) (*Prober, error) {
	if cfg.Samples < 1 {
		return nil, fmt.Errorf("rtt: config: %w", ErrNoSamples)
	}
	if cfg.Timeout <= 0 {
		return nil, errors.New("rtt: config: timeout must be positive")
	}
	if cfg.Concurrency < 1 {
		return nil, errors.New("rtt: config: concurrency must be at least 1")
	}
	if cfg.Jitter < 0 || cfg.Jitter > 1 {
		return nil, errors.New("rtt: config: jitter must be within [0, 1]")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Prober{cfg: cfg, log: log}, nil
}

// Round probes every target, at most Concurrency at a time, and returns one
// Result per target ID (a failed probe has Err set). It returns early, with
// the results gathered so far, when ctx ends. Safe for concurrent use.
func (p *Prober) Round(ctx context.Context, targets []Target) map[string]Result {
	out := make(map[string]Result, len(targets))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, p.cfg.Concurrency)
	for _, t := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return out
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := Probe(ctx, p.cfg.Dialer, t.Addr, p.cfg.Samples, p.cfg.Timeout)
			if err != nil {
				res.Err = err
				p.log.Debug("probe failed", "server", t.ID, "addr", t.Addr, "err", err)
			}
			mu.Lock()
			out[t.ID] = res
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// Run calls Round every interval (with jitter) on the list targets returns,
// and hands each round's results to report, until ctx ends. The first round
// starts at once. targets and report run on Run's goroutine. Run returns
// ctx.Err(). Safe for concurrent use.
func (p *Prober) Run(ctx context.Context, interval time.Duration, targets func() []Target, report func(map[string]Result)) error {
	if interval <= 0 {
		return errors.New("rtt: interval must be positive")
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		if ts := targets(); len(ts) > 0 {
			res := p.Round(ctx, ts)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			report(res)
		}
		d := interval
		if p.cfg.Jitter > 0 {
			d += time.Duration((rand.Float64()*2 - 1) * p.cfg.Jitter * float64(interval))
		}
		timer.Reset(d)
	}
}
