package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Workload describes one broadcast run: Members connections join one room,
// member 0 sends Chat frames of Size text bytes, and the server delivers each
// to the other Members-1, with at most Window messages not yet received by
// every member.
type Workload struct {
	Members int
	Size    int
	// Window is the number of messages in flight; 0 means 64.
	Window int
	// Room is the room id; empty means "bench".
	Room string
	// Dialers bounds concurrent connection setup; 0 means 32.
	Dialers int
	// Readers is the number of epoll reader goroutines shared by all
	// members; 0 means 1. The client runs on the same cores as the server,
	// so it reads with as few goroutines and system calls as it can.
	Readers int
	// Stall fails the session when messages are in flight and none
	// completes for this long; 0 means 30 s.
	Stall time.Duration
}

// Result is what a session measured since its last Reset.
type Result struct {
	Messages  uint64        // chat messages sent and delivered to every member
	Delivered uint64        // Deliver frames received, Messages*(Members-1)
	Elapsed   time.Duration // Reset to the end of the last Drain
	Latency   Histogram     // send-to-receive latency of every Deliver
}

// MsgsPerSec is delivered messages per second.
func (r *Result) MsgsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Delivered) / r.Elapsed.Seconds()
}

// Session is a room of Workload.Members connections on one server, ready to
// broadcast. Send and Drain must be called from one goroutine; Close from
// any.
type Session struct {
	w       Workload
	members []*member
	sender  *member
	pollers []*poller

	slots  []slot
	tokens chan struct{}
	text   string
	out    []byte
	sent   uint64
	done   atomic.Uint64
	start  time.Time
	end    time.Time

	presence atomic.Int64

	failOnce sync.Once
	failed   chan struct{}
	err      error
	closing  atomic.Bool
	quit     chan struct{}
}

// slot counts the receivers that still have to see one in-flight message.
// Padded so neighbouring slots do not share a cache line.
type slot struct {
	left atomic.Int32
	_    [60]byte
}

type member struct {
	s    *Session
	conn net.Conn
	fd   int
	rd   frameReader
	user string
	hist Histogram
	// lastSeq is the last Deliver seq seen; Deliver seqs must arrive
	// without gaps or reordering.
	lastSeq uint64
	dec     proto.Deliver
}

// Open dials w.Members connections to addr, completes Hello/Welcome and Join
// on each, and waits until every Presence the joins caused has arrived, so a
// measurement sees only chat traffic.
func Open(addr string, w Workload) (*Session, error) {
	if w.Members < 2 {
		return nil, fmt.Errorf("bench: %d members: need at least 2", w.Members)
	}
	if w.Size < 0 || w.Size > proto.MaxText {
		return nil, fmt.Errorf("bench: size %d: want 0..%d", w.Size, proto.MaxText)
	}
	if w.Window <= 0 {
		w.Window = 64
	}
	if w.Room == "" {
		w.Room = "bench"
	}
	if w.Dialers <= 0 {
		w.Dialers = 32
	}
	if w.Stall <= 0 {
		w.Stall = 30 * time.Second
	}
	if w.Readers <= 0 {
		w.Readers = 1
	}
	s := &Session{
		w:       w,
		members: make([]*member, w.Members),
		slots:   make([]slot, w.Window),
		tokens:  make(chan struct{}, w.Window),
		failed:  make(chan struct{}),
		quit:    make(chan struct{}),
	}
	for range w.Window {
		s.tokens <- struct{}{}
	}
	for range w.Readers {
		p, err := newPoller()
		if err != nil {
			s.Close()
			return nil, err
		}
		s.pollers = append(s.pollers, p)
	}
	s.text = strings.Repeat("x", w.Size)

	// Each member learns of every other member once: listed in its Joined
	// or announced by a Presence (a later joiner, or one that did not fit
	// in the Joined frame).
	var expectPresence atomic.Int64
	var mu sync.Mutex
	var dialErr error
	next := atomic.Int64{}
	var dwg sync.WaitGroup
	for range min(w.Dialers, w.Members) {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= w.Members || s.Err() != nil {
					return
				}
				m, before, err := s.join(addr, i)
				if err != nil {
					mu.Lock()
					dialErr = errors.Join(dialErr, err)
					mu.Unlock()
					// Stop the other dialers too.
					s.fail(err)
					return
				}
				s.members[i] = m
				expectPresence.Add(int64(w.Members - before))
				// Read at once: Presence frames for later joiners must not
				// back up into the server while the others dial.
				if err := s.pollers[i%len(s.pollers)].add(m); err != nil {
					mu.Lock()
					dialErr = errors.Join(dialErr, err)
					mu.Unlock()
					s.fail(err)
					return
				}
			}
		}()
	}
	dwg.Wait()
	if dialErr != nil {
		s.Close()
		return nil, dialErr
	}
	s.sender = s.members[0]

	deadline := time.Now().Add(time.Duration(w.Members)*10*time.Millisecond + 30*time.Second)
	for s.presence.Load() < expectPresence.Load() {
		select {
		case <-s.failed:
			s.Close()
			return nil, s.err
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("bench: %d of %d presence frames arrived", s.presence.Load(), expectPresence.Load())
		}
	}
	go s.watchdog()
	s.start = time.Now()
	return s, nil
}

