// Package wiretest is a raw protocol peer and an echo server for tests: a
// Peer sends what a correct client would not (frames out of order, raw
// bytes, wrong versions) and checks the answers frame by frame; an Echo
// stands in for a chat server where only Hello and Ping matter (RTT probes,
// Central's echo check). Both read and write through pkg/proto's Conn, so
// the tests use the same frame reader as the programs. Only tests import
// it.
package wiretest

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Timeout bounds each wait of a Peer for a frame.
const Timeout = 5 * time.Second

// Peer is one raw protocol connection, owned by one test goroutine.
type Peer struct {
	t    testing.TB
	Name string // prefixes failure messages when set
	Conn *proto.Conn
}

// Dial connects to addr without a handshake; the connection closes when the
// test ends.
func Dial(t testing.TB, addr string) *Peer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return NewPeer(t, nc)
}

// NewPeer makes a Peer of nc (a TLS connection, say), which closes when the
// test ends.
func NewPeer(t testing.TB, nc net.Conn) *Peer {
	t.Cleanup(func() { nc.Close() })
	return &Peer{t: t, Conn: proto.NewConn(nc, 0)}
}

// Hello sends h in the current version and returns the Welcome, failing the
// test on anything else.
func (p *Peer) Hello(h *proto.Hello) *proto.Welcome {
	p.t.Helper()
	hh := *h
	hh.V = wire.Version
	p.Send(&hh)
	m, err := p.Next(Timeout)
	if err != nil {
		p.fatalf("waiting for welcome: %v", err)
	}
	w, err := proto.CheckWelcome(m)
	if err != nil {
		p.fatalf("handshake: %v", err)
	}
	return w
}

// Send writes m as one frame.
func (p *Peer) Send(m wire.Message) {
	p.t.Helper()
	if err := p.Conn.Send(m); err != nil {
		p.fatalf("send %T: %v", m, err)
	}
}

// Raw writes b as it is.
func (p *Peer) Raw(b []byte) {
	p.t.Helper()
	if _, err := p.Conn.NetConn().Write(b); err != nil {
		p.fatalf("write: %v", err)
	}
}

// Close closes the connection.
func (p *Peer) Close() { p.Conn.Close() }

// Next reads one frame, waiting at most timeout.
func (p *Peer) Next(timeout time.Duration) (wire.Message, error) {
	nc := p.Conn.NetConn()
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	defer nc.SetReadDeadline(time.Time{})
	return p.Conn.Recv()
}

// Expect returns the next frame of type T, passing over the frames skip
// accepts (nil: none), and fails the test on any other frame, on the end of
// the connection, or after Timeout.
func Expect[T wire.Message](p *Peer, skip func(wire.Message) bool) T {
	p.t.Helper()
	var zero T // a nil pointer, whose FrameType is still its type's
	return p.ExpectType(zero.FrameType(), skip).(T)
}

// ExpectType is Expect for a frame type known at run time.
func (p *Peer) ExpectType(typ wire.Type, skip func(wire.Message) bool) wire.Message {
	p.t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		m, err := p.Next(time.Until(deadline))
		if err != nil {
			p.fatalf("waiting for frame 0x%02x: %v", byte(typ), err)
		}
		if skip != nil && skip(m) {
			continue
		}
		if m.FrameType() != typ {
			p.fatalf("waiting for frame 0x%02x: got %T %+v", byte(typ), m, m)
		}
		return m
	}
}

// AllBut is a skip function for Expect that passes over every frame not
// of type typ.
func AllBut(typ wire.Type) func(wire.Message) bool {
	return func(m wire.Message) bool { return m.FrameType() != typ }
}

