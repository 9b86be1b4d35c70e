// Package relay is what a follower Central serves with: every connection
// accepted on its REST or control port is forwarded, byte for byte, to the
// same port of the current leader, and the leader's answers and pushes come
// back the same way. The follower reads nothing of what it forwards, so TLS
// runs end to end between the client and the leader, and there is one
// writer of Central's state: the leader.
//
// A connection accepted while no leader is known, or while the leader does
// not answer (it died and its lease has not run out yet, or the new one is
// still starting), waits up to the Relay's patience for one that does, and
// is then handed to the Relay's refusal, which answers it that no Central
// leads (or closed, without one). When the leader changes, every connection relayed to the old one is closed:
// its client connects again and reaches the new leader.
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// retryEvery is how often a waiting connection dials the leader again.
const retryEvery = 50 * time.Millisecond

// Relay forwards the connections of one listener to a target address.
type Relay struct {
	ln         net.Listener
	patience   time.Duration
	refuse     func(c net.Conn, leader string) // answers a connection no leader took; nil: close it
	writeStall time.Duration                   // how long a client may take no byte of the leader's

	mu      sync.Mutex
	target  string
	changed chan struct{}     // closed and replaced when target changes
	conns   map[net.Conn]bool // every connection: true once relayed to target
	closed  bool
	wg      sync.WaitGroup

	accepted, relayed, gaveUp, changes atomic.Uint64
	open                               atomic.Int64
}

// Stats are a Relay's counters since Serve.
type Stats struct {
	Accepted uint64 // connections accepted
	Relayed  uint64 // of them, connected to a leader
	GaveUp   uint64 // of them, closed with no leader answering within the patience
	Open     int    // connections open now (accepted, waiting or relayed)
	Changes  uint64 // times the target changed (a new leader, or none)
}

// Stats returns the relay's counters. Safe for concurrent use.
func (r *Relay) Stats() Stats {
	return Stats{Accepted: r.accepted.Load(), Relayed: r.relayed.Load(), GaveUp: r.gaveUp.Load(), Open: int(r.open.Load()), Changes: r.changes.Load()}
}

// Serve relays every connection ln accepts until Close. A connection waits
// up to patience for a target that accepts it, then is given to refuse
// with the target it last waited for ("" for none), or closed when refuse
// is nil. refuse runs on the connection's own goroutine and should bound
// its time with deadlines; Close closes the connection under it. The
// relay closes the connection after refuse returns.
func Serve(ln net.Listener, patience time.Duration, refuse func(c net.Conn, leader string)) *Relay {
	r := &Relay{ln: ln, patience: patience, refuse: refuse, writeStall: writeStall, changed: make(chan struct{}), conns: map[net.Conn]bool{}}
	r.wg.Add(1)
	go r.accept()
	return r
}

// Addr is the listener's address.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// SetTarget makes addr (host:port; "" for none) where new connections go
// and, if it differs from the last one, closes every connection relayed so
// far (a connection still waiting for a target waits on, for the new one).
func (r *Relay) SetTarget(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if addr == r.target {
		return
	}
	r.target = addr
	r.changes.Add(1)
	close(r.changed)
	r.changed = make(chan struct{})
	for c, relayed := range r.conns {
		if relayed {
			c.Close()
		}
	}
}

// Close closes the listener and every relayed connection, and waits for
// the relay's goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	close(r.changed)
	r.changed = make(chan struct{})
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	err := r.ln.Close()
	r.wg.Wait()
	return err
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if !r.track(c) {
			c.Close()
			return
		}
		r.accepted.Add(1)
		r.open.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.open.Add(-1)
			r.relay(c)
		}()
	}
}

// track adds c to the connections Close and SetTarget close; false once
// the relay is closed.
func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = false
	return true
}

func (r *Relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		delete(r.conns, c)
		c.Close()
	}
}

// relay dials the target for client and copies both ways until both
// have ended, or either failed.
func (r *Relay) relay(client net.Conn) {
	up, leader, gaveUp := r.dial(client)
	if up == nil {
		if gaveUp && r.refuse != nil {
			r.refuse(client, leader)
		}
		r.untrack(client)
		return
	}
	r.relayed.Add(1)
	// A client that ends its sending side cleanly (FIN) may still be
	// owed an answer: the half-close is passed on and the leader's way
	// keeps flowing (the leader's timeouts bound it). Anything else, and
	// the leader's end whatever its kind, ends both ways: a client must
	// not hold the relay's descriptors once the leader is done.
	done := make(chan bool, 2)
	go func() {
		_, err := io.Copy(up, client)
		half := false
		if cw, ok := up.(interface{ CloseWrite() error }); ok && err == nil {
			half = cw.CloseWrite() == nil
		}
		done <- half
	}()
	go func() {
		// Hiding up's WriteTo makes the copy use a small buffer: the
		// default 32 KiB per connection made an idle relayed control
		// connection cost ~40 KB of the follower's heap (abuse7 #4);
		// Central's answers and pushes are small frames.
		io.CopyBuffer(stallWriter{client, r.writeStall}, struct{ io.Reader }{up}, make([]byte, copyBuf))
		done <- false
	}()
	if !<-done {
		r.untrack(client, up) // unblocks the other copy
	}
	<-done
	r.untrack(client, up)
}

// copyBuf is the buffer of the leader-to-client copy.
const copyBuf = 4 << 10

// writeStall bounds a write of the leader's bytes to a client: one that
// stops reading is cut after it. Without it a client that pipelined
// requests and never read their answers held the relay's descriptors,
// goroutines and buffers for good, the leader's own timeouts long past
// (abuse probe, 2026-12-01).
const writeStall = 30 * time.Second

// stallWriter writes to c, each write bounded by d.
type stallWriter struct {
	c net.Conn
	d time.Duration
}

func (w stallWriter) Write(p []byte) (int, error) {
	_ = w.c.SetWriteDeadline(time.Now().Add(w.d))
	return w.c.Write(p)
}

// dial returns a connection to the target, tracked like client, or nil
// when none accepted within the patience (gaveUp, with the target last
// tried, "" for none), or the relay closed or client was closed.
func (r *Relay) dial(client net.Conn) (up net.Conn, target string, gaveUp bool) {
	deadline := time.Now().Add(r.patience)
	var d net.Dialer
	for {
		r.mu.Lock()
		var changed chan struct{}
		var closed bool
		target, changed, closed = r.target, r.changed, r.closed
		_, open := r.conns[client]
		r.mu.Unlock()
		if closed || !open {
			return nil, target, false
		}
		left := time.Until(deadline)
		if left <= 0 {
			r.gaveUp.Add(1)
			return nil, target, true
		}
		if target != "" {
			ctx, cancel := context.WithTimeout(context.Background(), min(left, time.Second))
			up, err := d.DialContext(ctx, "tcp", target)
			cancel()
			if err == nil {
				r.mu.Lock()
				ok := !r.closed && r.target == target
				if _, open := r.conns[client]; ok && open {
					r.conns[client], r.conns[up] = true, true
				} else {
					ok = false
				}
				r.mu.Unlock()
				if ok {
					return up, target, false
				}
				up.Close()
				continue
			}
		}
		t := time.NewTimer(min(left, retryEvery))
		if target == "" {
			t.Reset(left)
		}
		select {
		case <-t.C:
		case <-changed:
		}
		t.Stop()
	}
}
