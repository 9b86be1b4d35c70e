package chaos

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Dir is a direction through a proxy.
type Dir int

const (
	// Up is from the dialer (client, or chat server to Central) to the
	// target.
	Up Dir = iota
	// Down is from the target back to the dialer.
	Down
)

// Rule is the faults one direction of a link suffers. The zero Rule
// forwards everything at once.
type Rule struct {
	// Delay holds every frame (or chunk, on a raw link) this long; order
	// is kept.
	Delay time.Duration
	// Drop and Reorder are the chances that a frame is dropped, or held
	// back and sent after the next one (frame links only).
	Drop, Reorder float64
	// Dup sends every frame of these types twice (frame links only).
	Dup []wire.Type
	// Rate caps the bytes per second forwarded (0: no cap): a slow link,
	// or, on Down, a slow reader.
	Rate int
	// Stall stops forwarding (and so, once buffers fill, reading): a
	// reader that stops reading, or a partition that TCP outlasts.
	Stall bool
	// Blackhole discards everything.
	Blackhole bool
	// Rounds, above 1, limits Delay on Down to one round in Rounds, the
	// first included: a round is a burst of exchanges, an Up frame coming
	// less than roundGap after the last Up frame came or Down frame went,
	// as a probe round's Pings and Pongs do (frame links only). A client whose probe rounds stall now and then, as on a busy
	// machine, reads every server slow in those rounds alone.
	Rounds int
}

// roundGap is the silence that ends a round (Rule.Rounds): more than the
// client takes from a Pong to its next Ping, less than the interval
// between probe rounds.
const roundGap = 500 * time.Millisecond

// Proxy forwards TCP connections from its own loopback address to a
// target, with faults. On a frame link it cuts the stream into frames with
// pkg/wire, so it can drop, duplicate, reorder, inject and replay whole
// frames, and it learns which user a chat connection belongs to from its
// Join, so a rule can hit one member. A raw link (HTTP) is cut into
// chunks and supports delay, rate, stall, black-hole and cut. Safe for
// concurrent use.
type Proxy struct {
	Name   string
	Target string
	frames bool
	l      net.Listener

	mu    sync.Mutex
	rng   *rand.Rand
	rules map[string]*[2]Rule // by user; "" for every connection
	conns map[*pconn]struct{}
	wg    sync.WaitGroup
}

// sockBuf and queued bound what a proxy holds per connection and
// direction: socket buffers, and frames read but not yet forwarded.
const (
	sockBuf = 32 << 10
	queued  = 64
)

// unit is a frame (or a chunk on a raw link) with the time it was read.
type unit struct {
	b   []byte
	at  time.Time
	t   wire.Type
	ok  bool // b is a whole frame
	eof bool // the source ended: half-close the destination
	rst bool // the source broke (a reset, a frame cut short): close both sides
}

type pconn struct {
	p      *Proxy
	a, b   net.Conn // dialer side, target side
	q      [2]chan unit
	mu     sync.Mutex
	user   string
	last   [2]map[wire.Type][]byte
	closed chan struct{}
	once   sync.Once
	ended  int       // directions whose source ended cleanly (under mu)
	lastAt time.Time // when the last Up frame came or Down frame went (under mu)
	round  int       // rounds of Up frames so far, see Rule.Rounds (under mu)
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(name, target string, frames bool, seed uint64) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Name: name, Target: target, frames: frames, l: l, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		rules: map[string]*[2]Rule{}, conns: map[*pconn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Close stops listening and cuts every connection.
func (p *Proxy) Close() {
	p.l.Close()
	p.Cut("")
	p.wg.Wait()
}

// Set gives the connections of user ("" for all) rule r in direction d.
func (p *Proxy) Set(user string, d Dir, r Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.rules[user]
	if rs == nil {
		rs = &[2]Rule{}
		p.rules[user] = rs
	}
	rs[d] = r
}

// Heal removes every rule.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.rules = map[string]*[2]Rule{}
	p.mu.Unlock()
}

// rule is the rule for c in direction d: the user's, else everyone's.
func (p *Proxy) rule(c *pconn, d Dir) Rule {
	c.mu.Lock()
	user := c.user
	c.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if rs := p.rules[user]; rs != nil && user != "" {
		return rs[d]
	}
	if rs := p.rules[""]; rs != nil {
		return rs[d]
	}
	return Rule{}
}

func (p *Proxy) chance(f float64) bool {
	if f <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64() < f
}

// Cut closes the connections of user ("" for all) at once.
func (p *Proxy) Cut(user string) int {
	n := 0
	for _, c := range p.match(user) {
		c.close()
		n++
	}
	return n
}

func (p *Proxy) match(user string) []*pconn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*pconn
	for c := range p.conns {
		c.mu.Lock()
		u := c.user
		c.mu.Unlock()
		if user == "" || u == user {
			out = append(out, c)
		}
	}
	return out
}

