// Package baseline is the comparison point for nearchat's chat server: a
// plain goroutine-per-connection server on package net that speaks the same
// protocol, built the way the paper's server was built.
//
// # Design
//
// Each accepted connection gets one goroutine that reads frames with a
// wire.Reader and handles them one at a time. Rooms live in a map behind one
// mutex; each room has its own mutex guarding its members, its sequence
// counter and a small history ring. A Chat is encoded once into a Deliver
// frame, and then, while the sending goroutine holds the room lock (which is
// what keeps every member's view in sequence order), it writes those bytes to
// each other member's net.Conn in turn, taking that member's write lock for
// each write, and finally writes the Ack to the sender. Every write is a
// system call made by the sender's goroutine; a member that stops reading
// blocks its whole room until its write deadline (Config.WriteTimeout)
// expires, after which it is disconnected. That is the naive design nearchat's
// chat server improves on; it is kept correct (framing with package wire,
// frame-size limits checked before buffering, the same error frames) so that
// the benchmarks compare designs, not bugs.
//
// # Concurrency
//
// Server's exported methods are safe for concurrent use.
package baseline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// Listen is the TCP address to serve on; port 0 picks a free port.
	Listen string
	// ID names the server in Welcome. Empty means "baseline-" and the port.
	ID string
	// MaxFrame is the largest inbound frame accepted (at most wire.MaxFrame).
	MaxFrame int
	// MaxMembers bounds the members of one room.
	MaxMembers int
	// History is how many recent Deliver frames each room keeps for members
	// that rejoin with Since > 0.
	History int
	// WriteTimeout bounds each write to a member; 0 means no deadline, so a
	// member that stops reading stalls its room for good.
	WriteTimeout time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a configuration listening on 127.0.0.1:3003.
func DefaultConfig() Config {
	return Config{
		Listen:       "127.0.0.1:3003",
		MaxFrame:     wire.MaxFrame,
		MaxMembers:   10_000,
		History:      256,
		WriteTimeout: 10 * time.Second,
	}
}

// Server is a goroutine-per-connection chat server.
type Server struct {
	cfg Config
	ln  net.Listener
	log *slog.Logger

	mu     sync.Mutex
	rooms  map[string]*room
	conns  map[*conn]struct{}
	closed bool

	wg        sync.WaitGroup
	closeOnce sync.Once
	done      chan struct{}
}

type room struct {
	name    string
	mu      sync.Mutex
	members map[string]*conn
	seq     uint64
	hist    [][]byte // ring of Deliver frames, hist[seq%len]
}

type conn struct {
	srv  *Server
	nc   net.Conn
	wmu  sync.Mutex
	room *room
	user string
	last uint64
}

var discard = slog.New(slog.DiscardHandler)

// New validates cfg and binds the listener.
func New(cfg Config) (*Server, error) {
	if cfg.MaxFrame <= wire.HeaderSize || cfg.MaxFrame > wire.MaxFrame {
		return nil, fmt.Errorf("baseline: max frame %d: want %d..%d", cfg.MaxFrame, wire.HeaderSize+1, wire.MaxFrame)
	}
	if cfg.MaxMembers <= 0 || cfg.History <= 0 || cfg.WriteTimeout < 0 {
		return nil, fmt.Errorf("baseline: max members %d, history %d and write timeout %v must be positive",
			cfg.MaxMembers, cfg.History, cfg.WriteTimeout)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("baseline: listen: %w", err)
	}
	if cfg.ID == "" {
		cfg.ID = "baseline-" + portOf(ln.Addr())
	}
	log := cfg.Logger
	if log == nil {
		log = discard
	}
	return &Server{
		cfg:   cfg,
		ln:    ln,
		log:   log,
		rooms: make(map[string]*room),
		conns: make(map[*conn]struct{}),
		done:  make(chan struct{}),
	}, nil
}

func portOf(a net.Addr) string {
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return p
}

// Addr returns the bound address as host:port. Safe for concurrent use.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run accepts connections until ctx ends or Close is called, then closes the
// server. It returns nil after a clean shutdown. Call it once.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	var tempDelay time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				s.wg.Wait()
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				s.Close()
				s.wg.Wait()
				return nil
			}
			// Out of file descriptors and the like: back off, as net/http does.
			tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept", "err", err, "retry", tempDelay)
			select {
			case <-time.After(tempDelay):
			case <-s.done:
			}
			continue
		}
		tempDelay = 0
		c := &conn{srv: s, nc: nc}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Close stops accepting, tells every connection the server is shutting
