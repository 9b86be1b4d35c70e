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
	// Keep is how long a probe connection stays open after a probe for
	// the next probe of its server to reuse; 0 dials for every probe.
	// Reuse spares both ends a TCP handshake, a Hello and a close per
	// server and round (most of a probe's cost: a process of thousands
	// of clients spent a quarter of its CPU on probes, more than half of
	// that dialling). Keep it under the servers' idle timeout (30 s by
	// default), which closes a connection that sent nothing for that
	// long; a held connection that was closed all the same (a server
	// restarted, an idle timeout set lower) costs one failed exchange,
	// and the probe dials again.
	Keep time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns 5 samples, a 2 s timeout, 4 concurrent probes,
// 10% jitter and connections kept 20 s.
func DefaultConfig() Config {
	return Config{Samples: 5, Timeout: 2 * time.Second, Concurrency: 4, Jitter: 0.1, Keep: 20 * time.Second}
}

// Prober probes lists of servers. Close it to close the connections it
// keeps (Config.Keep).
type Prober struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	held   map[string]*conn // by address: idle, kept for the next probe
	closed bool
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
	if cfg.Keep < 0 {
		return nil, errors.New("rtt: config: keep must not be negative")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Prober{cfg: cfg, log: log, held: map[string]*conn{}}, nil
}

// Close closes the connections kept for later probes; a probe running
// now closes its own when it ends. The Prober still probes after Close,
// dialling for every probe. Idempotent.
func (p *Prober) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, h := range p.held {
		h.c.Close()
		delete(p.held, addr)
	}
	return nil
}

// take returns the connection kept for addr, if one was used within
// Keep, and closes those that were not (for any address: a server left
// out of the rounds is not held open until the Prober closes).
func (p *Prober) take(addr string, now time.Time) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, h := range p.held {
		if now.Sub(h.used) >= p.cfg.Keep {
			h.c.Close()
			delete(p.held, a)
		}
	}
	h := p.held[addr]
	delete(p.held, addr)
	return h
}

// keep holds h for the next probe of addr, or closes it when the Prober
// keeps nothing, is closed, or holds another for addr already (two
// rounds at once).
func (p *Prober) keep(addr string, h *conn) {
	h.used = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Keep == 0 || p.closed || p.held[addr] != nil {
		h.c.Close()
		return
	}
	p.held[addr] = h
}

// probe measures addr as Probe does, on the connection kept from its
// last probe when there is one. A kept connection that fails before its
// first answer had ended meanwhile (the server closed it, or restarted):
// the probe dials again, within the same timeout. One that fails later
// failed under this probe, which reports it.
func (p *Prober) probe(ctx context.Context, t Target) (Result, error) {
	if p.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
		defer cancel()
	}
	addr := t.Addr
	if h := p.take(addr, time.Now()); h != nil {
		res, err := p.use(ctx, t, h)
		if err == nil || res.Count > 0 || ctx.Err() != nil || errors.Is(err, ErrOtherServer) {
			return res, err
		}
		p.log.Debug("kept probe connection had ended; dialling", "addr", addr, "err", err)
	}
	h, err := dial(ctx, p.cfg.Dialer, addr)
	if err != nil {
		return Result{}, annotate(ctx, addr, err)
	}
	return p.use(ctx, t, h)
}

// use probes t on h, then keeps h for the next probe or closes it. A
// connection to another server than t's is closed unused (see Probe).
func (p *Prober) use(ctx context.Context, t Target, h *conn) (Result, error) {
	addr := t.Addr
	if err := h.is(t.ID); err != nil {
		h.c.Close()
		return Result{}, annotate(ctx, addr, err)
	}
	res, reuse, err := h.ping(ctx, p.cfg.Samples)
	if reuse {
		p.keep(addr, h)
	} else {
		h.c.Close()
	}
	if err != nil {
		return res, annotate(ctx, addr, err)
	}
	return res, nil
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
			res, err := p.probe(ctx, t)
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
