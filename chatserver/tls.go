package chatserver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// TLS on the event loops.
//
// gnet has no TLS, so the TLS port is a plain Go listener. A bounded pool
// of goroutines runs handshakes (they block, and may take a round trip or
// two); a connection whose handshake succeeded is enrolled on an event loop
// (gnet duplicates its descriptor) together with its crypto/tls state, and
// from then on it is served exactly like a plaintext one: no goroutine and
// no relay belong to it. On the loop the tls.Conn sits on a transport that
// reads the ciphertext gnet has already buffered and writes through gnet.
// An empty buffer reads as a temporary error, which crypto/tls treats as
// "come back later": it keeps a partial record and carries on when
// OnTraffic brings the rest. The loop therefore decrypts whatever records
// are complete, parses the frames they hold, and encrypts each write into
// gnet's outbound buffer, so the same limits, slow-consumer rule and
// tickets apply to both.

// tlsHandshakes bounds concurrent TLS handshakes. A full pool stops the
// accept loop, so the kernel's backlog, not our memory, holds the queue.
const tlsHandshakes = 64

// tlsHandshakeTimeout bounds one handshake.
const tlsHandshakeTimeout = 10 * time.Second

// tlsFront accepts TLS connections and hands them to the event loops.
type tlsFront struct {
	s   *Server
	ln  net.Listener
	sem chan struct{}
	wg  sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{} // in the handshake, closed by stop
	stopped bool

	handshakes, failed atomic.Uint64 // completed and failed, for Metrics
}

func newTLSFront(s *Server, ln net.Listener) *tlsFront {
	f := &tlsFront{s: s, ln: ln, sem: make(chan struct{}, tlsHandshakes), pending: make(map[net.Conn]struct{})}
	f.wg.Add(1)
	go f.accept()
	return f
}

func (f *tlsFront) accept() {
	defer f.wg.Done()
	for {
		f.sem <- struct{}{}
		c, err := f.ln.Accept()
		if err != nil {
			<-f.sem
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if !errors.Is(err, net.ErrClosed) {
				f.s.log.Warn("TLS accept", "err", err)
			}
			return
		}
		if !f.track(c, true) {
			<-f.sem
			c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.handshake(c.(*net.TCPConn))
			<-f.sem
		}()
	}
}

// track records c as in its handshake (on) or not (off); false means the
// front is stopped and c must be closed.
func (f *tlsFront) track(c net.Conn, on bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		if f.stopped {
			return false
		}
		f.pending[c] = struct{}{}
	} else {
		delete(f.pending, c)
	}
	return !f.stopped
}

// handshake runs the TLS handshake on c off the loops, then enrolls c on
// an event loop with its TLS state as the connection's context.
func (f *tlsFront) handshake(c *net.TCPConn) {
	t := &tlsTransport{Conn: c}
	tc := tls.Server(t, f.s.cfg.TLS)
	ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if !f.track(c, false) || err != nil {
		if err != nil {
			f.failed.Add(1)
			f.s.log.Debug("TLS handshake failed", "remote", c.RemoteAddr(), "err", err)
		}
		c.Close()
		return
	}
	f.handshakes.Add(1)
	hand := &tlsHandoff{t: t, c: tc}
	ctx = gnet.NewContext(gnet.NewNetConnContext(context.Background(), c), hand)
	// Enroll duplicates the descriptor and closes c; from OnOpen on, the
	// connection lives on its loop.
	res, err := f.s.eng.Register(ctx)
	if err != nil {
		c.Close()
		return
	}
	if r := <-res; r.Err != nil {
		f.s.log.Debug("TLS connection not enrolled", "remote", c.RemoteAddr(), "err", r.Err)
	}
}