// down, closes them and waits for their goroutines. It is idempotent and
// safe for concurrent use.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		err = s.ln.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
		s.mu.Lock()
		s.closed = true
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		bye := mustFrame(&proto.Error{Code: proto.CodeShutdown, Reason: "server shutting down", Fatal: true})
		for _, c := range conns {
			c.writeWithin(bye, 100*time.Millisecond)
			c.nc.Close()
		}
	})
	s.wg.Wait()
	return err
}

func mustFrame(m wire.Message) []byte {
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		panic(err)
	}
	return b
}

// write sends one frame to c under its write lock.
func (c *conn) write(b []byte) error {
	return c.writeWithin(b, c.srv.cfg.WriteTimeout)
}

func (c *conn) writeWithin(b []byte, d time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := c.nc.Write(b)
	if err != nil {
		// A member that cannot take its frames is cut off, so the room can
		// go on; its reader goroutine sees the close and leaves the room.
		c.nc.Close()
	}
	return err
}

func (c *conn) send(m wire.Message) error {
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		return err
	}
	return c.write(b)
}

// fail sends a fatal error frame; the caller then returns, closing c.
func (c *conn) fail(code proto.Code, reason string) {
	c.send(&proto.Error{Code: code, Reason: reason, Fatal: true})
}

func (c *conn) serve() {
	s := c.srv
	defer s.wg.Done()
	defer func() {
		c.leave()
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	r := wire.NewReader(c.nc, s.cfg.MaxFrame)
	hello := false
	for {
		t, body, err := r.Next()
		var m wire.Message
		if err == nil {
			m, err = proto.Decode(t, body)
		}
		if err != nil {
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
			case proto.CodeOf(err) != proto.CodeInternal:
				c.fail(proto.CodeOf(err), err.Error())
			default:
				s.log.Debug("read", "err", err)
			}
			return
		}
		if !hello {
			h, ok := m.(*proto.Hello)
			if !ok {
				c.fail(proto.CodeNoHello, "the first frame must be hello")
				return
			}
			v, err := proto.CheckHello(h, "this server")
			if err != nil {
				c.fail(proto.CodeOf(err), proto.ReasonOf(err))
				return
			}
			hello = true
			if c.send(&proto.Welcome{V: v, Server: s.cfg.ID, Max: s.cfg.MaxFrame}) != nil {
				return
			}
			continue
		}
		if !c.handle(m) {
			return
		}
	}
}

// handle acts on one frame after the handshake and reports whether the
// connection stays open.
func (c *conn) handle(m wire.Message) bool {
	switch m := m.(type) {
	case *proto.Ping:
		return c.send(&proto.Pong{ID: m.ID, At: m.At}) == nil
	case *proto.Join:
		return c.join(m)
	case *proto.Chat:
		if c.room == nil {
			c.fail(proto.CodeNotJoined, "chat before join")
			return false
		}
		if len(m.Text) > proto.MaxText {
			c.fail(proto.CodeTooLarge, fmt.Sprintf("text of %d bytes, limit %d", len(m.Text), proto.MaxText))
			return false
		}
		return c.chat(m)
	case *proto.Leave:
		if c.room == nil {
			c.fail(proto.CodeNotJoined, "leave before join")
		}
		return false
	case *proto.Resend:
		if c.room == nil {
			c.fail(proto.CodeNotJoined, "resend before join")
			return false
		}
		c.forward(m.Of, &proto.Resend{Of: m.Of, After: m.After, By: c.user})
		return true
	case *proto.Missed:
		if c.room == nil {
			c.fail(proto.CodeNotJoined, "missed before join")
			return false
		}
		c.forward(m.To, m)
		return true
	case *proto.Hello:
		c.fail(proto.CodeUnknownType, "hello sent twice")
		return false
	default:
		c.fail(proto.CodeUnknownType, fmt.Sprintf("frame 0x%02x is not valid on a chat server", byte(m.FrameType())))
		return false
	}
}

