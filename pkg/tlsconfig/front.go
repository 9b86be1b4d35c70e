package tlsconfig

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"nearchat/pkg/connlimit"
	"nearchat/pkg/proto"
)

// Front terminates TLS in front of a plaintext server, for gnet, which has
// no TLS of its own: each TLS connection is relayed to the plaintext
// listener, best a Unix socket in a private directory (see Backend), so TLS
// peers reach the same event loops and meet the same limits, slow-consumer
// rule included. The cost is one relay hop per connection; bench/ measures
// it beside the plain path. Its methods are safe for concurrent use.
type Front struct {
	ln      net.Listener
	backend string // "unix" or "tcp" address of the event loops
	network string
	sockDir string // private directory holding the Unix socket, if any
	log     func(msg string, args ...any)
	evicted func(settled bool) []byte // what an evicted client reads, if anything

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// HandshakeTimeout bounds a TLS handshake on a Front.
const HandshakeTimeout = 10 * time.Second

// NewFront starts relaying the connections accepted by ln (a TLS listener)
// to the plaintext server at network/backend. log may be nil. Close stops it
// and removes sockDir, the private directory made by Backend, if given.
//
// When ln is a connlimit NewcomerListener's, evicted (if not nil) gives
// what a client evicted for a newer connection reads, over TLS, before
// its connection closes: the server's own words for it (a fatal Error
// frame; settled says whether the server had answered it, so it lost its
// place for a fair share), where the listener alone could only close the
// TCP connection under the TLS one, and the client was left to guess
// from an EOF. They go between two of the server's frames (the relay
// follows their length prefixes), or not at all if the relay is in the
// middle of one.
func NewFront(ln net.Listener, network, backend, sockDir string, log func(msg string, args ...any), evicted func(settled bool) []byte) *Front {
	if log == nil {
		log = func(string, ...any) {}
	}
	f := &Front{ln: ln, network: network, backend: backend, sockDir: sockDir, log: log, evicted: evicted, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	return f
}

// Addr is the TLS address.
func (f *Front) Addr() net.Addr { return f.ln.Addr() }

// StopAccepting closes the listener; relayed connections go on.
func (f *Front) StopAccepting() { _ = f.ln.Close() }

func (f *Front) serve() {
	defer f.wg.Done()
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or memory must not end TLS service for
			// good: pause and try again.
			if !connlimit.Retry(err) {
				f.log("TLS accept", "err", err)
			}
			delay = connlimit.Backoff(delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		f.wg.Add(1)
		go f.relay(c.(*tls.Conn))
	}
}

func (f *Front) track(c net.Conn, on bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		return false // closed
	}
	if on {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
	return true
}

func (f *Front) relay(c *tls.Conn) {
	defer f.wg.Done()
	defer c.Close()
	if !f.track(c, true) {
		return
	}
	defer f.track(c, false)
	ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
	err := c.HandshakeContext(ctx)
	cancel()
	if err != nil {
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) && rh.Conn != nil {
			proto.PlaintextOnTLS(rh.Conn, rh.RecordHeader[:])
		}
		f.log("TLS handshake failed", "remote", c.RemoteAddr(), "err", err)
		return
	}
	out := &settling{c: c, nc: connlimit.NewcomerOf(c)}
	if out.nc != nil && f.evicted != nil {
		out.nc.SetEvict(func(settled bool) { go out.evict(f.evicted(settled)) })
	}
	back, err := net.Dial(f.network, f.backend)
	if err != nil {
		f.log("TLS relay: reaching the event loops", "err", err)
		return
	}
	defer back.Close()
	// The server's last words (a fatal Error frame) must reach the client
	// even when the client is still writing: the client's side only ever
	// half-closes the backend; the backend's side, once everything it sent
	// is relayed, half-closes the client (close_notify, then FIN) and
	// drains what the client still sends for a moment, so that closing
	// does not reset the connection over unread bytes.
	up := make(chan struct{})
	go func() {
		defer close(up)
		if _, err := io.Copy(back, c); err != nil {
			_, _ = io.Copy(io.Discard, c) // the backend is gone: drain until the deadline below
		}
		closeWrite(back)
	}()
	_, err = io.Copy(out, back)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The client took nothing for writeStall: end it with a reset,
		// so that what the kernel holds for it goes now, not after the
		// FIN behind it in an orphan socket (pkg/unsent). The backend
		// has cut it off already, or will, as a slow consumer.
		f.log("TLS relay: client reads nothing", "remote", c.RemoteAddr(), "stall", writeStall)
		if tc, ok := c.NetConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.NetConn().Close()
		<-up
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(LingerTimeout))
	_ = c.CloseWrite()
	closeWrite(c.NetConn())
	_ = c.SetReadDeadline(time.Now().Add(LingerTimeout))
	<-up
}