// Inject sends frame in direction d on every connection of user ("" for
// all), between two whole frames. It returns how many connections got it.
func (p *Proxy) Inject(user string, d Dir, frame []byte) int {
	n := 0
	for _, c := range p.match(user) {
		select {
		case c.q[d] <- unit{b: slices.Clone(frame), at: time.Now(), t: wire.Type(frame[wire.LenSize]), ok: true}:
			n++
		case <-c.closed:
		}
	}
	return n
}

// Replay sends again, n times, the last frame of type t that went in
// direction d on user's connections: a stale report.
func (p *Proxy) Replay(user string, d Dir, t wire.Type, n int) int {
	sent := 0
	for _, c := range p.match(user) {
		c.mu.Lock()
		f := c.last[d][t]
		c.mu.Unlock()
		for i := 0; f != nil && i < n; i++ {
			select {
			case c.q[d] <- unit{b: f, at: time.Now(), t: t, ok: true}:
				sent++
			case <-c.closed:
			}
		}
	}
	return sent
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		a, err := p.l.Accept()
		if err != nil {
			return
		}
		b, err := net.DialTimeout("tcp", p.Target, 2*time.Second)
		if err != nil {
			a.Close()
			continue
		}
		// Small socket buffers, so a stalled or slow direction pushes
		// back on the sender within tens of kilobytes, as a slow reader
		// does, instead of vanishing into megabytes of loopback buffers.
		for _, conn := range []net.Conn{a, b} {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(sockBuf)
				_ = tc.SetWriteBuffer(sockBuf)
			}
		}
		c := &pconn{p: p, a: a, b: b, closed: make(chan struct{})}
		for d := range c.q {
			c.q[d] = make(chan unit, queued)
			c.last[d] = map[wire.Type][]byte{}
		}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(4)
		go c.read(Up, a)
		go c.read(Down, b)
		go c.write(Up, b)
		go c.write(Down, a)
	}
}