func (c *conn) join(j *proto.Join) bool {
	s := c.srv
	if c.room != nil {
		c.fail(proto.CodeBadJoin, "already joined")
		return false
	}
	if err := proto.CheckRoom(j.Room); err != nil {
		c.fail(proto.CodeBadJoin, err.Error())
		return false
	}
	if err := proto.CheckUser(j.User); err != nil {
		c.fail(proto.CodeBadJoin, err.Error())
		return false
	}
	s.mu.Lock()
	r := s.rooms[j.Room]
	if r == nil {
		r = &room{name: j.Room, members: make(map[string]*conn), hist: make([][]byte, s.cfg.History)}
		s.rooms[j.Room] = r
	}
	// The room lock is taken under the server lock so that leave cannot
	// remove the room from the map between these two steps.
	r.mu.Lock()
	s.mu.Unlock()
	defer r.mu.Unlock()

	old := r.members[j.User]
	if old == nil && len(r.members) >= s.cfg.MaxMembers {
		c.fail(proto.CodeRoomFull, fmt.Sprintf("room has %d members", len(r.members)))
		return false
	}
	if old != nil {
		old.send(&proto.Error{Code: proto.CodeConflict, Reason: "replaced by a newer connection", Fatal: true})
		old.nc.Close()
	}
	c.room, c.user, c.last = r, j.User, j.LastSent
	r.members[j.User] = c

	// Joined must fit in one frame, which a member list of a few thousand
	// does not: it lists the joiner and as many others as fit, and the rest
	// are announced right after it as Presence frames.
	joined := &proto.Joined{Room: r.name, Epoch: j.Epoch, Seq: r.seq, Members: []proto.Member{{User: j.User, LastSent: j.LastSent}}}
	var rest []*conn
	budget := s.cfg.MaxFrame - 1024
	for u, m := range r.members {
		if m == c {
			continue
		}
		if budget -= len(u) + memberOverhead; budget < 0 {
			rest = append(rest, m)
			continue
		}
		joined.Members = append(joined.Members, proto.Member{User: u, LastSent: m.last})
	}
	var replay [][]byte
	if j.Since > 0 && j.Since < r.seq {
		oldest := uint64(1)
		if r.seq > uint64(len(r.hist)) {
			oldest = r.seq - uint64(len(r.hist)) + 1
		}
		first := j.Since + 1
		if first < oldest {
			joined.Truncated, joined.Oldest, first = true, oldest, oldest
		}
		for q := first; q <= r.seq; q++ {
			replay = append(replay, r.hist[q%uint64(len(r.hist))])
		}
	}
	if c.send(joined) != nil {
		return false
	}
	for _, m := range rest {
		if c.send(&proto.Presence{User: m.user, Here: true, LastSent: m.last}) != nil {
			return false
		}
	}
	for _, b := range replay {
		if c.write(b) != nil {
			return false
		}
	}
	here := mustFrame(&proto.Presence{User: j.User, Here: true, LastSent: j.LastSent})
	for u, m := range r.members {
		if u != j.User {
			m.write(here)
		}
	}
	return true
}

// memberOverhead bounds the msgpack bytes of one proto.Member besides its
// user name: a map header, two keys, a string header and a uint64.
const memberOverhead = 1 + 5 + 2 + 5 + 9

// chat is the broadcast path: one encoding, then one write per member from
// this goroutine, all under the room lock so sequence order holds.
func (c *conn) chat(m *proto.Chat) bool {
	r := c.room
	r.mu.Lock()
	if r.members[c.user] != c {
		// Replaced by a newer connection of the same user, which closed us.
		r.mu.Unlock()
		return false
	}
	r.seq++
	seq := r.seq
	frame, err := wire.AppendFrame(nil, &proto.Deliver{Seq: seq, From: c.user, Num: m.Num, At: m.At, Text: m.Text})
	if err != nil {
		r.seq--
		r.mu.Unlock()
		c.fail(proto.CodeInternal, err.Error())
		return false
	}
	r.hist[seq%uint64(len(r.hist))] = frame
	for u, mc := range r.members {
		if u != c.user {
			mc.write(frame)
		}
	}
	r.mu.Unlock()
	return c.send(&proto.Ack{Num: m.Num, Seq: seq}) == nil
}

func (c *conn) forward(to string, m wire.Message) {
	r := c.room
	r.mu.Lock()
	dst := r.members[to]
	r.mu.Unlock()
	if dst == nil {
		c.send(&proto.Error{Code: proto.CodeNotFound, Reason: "no such member in the room", Ref: to})
		return
	}
	dst.send(m)
}

// leave removes c from its room, tells the others, and drops the room when
// it is empty.
func (c *conn) leave() {
	s := c.srv
	s.mu.Lock()
	r := c.room
	if r == nil {
		s.mu.Unlock()
		return
	}
	r.mu.Lock()
	if r.members[c.user] != c {
		r.mu.Unlock()
		s.mu.Unlock()
		return
	}
	delete(r.members, c.user)
	c.room = nil
	if len(r.members) == 0 {
		delete(s.rooms, r.name)
	}
	s.mu.Unlock()
	gone := mustFrame(&proto.Presence{User: c.user, Here: false})
	for _, m := range r.members {
		m.write(gone)
	}
	r.mu.Unlock()
}
