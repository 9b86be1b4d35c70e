package delaynet

import (
	"net"
	"os"
	"sync"
	"time"
)

// Conn is a net.Conn that delays both directions of an underlying
// connection. Read, Write, Close and the deadline setters are safe for
// concurrent use, as on any net.Conn. Deadlines apply to the delayed view:
// a Read times out when no delayed data became due before the deadline.
type Conn struct {
	raw   net.Conn
	delay time.Duration
	max   int

	in, out queue

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// chunk is bytes (or, when err is set, the end of the stream) that become
// visible at due.
type chunk struct {
	due time.Time
	b   []byte
	err error
}

// queue is one direction's FIFO. changed is closed and replaced on every
// change, so any number of waiters can sleep on it without polling.
type queue struct {
	mu       sync.Mutex
	items    []chunk
	size     int
	err      error // a failure of the real socket in this direction
	deadline time.Time
	changed  chan struct{}
}

func (q *queue) signal() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// Wrap delays c by delay in each direction; maxBuffered <= 0 means
// DefaultMaxBuffered. The returned Conn owns c.
func Wrap(c net.Conn, delay time.Duration, maxBuffered int) *Conn {
	if maxBuffered <= 0 {
		maxBuffered = DefaultMaxBuffered
	}
	dc := &Conn{raw: c, delay: delay, max: maxBuffered, closed: make(chan struct{})}
	dc.in.changed = make(chan struct{})
	dc.out.changed = make(chan struct{})
	dc.wg.Add(2)
	go dc.pumpIn()
	go dc.pumpOut()
	return dc
}

// Delay returns the one-way delay of the connection.
func (c *Conn) Delay() time.Duration { return c.delay }

func (c *Conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// wait sleeps until ch changes, d elapses (d < 0: no limit), the deadline
// passes or the Conn closes. It reports os.ErrDeadlineExceeded or
// net.ErrClosed when those ended the wait.
func (c *Conn) wait(ch <-chan struct{}, d time.Duration, deadline time.Time) error {
	if !deadline.IsZero() {
		left := time.Until(deadline)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		if d < 0 || left < d {
			d = left
		}
	}
	var tc <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-ch:
	case <-tc:
	case <-c.closed:
		return net.ErrClosed
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.raw.LocalAddr(), Addr: c.raw.RemoteAddr(), Err: err}
}

// Read returns delayed bytes whose time has come, waiting for them.
func (c *Conn) Read(p []byte) (int, error) {
	q := &c.in
	for {
		if c.isClosed() {
			return 0, c.opErr("read", net.ErrClosed)
		}
		q.mu.Lock()
		now := time.Now()
		n := 0
		for len(q.items) > 0 && n < len(p) && !q.items[0].due.After(now) {
			it := &q.items[0]
			if it.err != nil {
				if n > 0 {
					break
				}
				err := it.err
				q.mu.Unlock()
				return 0, err
			}
			k := copy(p[n:], it.b)
			n += k
			it.b = it.b[k:]
			q.size -= k
			if len(it.b) == 0 {
				q.items[0] = chunk{}
				q.items = q.items[1:]
			}
		}
		if n > 0 || len(p) == 0 {
			q.signal()
			q.mu.Unlock()
			return n, nil
		}
		d := time.Duration(-1)
		if len(q.items) > 0 {
			d = q.items[0].due.Sub(now)
		}
		ch, dl := q.changed, q.deadline
		q.mu.Unlock()
		if err := c.wait(ch, d, dl); err != nil {
			return 0, c.opErr("read", err)
		}
	}
}

// Write queues a copy of p for delivery after the delay. It blocks only
// while the outbound buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	q := &c.out
	for {
		if c.isClosed() {
			return 0, c.opErr("write", net.ErrClosed)
		}
		q.mu.Lock()
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return 0, err
		}
		if q.size == 0 || q.size+len(p) <= c.max {
			if len(p) > 0 {
				q.items = append(q.items, chunk{due: time.Now().Add(c.delay), b: append([]byte(nil), p...)})
				q.size += len(p)
				q.signal()
			}
			q.mu.Unlock()
			return len(p), nil
		}
		ch, dl := q.changed, q.deadline
		q.mu.Unlock()
		if err := c.wait(ch, -1, dl); err != nil {
			return 0, c.opErr("write", err)
		}
	}
}