// stopAccepting closes the listener and aborts handshakes in progress;
// enrolled connections go on.
func (f *tlsFront) stopAccepting() {
	_ = f.ln.Close()
	f.mu.Lock()
	f.stopped = true
	for c := range f.pending {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// tlsHandoff is the context of a connection being enrolled: its TLS state.
type tlsHandoff struct {
	t *tlsTransport
	c *tls.Conn
}

// tlsTransport is the net.Conn under a member's tls.Conn: the accepted TCP
// connection during the handshake, gnet's buffers once on the loop.
type tlsTransport struct {
	net.Conn           // during the handshake only; nil after
	gc       gnet.Conn // set on the loop in OnOpen
}

// errWouldBlock is what the transport reads when gnet holds no more bytes.
// crypto/tls keeps its state for a temporary net.Error.
var errWouldBlock = &wouldBlock{}

type wouldBlock struct{}

func (*wouldBlock) Error() string   { return "chatserver: no buffered TLS input" }
func (*wouldBlock) Timeout() bool   { return true }
func (*wouldBlock) Temporary() bool { return true }

// Read reads the ciphertext gnet has buffered. Event loop only, once
// enrolled.
func (t *tlsTransport) Read(p []byte) (int, error) {
	if t.gc == nil {
		return t.Conn.Read(p)
	}
	if t.gc.InboundBuffered() == 0 {
		return 0, errWouldBlock
	}
	return t.gc.Read(p)
}

// Write hands ciphertext to gnet, which sends it or buffers what the
// socket will not take. Event loop only, once enrolled.
func (t *tlsTransport) Write(p []byte) (int, error) {
	if t.gc == nil {
		return t.Conn.Write(p)
	}
	return t.gc.Write(p)
}

// Close closes the TCP connection during the handshake; on the loop the
// member's connection is closed through gnet instead.
func (t *tlsTransport) Close() error {
	if t.gc == nil {
		return t.Conn.Close()
	}
	return nil
}

func (t *tlsTransport) SetDeadline(d time.Time) error {
	if t.gc == nil {
		return t.Conn.SetDeadline(d)
	}
	return nil
}

func (t *tlsTransport) SetReadDeadline(d time.Time) error {
	if t.gc == nil {
		return t.Conn.SetReadDeadline(d)
	}
	return nil
}

func (t *tlsTransport) SetWriteDeadline(d time.Time) error {
	if t.gc == nil {
		return t.Conn.SetWriteDeadline(d)
	}
	return nil
}

func (t *tlsTransport) LocalAddr() net.Addr {
	if t.gc == nil {
		return t.Conn.LocalAddr()
	}
	return t.gc.LocalAddr()
}

func (t *tlsTransport) RemoteAddr() net.Addr {
	if t.gc == nil {
		return t.Conn.RemoteAddr()
	}
	return t.gc.RemoteAddr()
}

// attach moves t onto gnet connection c. Event loop only (OnOpen).
func (t *tlsTransport) attach(c gnet.Conn) {
	t.gc, t.Conn = c, nil
}

// plainIn is the decrypted inbound stream of a TLS member, in the shape
// serve reads: the loop's scratch buffer, holding the member's leftover
// partial frame followed by what the records decrypted to.
type plainIn struct {
	buf []byte
	off int
}

func (p *plainIn) InboundBuffered() int { return len(p.buf) - p.off }

func (p *plainIn) Peek(n int) ([]byte, error) { return p.buf[p.off : p.off+n], nil }

func (p *plainIn) Discard(n int) (int, error) {
	p.off += n
	return n, nil
}

// tlsReadChunk is the least room left in the scratch buffer for one
// decrypting read: a whole TLS record's plaintext.
const tlsReadChunk = 16 << 10

// serveTLS decrypts every complete record gnet has buffered for m and
// handles the frames they complete. A partial frame is kept on the member
// (only then does it hold a buffer of its own). Event loop only.
func (s *Server) serveTLS(m *member) gnet.Action {
	l := m.loop
	in := &l.plain
	in.buf, in.off = append(l.plainBuf[:0], m.partial...), 0
	m.partial = m.partial[:0]
	for !m.dead {
		if cap(in.buf)-len(in.buf) < tlsReadChunk {
			if in.off > 0 {
				in.buf = in.buf[:copy(in.buf, in.buf[in.off:])]
				in.off = 0
			}
			if cap(in.buf)-len(in.buf) < tlsReadChunk {
				in.buf = append(in.buf, make([]byte, tlsReadChunk)...)[:len(in.buf)]
			}
		}
		n, err := m.tls.Read(in.buf[len(in.buf):cap(in.buf)])
		in.buf = in.buf[:len(in.buf)+n]
		if n > 0 {
			s.serve(m, in)
		}
		if err != nil {
			if err != errWouldBlock && !m.dead {
				s.log.Debug("TLS read", "remote", m.c.RemoteAddr(), "err", err)
				m.dead = true
				_ = m.c.Close()
			}
			break
		}
	}
	if rest := in.buf[in.off:]; len(rest) > 0 && !m.dead {
		m.partial = append(m.partial, rest...)
	} else {
		m.partial = nil
	}
	l.plainBuf, in.buf = in.buf[:0], nil
	return gnet.None
}