// settling writes what the server sends to the client, each write
// bounded by writeStall, and the first time tells the client's connection
// that it has settled (connlimit.NewcomerListener): a server answers a
// client only once it has shown who it is (a Hello), or to close it.
// It may be evicted meanwhile, or later for a fair share, told why in
// Front.evicted's words.
type settling struct {
	c       *tls.Conn
	mu      sync.Mutex
	nc      *connlimit.Newcomer // nil once settled, or for a port that does not evict
	writing bool                // a Write is under way
	evicted bool
	framing framing // of what was written
}

func (s *settling) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.evicted {
		s.mu.Unlock()
		return 0, errEvicted
	}
	if s.nc != nil {
		s.nc.Settle()
		s.nc = nil
	}
	s.writing = true
	s.mu.Unlock()
	_ = s.c.SetWriteDeadline(time.Now().Add(writeStall))
	n, err := s.c.Write(p)
	s.mu.Lock()
	s.writing = false
	s.framing.feed(p[:n])
	s.mu.Unlock()
	return n, err
}

var errEvicted = errors.New("evicted for a newer connection")

// evict ends the client's connection for a newer one, with words when
// they fall between two of the server's frames (a write under way, or
// one that ended inside a frame, leaves only a close). Closing the TCP
// connection ends the relay as a close of the listener's would; its
// descriptors go back when the relay closes it.
func (s *settling) evict(words []byte) {
	s.mu.Lock()
	speak := !s.evicted && !s.writing && s.framing.whole()
	s.evicted = true
	s.mu.Unlock()
	if speak {
		_ = s.c.SetWriteDeadline(time.Now().Add(LingerTimeout))
		_, _ = s.c.Write(words)
	}
	_ = s.c.NetConn().Close()
}

// framing follows the length-prefixed frames of a stream (pkg/wire: a
// 4-byte big-endian length, then as many bytes) to tell whether it ends
// between two of them.
type framing struct {
	hdr  [4]byte
	hn   int // bytes of hdr read
	left int // bytes of the current frame's body still to come
}

func (f *framing) feed(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			k := min(f.left, len(p))
			f.left -= k
			p = p[k:]
			continue
		}
		k := copy(f.hdr[f.hn:], p)
		f.hn += k
		p = p[k:]
		if f.hn == len(f.hdr) {
			f.left, f.hn = int(binary.BigEndian.Uint32(f.hdr[:])), 0
		}
	}
}

// whole reports whether the stream so far ends between frames.
func (f *framing) whole() bool { return f.hn == 0 && f.left == 0 }

// writeStall bounds a write to a relayed client. Without it a client that
// stopped reading (its window shut) held the relay's goroutines, its TLS
// connection and its place on the port for as long as it answered the
// kernel's zero-window probes, the backend having cut it off long before
// (verification of abuse sweep 6, V2-4). Central cuts a control
// connection off after 5 s of unread replies; this is longer.
var writeStall = 10 * time.Second

// LingerTimeout bounds how long a relayed connection the server has closed
// is drained before it is closed, so the server's last frame is read
// rather than lost to a reset.
const LingerTimeout = time.Second

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// Close stops accepting, ends every relayed connection and waits for the
// relays to finish.
func (f *Front) Close() {
	_ = f.ln.Close()
	f.mu.Lock()
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	f.wg.Wait()
	if f.sockDir != "" {
		_ = os.RemoveAll(f.sockDir)
	}
}

// Backend decides where a server behind a Front listens: the plaintext TCP
// address listen when one is configured, or else a Unix socket in a new
// private directory (dir, to be removed by the caller or by Front.Close).
func Backend(listen string) (network, addr, dir string, err error) {
	if listen != "" {
		return "tcp", listen, "", nil
	}
	dir, err = os.MkdirTemp("", "nearchat-chat-")
	if err != nil {
		return "", "", "", err
	}
	return "unix", filepath.Join(dir, "loops.sock"), dir, nil
}
