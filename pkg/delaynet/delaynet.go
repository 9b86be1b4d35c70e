// Package delaynet emulates network latency in user space: a Dialer whose
// connections hold every byte for a fixed one-way delay in each direction,
// so that anything measured through them (an RTT probe, a chat message's
// latency) sees the injected delay for real. It needs no root, no netem and
// no namespaces, which makes it the latency source of the loopback tests and
// demo, and of users whose kernels lack sch_netem.
//
// The model: bytes written at time t reach the real socket at t+d; bytes the
// real socket delivers at time t become readable at t+d, and so does the end
// of the stream. An RTT through a delayed connection is therefore 2d plus the
// real RTT. Dialing waits 2d after the real handshake, as a TCP connect over
// such a link would. Each direction holds at most MaxBuffered bytes: a writer
// that runs that far ahead blocks (until its deadline, if it set one), and
// the reading side stops draining the socket so TCP flow control pushes back
// on the peer, as a real bottleneck would.
package delaynet

import (
	"context"
	"net"
	"sync"
	"time"
)

// DefaultMaxBuffered is the per-direction buffer of a delayed connection
// when Dialer.MaxBuffered is 0.
const DefaultMaxBuffered = 1 << 20

// Dialer dials TCP connections with a per-destination one-way delay. The
// zero value dials without delay. A Dialer is safe for concurrent use; do not
// change its fields while it is in use (change the delays through a Delays
// table instead).
type Dialer struct {
	// Base dials the real connection.
	Base net.Dialer
	// Delay returns the one-way delay to apply to a connection to addr (the
	// address as passed to DialContext). nil or a result <= 0 means none,
	// and the real connection is returned unwrapped. It is called once per
	// dial, so a connection keeps the delay it was dialed with.
	Delay func(addr string) time.Duration
	// MaxBuffered bytes per direction; 0 means DefaultMaxBuffered.
	MaxBuffered int
}

// DialContext dials addr and wraps the connection in a delayed Conn.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var delay time.Duration
	if d.Delay != nil {
		delay = d.Delay(addr)
	}
	c, err := d.Base.DialContext(ctx, network, addr)
	if err != nil || delay <= 0 {
		return c, err
	}
	t := time.NewTimer(2 * delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		c.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Addr: c.RemoteAddr(), Err: ctx.Err()}
	}
	return Wrap(c, delay, d.MaxBuffered), nil
}

// Dial is DialContext with a background context.
func (d *Dialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

// Delays is a table of one-way delays by address, safe for concurrent use.
// Its Get method fits Dialer.Delay, and Set may be called at any time (new
// connections pick up the change). The zero value is an empty table.
type Delays struct {
	mu sync.RWMutex
	m  map[string]time.Duration
}

// Set sets the one-way delay for addr; d <= 0 removes it.
func (t *Delays) Set(addr string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d <= 0 {
		delete(t.m, addr)
		return
	}
	if t.m == nil {
		t.m = make(map[string]time.Duration)
	}
	t.m[addr] = d
}

// Get returns the one-way delay for addr, 0 when it has none.
func (t *Delays) Get(addr string) time.Duration {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.m[addr]
}