// pumpIn reads the real socket and queues what arrives, stamped with its
// due time; it pauses while the inbound queue is full.
func (c *Conn) pumpIn() {
	defer c.wg.Done()
	q := &c.in
	buf := make([]byte, 32<<10)
	for {
		q.mu.Lock()
		for q.size >= c.max {
			ch := q.changed
			q.mu.Unlock()
			select {
			case <-ch:
			case <-c.closed:
				return
			}
			q.mu.Lock()
		}
		q.mu.Unlock()
		n, err := c.raw.Read(buf)
		due := time.Now().Add(c.delay)
		q.mu.Lock()
		if n > 0 {
			q.items = append(q.items, chunk{due: due, b: append([]byte(nil), buf[:n]...)})
			q.size += n
		}
		if err != nil {
			q.items = append(q.items, chunk{due: due, err: err})
		}
		q.signal()
		q.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// pumpOut writes queued bytes to the real socket when they fall due, in
// order; after Close it flushes what is left, then returns.
func (c *Conn) pumpOut() {
	defer c.wg.Done()
	q := &c.out
	var batch net.Buffers
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			ch := q.changed
			q.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-c.closed:
			}
			q.mu.Lock()
			empty := len(q.items) == 0
			q.mu.Unlock()
			if empty {
				return
			}
			continue
		}
		now := time.Now()
		if d := q.items[0].due.Sub(now); d > 0 {
			ch := q.changed
			q.mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ch:
			}
			t.Stop()
			continue
		}
		batch = batch[:0]
		sent := 0
		for len(q.items) > 0 && !q.items[0].due.After(now) {
			batch = append(batch, q.items[0].b)
			sent += len(q.items[0].b)
			q.items[0] = chunk{}
			q.items = q.items[1:]
		}
		q.mu.Unlock()
		_, err := batch.WriteTo(c.raw)
		q.mu.Lock()
		q.size -= sent
		if err != nil {
			q.err = c.opErr("write", err)
			q.items = nil
			q.size = 0
		}
		q.signal()
		q.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Close stops reads and writes at once, then waits until the bytes already
// written have been delivered to the real socket (at most the delay, plus a
// bounded grace for a peer that does not read) and closes it. Close returns
// only when the connection's goroutines have ended; it is idempotent.
func (c *Conn) Close() error {
	var err error
	first := false
	c.closeOnce.Do(func() {
		first = true
		_ = c.raw.SetWriteDeadline(time.Now().Add(c.delay + 2*time.Second))
		close(c.closed)
		c.out.mu.Lock()
		c.out.signal()
		c.out.mu.Unlock()
		c.in.mu.Lock()
		c.in.signal()
		c.in.mu.Unlock()
		done := make(chan struct{})
		go func() {
			c.wg.Wait()
			close(done)
		}()
		// pumpOut finishes its flush on its own; pumpIn needs the real
		// socket closed to leave its Read.
		c.waitOut()
		err = c.raw.Close()
		<-done
	})
	if !first {
		return c.opErr("close", net.ErrClosed)
	}
	return err
}

// waitOut waits for the outbound queue to drain or fail.
func (c *Conn) waitOut() {
	q := &c.out
	for {
		q.mu.Lock()
		if len(q.items) == 0 || q.err != nil {
			q.mu.Unlock()
			return
		}
		ch := q.changed
		q.mu.Unlock()
		<-ch
	}
}

// LocalAddr returns the real connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr returns the real connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read's wait for due data.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.setDeadline(&c.in, t) }

// SetWriteDeadline bounds Write's wait for buffer space.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(&c.out, t) }

func (c *Conn) setDeadline(q *queue, t time.Time) error {
	if c.isClosed() {
		return c.opErr("set deadline", net.ErrClosed)
	}
	q.mu.Lock()
	q.deadline = t
	q.signal()
	q.mu.Unlock()
	return nil
}

var _ net.Conn = (*Conn)(nil)