func (s *Session) join(addr string, i int) (*member, int, error) {
	user := "u" + strconv.FormatInt(int64(i), 36)
	var c net.Conn
	var err error
	// A burst of dials can overflow the listen backlog; retry briefly.
	for try := range 5 {
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		if err == nil {
			break
		}
		time.Sleep(time.Duration(try+1) * 20 * time.Millisecond)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	m := &member{s: s, conn: c, user: user}
	m.rd.init(c, readBuf)
	fail := func(err error) (*member, int, error) {
		c.Close()
		return nil, 0, fmt.Errorf("bench: member %s: %w", user, err)
	}
	b, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "bench/1"})
	b, _ = wire.AppendFrame(b, &proto.Join{Room: s.w.Room, User: user})
	// Every join is announced to every member already there, so in a big
	// room a join waits behind thousands of Presence writes.
	c.SetDeadline(time.Now().Add(30*time.Second + time.Duration(s.w.Members)*20*time.Millisecond))
	if _, err := c.Write(b); err != nil {
		return fail(err)
	}
	var joined proto.Joined
	for got := 0; got < 2; {
		t, body, err := m.rd.next()
		if err != nil {
			return fail(err)
		}
		switch t {
		case proto.TWelcome:
			m, err := proto.Decode(t, body)
			if err == nil {
				_, err = proto.CheckWelcome(m)
			}
			if err != nil {
				return fail(err)
			}
			got++
		case proto.TJoined:
			if err := wire.Unmarshal(body, &joined); err != nil {
				return fail(err)
			}
			got++
		case proto.TPresence:
			s.presence.Add(1)
		case proto.TPresences:
			n, err := presences(body)
			if err != nil {
				return fail(err)
			}
			s.presence.Add(n)
		case proto.TError:
			return fail(decodeError(body))
		default:
			return fail(fmt.Errorf("unexpected frame 0x%02x during join", byte(t)))
		}
	}
	c.SetDeadline(time.Time{})
	if rd := &m.rd; len(rd.buf) > readBuf && rd.w-rd.r <= readBuf {
		// A big room's Joined frame grew the buffer; thousands of members
		// should not each keep 64 KiB.
		buf := make([]byte, readBuf)
		rd.w = copy(buf, rd.buf[rd.r:rd.w])
		rd.buf, rd.r = buf, 0
	}
	return m, len(joined.Members), nil
}

// readBuf is each member's read buffer: big enough that one read takes
// many queued frames.
const readBuf = 16 << 10

func decodeError(body []byte) error {
	var e proto.Error
	if err := wire.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("undecodable error frame: %w", err)
	}
	return &e
}

func (s *Session) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.failed)
	})
}

// watchdog fails the session when in-flight messages stop completing, so a
// stuck server ends a benchmark instead of hanging it.
func (s *Session) watchdog() {
	tick := time.NewTicker(s.w.Stall / 10)
	defer tick.Stop()
	last, since := s.done.Load(), time.Now()
	for {
		select {
		case <-s.quit:
			return
		case <-s.failed:
			return
		case now := <-tick.C:
			d := s.done.Load()
			if d != last || len(s.tokens) == cap(s.tokens) {
				last, since = d, now
				continue
			}
			if now.Sub(since) >= s.w.Stall {
				s.fail(fmt.Errorf("bench: no message completed for %v (%d done)", s.w.Stall, d))
				return
			}
		}
	}
}

// Send sends one chat message, first waiting until fewer than Window are in
// flight.
func (s *Session) Send() error {
	select {
	case <-s.tokens:
	case <-s.failed:
		return s.err
	}
	s.sent++
	s.slots[s.sent%uint64(len(s.slots))].left.Store(int32(s.w.Members - 1))
	s.out = proto.AppendChat(s.out[:0], s.sent, time.Now().UnixNano(), s.text)
	if _, err := s.sender.conn.Write(s.out); err != nil {
		s.fail(fmt.Errorf("bench: send: %w", err))
		return s.err
	}
	return nil
}

// Drain waits until every message sent has reached every member.
func (s *Session) Drain() error {
	n := cap(s.tokens)
	for i := range n {
		select {
		case <-s.tokens:
		case <-s.failed:
			for range i {
				s.tokens <- struct{}{}
			}
			return s.err
		}
	}
	s.end = time.Now()
	for range n {
		s.tokens <- struct{}{}
	}
	return nil
}

// SetSize changes the text size of the messages sent from now on, so one
// room (whose setup is quadratic in its members) serves several sizes.
// Call it only after Drain.
func (s *Session) SetSize(n int) error {
	if n < 0 || n > proto.MaxText {
		return fmt.Errorf("bench: size %d: want 0..%d", n, proto.MaxText)
	}
	s.w.Size = n
	s.text = strings.Repeat("x", n)
	return nil
}