func (c *pconn) close() {
	c.once.Do(func() {
		close(c.closed)
		c.a.Close()
		c.b.Close()
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

// read cuts what src sends into frames with wire.Reader (or into chunks on
// a raw link, or once a frame link carries something that is no frame)
// and queues them. A source that breaks has what it sent before passed on
// first, as a network delivers the segments ahead of a reset; then the
// writer closes both sides.
func (c *pconn) read(d Dir, src net.Conn) {
	defer c.p.wg.Done()
	if !c.readFrom(d, src) {
		select {
		case c.q[d] <- unit{rst: true}:
		case <-c.closed:
		}
	}
}

// readFrom queues src's frames or chunks; it reports whether src ended
// cleanly (an EOF between frames, queued for the writer to pass on as a
// half-close).
func (c *pconn) readFrom(d Dir, src net.Conn) bool {
	queue := func(u unit) bool {
		select {
		case c.q[d] <- u:
			return true
		case <-c.closed:
			return false
		}
	}
	if c.p.frames {
		fr := wire.NewReader(src, wire.MaxFrame)
		for {
			t, body, err := fr.Next()
			if err != nil {
				if errors.Is(err, io.EOF) {
					return queue(unit{eof: true})
				}
				if errors.Is(err, io.ErrUnexpectedEOF) || isNetErr(err) {
					return false
				}
				// Not ours to judge: pass the rest through untouched.
				return c.raw(fr, queue)
			}
			f := make([]byte, wire.HeaderSize+len(body))
			binary.BigEndian.PutUint32(f, uint32(1+len(body)))
			f[wire.LenSize] = byte(t)
			copy(f[wire.HeaderSize:], body)
			u := unit{b: f, at: time.Now(), t: t, ok: true}
			c.learn(d, u)
			if !queue(u) {
				return false
			}
		}
	}
	return c.raw(src, queue)
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed)
}

// raw queues what r yields in chunks as they come; it reports whether r
// ended cleanly.
func (c *pconn) raw(r io.Reader, queue func(unit) bool) bool {
	tmp := make([]byte, 32<<10)
	for {
		n, err := r.Read(tmp)
		if n > 0 && !queue(unit{b: slices.Clone(tmp[:n]), at: time.Now()}) {
			return false
		}
		if err != nil {
			return errors.Is(err, io.EOF) && queue(unit{eof: true})
		}
	}
}

// halfClose passes an EOF on: it closes dst for writing, and the whole
// connection once both directions have ended.
func (c *pconn) halfClose(dst net.Conn) {
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	c.mu.Lock()
	c.ended++
	both := c.ended == 2
	c.mu.Unlock()
	if both {
		c.close()
	}
}

// learn notes the user of a chat connection and the last frame of each
// type.
func (c *pconn) learn(d Dir, u unit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last[d][u.t] = u.b
	if d == Up {
		if u.at.Sub(c.lastAt) > roundGap {
			c.round++
		}
		c.lastAt = u.at
	}
	if d == Up && u.t == proto.TJoin {
		var j proto.Join
		if wire.Unmarshal(u.b[wire.HeaderSize:], &j) == nil {
			c.user = j.User
		}
	}
}

// stalledRound reports whether the current round is one of every n that
// Rule.Rounds delays.
func (c *pconn) stalledRound(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.round > 0 && (c.round-1)%n == 0
}

// write forwards queued units to dst under the rule of the moment.
func (c *pconn) write(d Dir, dst net.Conn) {
	defer c.p.wg.Done()
	if c.writeTo(d, dst) {
		c.halfClose(dst)
	} else {
		c.close()
	}
}

// writeTo forwards until the source's EOF (true) or an error or close
// (false).
func (c *pconn) writeTo(d Dir, dst net.Conn) bool {
	var held []byte // a frame held back to be reordered
	for {
		var u unit
		select {
		case u = <-c.q[d]:
		case <-c.closed:
			return false
		case <-time.After(50 * time.Millisecond):
			if held != nil {
				if _, err := dst.Write(held); err != nil {
					return false
				}
				held = nil
			}
			continue
		}
		if u.eof || u.rst {
			if held != nil {
				if _, err := dst.Write(held); err != nil {
					return false
				}
			}
			return u.eof
		}
		r := c.p.rule(c, d)
		for r.Stall {
			select {
			case <-c.closed:
				return false
			case <-time.After(20 * time.Millisecond):
			}
			r = c.p.rule(c, d)
		}
		if r.Rounds > 1 && !c.stalledRound(r.Rounds) {
			r.Delay = 0
		}
		if wait := time.Until(u.at.Add(r.Delay)); wait > 0 {
			select {
			case <-c.closed:
				return false
			case <-time.After(wait):
			}
		}
		if r.Blackhole || (u.ok && c.p.chance(r.Drop)) {
			continue
		}
		out := u.b
		if u.ok && slices.Contains(r.Dup, u.t) {
			out = append(slices.Clone(u.b), u.b...)
		}
		if u.ok && held == nil && c.p.chance(r.Reorder) {
			held = out
			continue
		}
		if held != nil {
			out = append(out, held...)
			held = nil
		}
		if d == Down && u.ok {
			// Before the write: the dialer's next frame, sent once this
			// one arrives, must not find the time of the one before
			// (CI under -race took a round's second Ping for a new round).
			c.mu.Lock()
			c.lastAt = time.Now()
			c.mu.Unlock()
		}
		if _, err := dst.Write(out); err != nil {
			return false
		}
		if r.Rate > 0 {
			select {
			case <-c.closed:
				return false
			case <-time.After(time.Duration(len(out)) * time.Second / time.Duration(r.Rate)):
			}
		}
	}
}
