package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"nearchat/bench"
)

// dialer opens one member's connection, plain or TLS, the same way for
// every server.
type dialer struct {
	addr string
	tls  *tls.Config // nil for plaintext
}

func (d dialer) dial() (net.Conn, error) {
	var c net.Conn
	var err error
	// A burst of dials can overflow the listen backlog; retry briefly.
	for try := range 5 {
		if c, err = net.DialTimeout("tcp", d.addr, 10*time.Second); err == nil {
			break
		}
		time.Sleep(time.Duration(try+1) * 20 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	if d.tls == nil {
		return c, nil
	}
	tc := tls.Client(c, d.tls)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// load is a set of rooms on one server, each with one sender (its first
// member) and receivers that read on a goroutine each. A message is done
// when every receiver of its room has it.
type load struct {
	p     protocol
	rooms []*room
	size  int

	fail     chan struct{}
	failOnce sync.Once
	err      error
	wg       sync.WaitGroup
	conns    []net.Conn
	closing  atomic.Bool
	received atomic.Uint64
}

type room struct {
	l       *load
	id      string
	sender  net.Conn
	members int
	sent    uint64
	out     []byte
	// Closed-loop rooms keep at most len(slots) messages in flight.
	slots  []slot
	tokens chan struct{}
	hists  []*bench.Histogram // one per receiver, merged after a drain
}

type slot struct {
	left atomic.Int32
	_    [60]byte
}

// newLoad opens rooms of members each. window > 0 makes each room closed
// loop with that many messages in flight.
func newLoad(p protocol, d dialer, rooms, members, window int) (*load, error) {
	l := &load{p: p, fail: make(chan struct{})}
	type job struct {
		r    *room
		user int
	}
	jobs := make(chan job)
	errc := make(chan error, 1)
	var jwg sync.WaitGroup
	var mu sync.Mutex
	for range 32 {
		jwg.Add(1)
		go func() {
			defer jwg.Done()
			for j := range jobs {
				c, err := l.join(d, j.r, j.user)
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					continue
				}
				mu.Lock()
				l.conns = append(l.conns, c)
				mu.Unlock()
			}
		}()
	}
	for i := range rooms {
		r := &room{l: l, id: "r" + strconv.Itoa(i), members: members}
		if window > 0 {
			r.slots = make([]slot, window)
			r.tokens = make(chan struct{}, window)
			for range window {
				r.tokens <- struct{}{}
			}
		}
		r.hists = make([]*bench.Histogram, members)
		l.rooms = append(l.rooms, r)
	}
	// The sender joins first, alone, so it is there before any receiver.
	for _, r := range l.rooms {
		c, err := l.join(d, r, 0)
		if err != nil {
			close(jobs)
			jwg.Wait()
			l.close()
			return nil, err
		}
		l.conns = append(l.conns, c)
		r.sender = c
	}
	for u := 1; u < members; u++ {
		for _, r := range l.rooms {
			jobs <- job{r, u}
		}
	}
	close(jobs)
	jwg.Wait()
	select {
	case err := <-errc:
		l.close()
		return nil, err
	default:
	}
	return l, nil
}

func (l *load) join(d dialer, r *room, user int) (net.Conn, error) {
	c, err := d.dial()
	if err != nil {
		return nil, err
	}
	sr := &stampReader{r: c}
	rd := bufio.NewReaderSize(sr, 32<<10)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if err := l.p.join(c, rd, r.id, "u"+strconv.Itoa(user)); err != nil {
		c.Close()
		return nil, fmt.Errorf("join %s as u%d: %w", r.id, user, err)
	}
	c.SetDeadline(time.Time{})
	h := new(bench.Histogram)
	r.hists[user] = h
	l.wg.Add(1)
	go l.read(c, sr, rd, r, h)
	return c, nil
}

// stampReader notes when each read from a member's connection returned.
// A delivery arrived with the read that completed it, so its latency is
// taken from that one clock reading, not from a reading per frame: at
// about 50 ns a reading, a reading per frame cost the load generator a
// quarter of its CPU in rooms of 16, and it is the busy side there. What
// is left out is the generator's own time parsing the frames of one
// read, which says nothing about the server.
type stampReader struct {
	r  io.Reader
	at int64 // UnixNano of the last read that returned bytes
}

func (s *stampReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.at = time.Now().UnixNano()
	}
	return n, err
}

// read records every delivery on c until c closes.
func (l *load) read(c net.Conn, sr *stampReader, rd *bufio.Reader, r *room, h *bench.Histogram) {
	defer l.wg.Done()
	for {
		ok, num, at, err := l.p.next(c, rd)
		if err != nil {
			if !l.closing.Load() {
				l.setErr(fmt.Errorf("room %s: read: %w", r.id, err))
			}
			return
		}
		if !ok {
			continue
		}
		h.Record(time.Duration(sr.at - at))
		l.received.Add(1)
		if r.slots != nil {
			if r.slots[num%uint64(len(r.slots))].left.Add(-1) == 0 {
				r.tokens <- struct{}{}
			}
		}
	}
}

func (l *load) setErr(err error) {
	l.failOnce.Do(func() {
		l.err = err
		close(l.fail)
	})
}

// send publishes r's next message, stamped at. A closed-loop room first
// waits for a free slot; with batch > 1 it then also takes the slots that
// are free already, up to batch in all, and writes those messages in one
// system call, as a client that buffers its writes does (nats.go's
// flusher, nearchat's link writer).
func (l *load) send(r *room, at time.Time, batch int) error {
	n := 1
	if r.tokens != nil {
		select {
		case <-r.tokens:
		case <-l.fail:
			return l.err
		}
	more:
		for n < batch {
			select {
			case <-r.tokens:
				n++
			default:
				break more
			}
		}
	}
	r.out = r.out[:0]
	for range n {
		r.sent++
		if r.slots != nil {
			r.slots[r.sent%uint64(len(r.slots))].left.Store(int32(r.members - 1))
		}
		r.out = l.p.appendPub(r.out, r.id, r.sent, at.UnixNano(), l.size)
	}
	if _, err := r.sender.Write(r.out); err != nil {
		l.setErr(fmt.Errorf("room %s: send: %w", r.id, err))
		return l.err
	}
	return nil
}

// expected is how many deliveries the messages sent so far make.
func (l *load) expected() uint64 {
	var n uint64
	for _, r := range l.rooms {
		n += r.sent * uint64(r.members-1)
	}
	return n
}

// drain waits until every message sent has reached every receiver.
func (l *load) drain(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for l.received.Load() < l.expected() {
		select {
		case <-l.fail:
			return l.err
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d deliveries arrived in %v", l.received.Load(), l.expected(), timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return nil
}

// reset forgets the latencies recorded so far. Call it only after drain.
func (l *load) reset() {
	for _, r := range l.rooms {
		for _, h := range r.hists {
			h.Reset()
		}
	}
}

// latency merges every receiver's histogram. Call it only after drain.
func (l *load) latency() *bench.Histogram {
	var all bench.Histogram
	for _, r := range l.rooms {
		for _, h := range r.hists[1:] {
			all.Merge(h)
		}
	}
	return &all
}

func (l *load) close() {
	l.closing.Store(true)
	for _, c := range l.conns {
		c.Close()
	}
	l.wg.Wait()
}

// closedLoop sends from one room's sender for d, keeping the room's window
// full.
func (l *load) closedLoop(d time.Duration, batch int) error {
	r := l.rooms[0]
	end := time.Now().Add(d)
	for i := 0; ; i++ {
		if i%64 == 0 && time.Now().After(end) {
			return nil
		}
		if err := l.send(r, time.Now(), batch); err != nil {
			return err
		}
	}
}

// fixedRate sends rate messages a second in total, round robin over the
// rooms, for d. Each message is stamped with the time it was due, not the
// time it left, so a stalled sender shows up in the latency.
func (l *load) fixedRate(rate int, d time.Duration) error {
	start := time.Now()
	n := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		if err := l.send(l.rooms[i%len(l.rooms)], due, 1); err != nil {
			return err
		}
	}
	return nil
}