// Reset starts a new measurement. Call it only after Drain.
func (s *Session) Reset() {
	for _, m := range s.members {
		m.hist.Reset()
	}
	s.done.Store(0)
	s.start = time.Now()
}

// Result reports the measurement since Open or the last Reset. Call it only
// after Drain.
func (s *Session) Result() Result {
	var r Result
	for _, m := range s.members {
		r.Latency.Merge(&m.hist)
	}
	r.Messages = s.done.Load()
	r.Delivered = r.Latency.Count()
	r.Elapsed = s.end.Sub(s.start)
	return r
}

// Err is the first failure the session saw, or nil.
func (s *Session) Err() error {
	select {
	case <-s.failed:
		return s.err
	default:
		return nil
	}
}

// Close closes every connection and waits for the receivers to stop. It is
// idempotent.
func (s *Session) Close() error {
	if s.closing.Swap(true) {
		return nil
	}
	close(s.quit)
	for _, p := range s.pollers {
		p.close()
	}
	for _, m := range s.members {
		if m != nil {
			m.conn.Close()
		}
	}
	return nil
}

// consume handles every whole frame buffered for m: each Deliver is timed
// and counts its message's remaining receivers down.
func (m *member) consume() error {
	s := m.s
	rd := &m.rd
	for {
		t, body, ok, err := rd.frame()
		if err != nil || !ok {
			return err
		}
		switch t {
		case proto.TDeliver:
			now := time.Now().UnixNano()
			seq, num, at, ok := proto.DeliverInfo(body)
			if !ok {
				if err := wire.Unmarshal(body, &m.dec); err != nil {
					return fmt.Errorf("deliver: %w", err)
				}
				seq, num, at = m.dec.Seq, m.dec.Num, m.dec.At
			}
			m.hist.Record(time.Duration(now - at))
			if m.lastSeq != 0 && seq != m.lastSeq+1 {
				return fmt.Errorf("deliver seq %d after %d", seq, m.lastSeq)
			}
			m.lastSeq = seq
			sl := &s.slots[num%uint64(len(s.slots))]
			if sl.left.Add(-1) == 0 {
				s.done.Add(1)
				s.tokens <- struct{}{}
			}
		case proto.TPresence:
			s.presence.Add(1)
		case proto.TPresences:
			n, err := presences(body)
			if err != nil {
				return err
			}
			s.presence.Add(n)
		case proto.TAck, proto.TPong:
		case proto.TError:
			return decodeError(body)
		default:
			return fmt.Errorf("unexpected frame 0x%02x", byte(t))
		}
	}
}

// presences returns how many joins and leaves a Presences body carries.
func presences(body []byte) (int64, error) {
	var p proto.Presences
	if err := wire.Unmarshal(body, &p); err != nil {
		return 0, err
	}
	return int64(len(p.Changes)), nil
}

// frameReader reads whole frames from a connection into one reusable
// buffer; a frame returned aliases the buffer until the next call.
type frameReader struct {
	c    net.Conn
	buf  []byte
	r, w int
}

func (f *frameReader) init(c net.Conn, size int) {
	f.c, f.buf = c, make([]byte, size)
}

// InboundBuffered and Peek make f a wire.Inbound.
func (f *frameReader) InboundBuffered() int { return f.w - f.r }

func (f *frameReader) Peek(n int) ([]byte, error) {
	if n > f.w-f.r {
		return nil, io.ErrShortBuffer
	}
	return f.buf[f.r : f.r+n], nil
}

// frame splits off the next whole buffered frame; ok is false when no
// whole frame is buffered, and the buffer has then grown if the next frame
// would not fit.
func (f *frameReader) frame() (t wire.Type, body []byte, ok bool, err error) {
	if f.w == f.r {
		f.r, f.w = 0, 0
		return 0, nil, false, nil
	}
	t, body, n, err := wire.Next(f, 0)
	if err == nil {
		f.r += n
		return t, body, true, nil
	}
	if !errors.Is(err, wire.ErrIncomplete) {
		return 0, nil, false, err
	}
	f.compact()
	if n > len(f.buf) {
		f.buf = append(f.buf, make([]byte, n-len(f.buf))...)
	}
	return 0, nil, false, nil
}

func (f *frameReader) compact() {
	copy(f.buf, f.buf[f.r:f.w])
	f.w -= f.r
	f.r = 0
}

// next reads from the connection until a whole frame is buffered.
func (f *frameReader) next() (wire.Type, []byte, error) {
	for {
		t, body, ok, err := f.frame()
		if err != nil || ok {
			return t, body, err
		}
		n, err := f.c.Read(f.buf[f.w:])
		f.w += n
		if err != nil && n == 0 {
			return 0, nil, err
		}
	}
}