// ExpectClosed reads until the other side closes the connection, failing
// after Timeout. With code non-zero, the first Error frame must be a fatal
// one with that code; other frames before it are passed over.
func (p *Peer) ExpectClosed(code proto.Code) {
	p.t.Helper()
	deadline := time.Now().Add(Timeout)
	told := code == 0
	for {
		m, err := p.Next(time.Until(deadline))
		if err != nil {
			if !Closed(err) {
				p.fatalf("want the connection closed, got %v", err)
			}
			if !told {
				p.fatalf("closed without an error frame, want fatal %s", code)
			}
			return
		}
		if e, ok := m.(*proto.Error); ok && !told {
			if e.Code != code || !e.Fatal {
				p.fatalf("error frame %+v, want fatal %s", e, code)
			}
			told = true
		}
	}
}

// ExpectClosedQuietly reads until the other side closes the connection,
// failing after Timeout or on any Error frame: for a close that must not
// be answered with one (the peer's own fatal Error, say).
func (p *Peer) ExpectClosedQuietly() {
	p.t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		m, err := p.Next(time.Until(deadline))
		if err != nil {
			if !Closed(err) {
				p.fatalf("want the connection closed, got %v", err)
			}
			return
		}
		if e, ok := m.(*proto.Error); ok {
			p.fatalf("got %+v, want the connection closed without an error frame", e)
		}
	}
}

// Closed reports whether err means the other side closed the connection
// (EOF or a reset), as opposed to a timeout or a frame cut short.
func Closed(err error) bool {
	var op *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &op) && !op.Timeout()
}

func (p *Peer) fatalf(format string, a ...any) {
	p.t.Helper()
	if p.Name != "" {
		format = p.Name + ": " + format
	}
	p.t.Fatalf(format, a...)
}

// Echo is a stand-in chat server: it answers Hello with Welcome and Ping
// with Pong, and nothing else.
type Echo struct {
	ln      net.Listener
	delay   time.Duration
	welcome func(*proto.Hello) wire.Message

	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	stopped bool
	once    sync.Once
}

// EchoServer starts an Echo on a loopback port until the test ends. Each
// Pong waits delay. welcome answers a Hello (nil: a Welcome naming no
// server, so that it stands in for a server of any id); a
// welcome that returns nil leaves the dialer waiting, one that returns an
// Error refuses it.
func EchoServer(t testing.TB, delay time.Duration, welcome func(*proto.Hello) wire.Message) *Echo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return EchoOn(t, ln, delay, welcome)
}

// EchoOn is EchoServer on ln: on the address of one stopped before, it
// stands for a server that restarted.
func EchoOn(t testing.TB, ln net.Listener, delay time.Duration, welcome func(*proto.Hello) wire.Message) *Echo {
	t.Helper()
	if welcome == nil {
		welcome = func(*proto.Hello) wire.Message { return &proto.Welcome{V: wire.Version} }
	}
	e := &Echo{ln: ln, delay: delay, welcome: welcome, conns: map[net.Conn]struct{}{}}
	e.wg.Add(1)
	go e.accept()
	t.Cleanup(e.Stop)
	return e
}

// Addr is where the Echo listens.
func (e *Echo) Addr() string { return e.ln.Addr().String() }

// Stop closes the listener and every connection, as a server that dies.
// It is idempotent.
func (e *Echo) Stop() {
	e.once.Do(func() {
		e.ln.Close()
		e.mu.Lock()
		e.stopped = true
		for c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
}

func (e *Echo) accept() {
	defer e.wg.Done()
	for {
		nc, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		if e.stopped {
			e.mu.Unlock()
			nc.Close()
			return
		}
		e.conns[nc] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			defer func() {
				e.mu.Lock()
				delete(e.conns, nc)
				e.mu.Unlock()
				nc.Close()
			}()
			e.serve(proto.NewConn(nc, 0))
		}()
	}
}

func (e *Echo) serve(c *proto.Conn) {
	for {
		m, err := c.Recv()
		if err != nil {
			return
		}
		var reply wire.Message
		switch m := m.(type) {
		case *proto.Hello:
			reply = e.welcome(m)
		case *proto.Ping:
			time.Sleep(e.delay)
			reply = &proto.Pong{ID: m.ID, At: m.At}
		}
		if reply != nil {
			if err := c.Send(reply); err != nil {
				return
			}
		}
	}
}
