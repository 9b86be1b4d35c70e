package chatserver

import (
	"container/list"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/time/rate"

	"nearchat/pkg/connlimit"
	"nearchat/pkg/proto"
)

// TLS on the event loops.
//
// gnet has no TLS, so the TLS port is a plain Go listener. A bounded pool
// of goroutines runs handshakes with crypto/tls (they block, and may take a
// round trip or two), recording the bytes they read and write and the
// application traffic secrets from the key log. A connection whose
// handshake succeeded is enrolled on an event loop (gnet duplicates its
// descriptor) with a record layer built from those secrets (tlsrecord.go),
// and the tls.Conn is dropped. From then on the connection is served
// exactly like a plaintext one: OnTraffic decrypts whatever records are
// whole and parses the frames they complete, and each write is sealed into
// gnet's outbound buffer, so the same limits, slow-consumer rule and
// tickets apply. No goroutine and no relay belong to an established TLS
// member. TLS 1.3 only.

// tlsHandshakes bounds concurrent TLS handshakes. A connection holds a
// slot only while the server works on its handshake: from the moment its
// first record has arrived whole, and given up whenever the handshake
// waits on the client for more bytes (the rest of a ClientHello split
// over records, or promised by a first record that brings less; the
// client's answer), until they come (hsSlot). Waiting on the client
// happens outside the pool, in a stage that never blocks accepting: when
// it holds tlsHelloWaiters connections, one is closed to make room
// (waiters.victim). So neither idle sockets nor clients that stall
// mid-handshake can hold the pool.
const tlsHandshakes = 64

// tlsHandshakeTimeout bounds one handshake, from its first record on.
const tlsHandshakeTimeout = 10 * time.Second

// Bounds of waiting on clients: how long a connection may take to send
// its first record, how many may wait on their client at once, and how
// many of them one source may always hold (its fair share is at least
// that; see waiters.victim).
const (
	tlsHelloTimeout = 3 * time.Second
	tlsHelloWaiters = 1024
	tlsWaitersFloor = 16
)

// maxFirstRecord is the largest first record waited for whole: a TLS
// record holds at most 16 KiB of plaintext (RFC 8446 section 5.1).
const maxFirstRecord = 5 + 16384 + 256

// tlsFront accepts TLS connections and hands them to the event loops.
type tlsFront struct {
	s   *Server
	cfg *tls.Config // hands each handshake its own key log
	ln  net.Listener
	sem chan struct{}
	wg  sync.WaitGroup

	enrolMu sync.Mutex // serialises Engine.Register
	mu      sync.Mutex
	pending map[net.Conn]struct{} // in the handshake, closed by stop
	waiting waiters               // connections waiting on their client
	stopped bool
	stop    chan struct{} // closed by stopAccepting

	handshakes, failed atomic.Uint64 // completed and failed, for Metrics
	evicted            atomic.Uint64 // waiters closed to make room
}

func newTLSFront(s *Server, ln net.Listener) *tlsFront {
	f := &tlsFront{s: s, ln: ln, sem: make(chan struct{}, tlsHandshakes), pending: make(map[net.Conn]struct{}),
		waiting: newWaiters(), stop: make(chan struct{})}
	base := s.cfg.TLS
	f.cfg = &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			cfg := base
			if base.GetConfigForClient != nil {
				c, err := base.GetConfigForClient(hi)
				if err != nil {
					return nil, err
				}
				if c != nil {
					cfg = c
				}
			}
			cfg = cfg.Clone()
			cfg.MinVersion = tls.VersionTLS13
			cfg.KeyLogWriter = &hi.Conn.(*tlsTransport).keys
			return cfg, nil
		},
	}
	f.wg.Add(1)
	go f.accept()
	return f
}

func (f *tlsFront) accept() {
	defer f.wg.Done()
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors (EMFILE) must not end TLS service for
			// good: pause and try again.
			if !connlimit.Retry(err) {
				f.s.log.Warn("TLS accept", "err", err)
			}
			delay = connlimit.Backoff(delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		// The handshake holds a descriptor of the budget; OnOpen counts the
		// connection again once it is on a loop, where a server at its
		// -max-conns can tell it so in TLS. Until then it may be evicted
		// for a newer connection, as one on a loop may until it joins a
		// room (guard.go): closing it fails the handshake's reads.
		nc, ok := f.s.port.AcquireHandshake(c.RemoteAddr(), 1, func(bool) { _ = c.Close() })
		if !ok {
			c.Close()
			continue
		}
		w := f.park(c, false)
		if w == nil {
			f.release(c, nc)
			c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.hello(c.(*net.TCPConn), w, nc)
		}()
	}
}

// park lists c as waiting on its client (spoke: after its first record
// whole, in a handshake under way), closing a waiter if tlsHelloWaiters
// wait, and returns c's place in the list; nil means the front is
// stopped.
func (f *tlsFront) park(c net.Conn, spoke bool) *waiter {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return nil
	}
	if f.waiting.n >= tlsHelloWaiters {
		old := f.waiting.victim()
		f.waiting.remove(old)
		_ = old.c.Close() // its goroutine sees the read fail
		f.evicted.Add(1)
	}
	f.pending[c] = struct{}{}
	return f.waiting.add(c, spoke)
}

// hello waits, within tlsHelloTimeout, for c's first record, then for a
// handshake slot, and runs the handshake in it.
func (f *tlsFront) hello(c *net.TCPConn, w *waiter, nc *connlimit.Newcomer) {
	_ = c.SetReadDeadline(time.Now().Add(tlsHelloTimeout))
	first, err := readFirstRecord(c)
	_ = c.SetReadDeadline(time.Time{})
	f.unpark(w)
	if err == nil && first[0] != 0x16 {
		proto.PlaintextOnTLS(c, first)
		err = fmt.Errorf("first record of type %d, not a TLS handshake", first[0])
	}
	sl := &hsSlot{f: f, c: c}
	if err == nil {
		wait := time.NewTimer(tlsHandshakeTimeout)
		select {
		case f.sem <- struct{}{}:
			sl.held = true
		case <-wait.C:
			err = errors.New("no handshake slot free in time")
		case <-f.stop:
			err = net.ErrClosed
		}
		wait.Stop()
	}
	if err != nil {
		f.release(c, nc)
		f.track(c, false)
		f.failed.Add(1)
		f.s.log.Debug("TLS client sent no first record in time", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	f.handshake(c, first, sl, nc)
}

// release gives back what the handshake of c held of the budget.
func (f *tlsFront) release(c net.Conn, nc *connlimit.Newcomer) {
	nc.Done()
	f.s.port.Release(c.RemoteAddr(), 1)
}

// hsSlot is a handshake's claim on the pool (tlsHandshakes): held while
// the server works on the handshake, given up whenever it waits on the
// client for more bytes, and taken again once they come. So a client
// that sends part of its ClientHello and stalls, or a first record that
// promises more than it brings, waits outside the pool like any other.
type hsSlot struct {
	f    *tlsFront
	c    net.Conn
	held bool
	el   *waiter         // c's place among those waiting on their client
	done <-chan struct{} // the handshake's deadline
}

// wait gives the slot up before a read from the client.
func (s *hsSlot) wait() error {
	if s.held {
		<-s.f.sem
		s.held = false
	}
	if s.el == nil {
		if s.el = s.f.park(s.c, true); s.el == nil {
			return net.ErrClosed // the front stopped
		}
	}
	return nil
}

// work takes a slot again after the client sent something.
func (s *hsSlot) work() error {
	s.f.unpark(s.el)
	s.el = nil
	select {
	case s.f.sem <- struct{}{}:
		s.held = true
		return nil
	case <-s.done:
		return context.DeadlineExceeded
	case <-s.f.stop:
		return net.ErrClosed
	}
}

// release ends the claim.
func (s *hsSlot) release() {
	if s.held {
		<-s.f.sem
		s.held = false
	}
	s.f.unpark(s.el)
	s.el = nil
}

// unpark takes w off the waiting list; a no-op if it was evicted.
func (f *tlsFront) unpark(w *waiter) {
	if w == nil {
		return
	}
	f.mu.Lock()
	f.waiting.remove(w)
	f.mu.Unlock()
}

// waiters are the connections waiting on their client, by source and by
// whether they spoke. When the list is full, the one closed for a newcomer
// is chosen so that neither sockets that never sent a record nor one
// source can crowd out a client mid-handshake: before, the list was one
// FIFO for every source, and one address churning 1,500 idle sockets
// closed every client more than a few milliseconds away between the
// server's flight and its Finished (abuse sweep, 2026-12-03). Guarded by
// tlsFront.mu.
type waiters struct {
	n              int
	silent, spoken list.List // of *waiter, oldest first
	sources        map[netip.Addr]*waitSource
	big            map[*waitSource]struct{} // holding more than tlsWaitersFloor
}

// waiter is one connection in waiters.
type waiter struct {
	c     net.Conn
	src   *waitSource
	spoke bool          // sent its first record whole
	all   *list.Element // in waiters.silent or .spoken; nil once removed
	own   *list.Element // in src.silent or .spoken
}

// waitSource is the waiters of one source: an IP address, or an IPv6 /64.
type waitSource struct {
	key            netip.Addr
	silent, spoken list.List // of *waiter, oldest first
	n              int
}

func newWaiters() waiters {
	return waiters{sources: make(map[netip.Addr]*waitSource), big: make(map[*waitSource]struct{})}
}

// waitKey is the source c is counted against.
func waitKey(c net.Conn) netip.Addr {
	a, _ := c.RemoteAddr().(*net.TCPAddr)
	if a == nil {
		return netip.Addr{}
	}
	ip := a.AddrPort().Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip
}

func (ws *waiters) add(c net.Conn, spoke bool) *waiter {
	k := waitKey(c)
	src := ws.sources[k]
	if src == nil {
		src = &waitSource{key: k}
		ws.sources[k] = src
	}
	w := &waiter{c: c, src: src, spoke: spoke}
	if spoke {
		w.all, w.own = ws.spoken.PushBack(w), src.spoken.PushBack(w)
	} else {
		w.all, w.own = ws.silent.PushBack(w), src.silent.PushBack(w)
	}
	ws.n++
	if src.n++; src.n > tlsWaitersFloor {
		ws.big[src] = struct{}{}
	}
	return w
}

func (ws *waiters) remove(w *waiter) {
	if w.all == nil {
		return // evicted, or removed already
	}
	src := w.src
	if w.spoke {
		ws.spoken.Remove(w.all)
		src.spoken.Remove(w.own)
	} else {
		ws.silent.Remove(w.all)
		src.silent.Remove(w.own)
	}
	w.all, w.own = nil, nil
	ws.n--
	if src.n--; src.n <= tlsWaitersFloor {
		delete(ws.big, src)
	}
	if src.n == 0 {
		delete(ws.sources, src.key)
	}
}

// victim is the waiter to close for a newcomer: the oldest of the source
// holding the most, if that is more than its fair share (the waiters over
// the sources waiting, and at least tlsWaitersFloor); otherwise the
// oldest of all. Either way a socket that has not sent its first record
// goes before any that did. So a flood of idle sockets, from one address
// or many, closes only its own, and handshakes under way from one
// address cannot crowd out those of others. ws is not empty.
func (ws *waiters) victim() *waiter {
	var top *waitSource
	for src := range ws.big {
		if top == nil || src.n > top.n {
			top = src
		}
	}
	if top != nil && top.n > max(ws.n/len(ws.sources), tlsWaitersFloor) {
		return oldest(&top.silent, &top.spoken)
	}
	return oldest(&ws.silent, &ws.spoken)
}

// oldest is the front of silent, or else of spoken.
func oldest(silent, spoken *list.List) *waiter {
	if e := silent.Front(); e != nil {
		return e.Value.(*waiter)
	}
	return spoken.Front().Value.(*waiter)
}

// readFirstRecord reads the header of the first TLS record from c and, if
// it is a handshake record of a plausible size, the whole record. Anything
// else is returned as read, for crypto/tls to refuse.
func readFirstRecord(c net.Conn) ([]byte, error) {
	b := make([]byte, 5, 512)
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if b[0] != 0x16 || 5+n > maxFirstRecord {
		return b, nil
	}
	b = append(b, make([]byte, n)...)
	if _, err := io.ReadFull(c, b[5:]); err != nil {
		return nil, err
	}
	return b, nil
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

// handshake runs the TLS handshake on c off the loops, in slot sl, then
// enrolls c on an event loop with its record layer as the connection's
// context.
func (f *tlsFront) handshake(c *net.TCPConn, first []byte, sl *hsSlot, nc *connlimit.Newcomer) {
	t := &tlsTransport{Conn: c, first: first, slot: sl}
	tc := tls.Server(t, f.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
	sl.done = ctx.Done()
	err := tc.HandshakeContext(ctx)
	cancel()
	sl.release()
	f.release(c, nc)
	var rl *recordLayer
	if err == nil {
		rl, err = newRecordLayer(tc.ConnectionState().CipherSuite, &t.keys, t.read, t.written)
	}
	if !f.track(c, false) || err != nil {
		if err != nil {
			f.failed.Add(1)
			f.s.log.Debug("TLS handshake failed", "remote", c.RemoteAddr(), "err", err)
		}
		if rl != nil && err != nil {
			// The records that came with the client's Finished are at
			// fault: it is told so, as it would be later.
			var nonce [12]byte
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(rl.out.alert(nil, 2, alertOf(err), &nonce))
		}
		c.Close()
		return
	}
	f.handshakes.Add(1)
	ctx = gnet.NewContext(gnet.NewNetConnContext(context.Background(), c), rl)
	// Enroll duplicates the descriptor and closes c; from OnOpen on, the
	// connection lives on its loop.
	// gnet's round-robin choice of a loop is not safe for concurrent use,
	// though Register says it is.
	f.enrolMu.Lock()
	res, err := f.s.eng.Register(ctx)
	f.enrolMu.Unlock()
	if err != nil {
		f.s.log.Debug("TLS connection not enrolled", "remote", c.RemoteAddr(), "err", err)
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
	if !f.stopped {
		close(f.stop)
	}
	f.stopped = true
	for c := range f.pending {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// tlsTransport is the net.Conn under a tls.Conn during its handshake: the
// accepted TCP connection, keeping a copy of what crosses it (a few
// kilobytes, dropped with the tls.Conn) for newRecordLayer.
type tlsTransport struct {
	net.Conn
	first         []byte  // read before the handshake began, handed out first
	slot          *hsSlot // given up while a read waits on the client
	read, written []byte
	keys          keyCapture
}

func (t *tlsTransport) Read(p []byte) (int, error) {
	if len(t.first) > 0 {
		n := copy(p, t.first)
		t.first = t.first[n:]
		t.read = append(t.read, p[:n]...)
		return n, nil
	}
	if err := t.slot.wait(); err != nil {
		return 0, err
	}
	n, err := t.Conn.Read(p)
	t.read = append(t.read, p[:n]...)
	if err == nil {
		err = t.slot.work()
	}
	return n, err
}

func (t *tlsTransport) Write(p []byte) (int, error) {
	n, err := t.Conn.Write(p)
	t.written = append(t.written, p[:n]...)
	return n, err
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

// serveTLS decrypts every whole record gnet has buffered for m and handles
// the frames they complete. A partial record, and a partial frame, are
// kept on the member (only then does it hold a buffer of its own). Event
// loop only.
func (s *Server) serveTLS(m *member) gnet.Action {
	l, rl := m.loop, m.rec
	if m.dead {
		// Dropped undecrypted, as serve drops plaintext. Before, a TLS
		// member was read and thrown away at full speed until its close
		// (240-297 MB a connection in 2 s: abuse probe, 2026-12-02).
		n, _ := m.c.Discard(m.c.InboundBuffered())
		m.drop(n)
		return gnet.None
	}
	// A member whose output is backed up is not read from: its records
	// stay in gnet's buffer undecrypted, counted against maxPausedInbound
	// as a plaintext member's bytes are. Before, they were opened at full
	// speed and only their plaintext counted: 1-byte records padded to
	// 16 KB made the loop decrypt 6.5 GB before the cut-off (abuse sweep,
	// 2026-12-03).
	if s.backPressure(m, m.c.InboundBuffered()+len(rl.pending)+len(m.partial)) {
		return gnet.None
	}
	ct := append(l.cipherBuf[:0], rl.pending...)
	if n := m.c.InboundBuffered(); n > 0 {
		ct = append(ct, make([]byte, n)...)
		k, _ := m.c.Read(ct[len(ct)-n:])
		ct = ct[:len(ct)-n+k]
	}
	// Plaintext goes after the start of a frame m sent before, in m's own
	// buffer when there is one: copying it into the loop's buffer and back
	// at every event cost up to 2 x 256 KiB for each tiny record of a
	// client dripping a big frame (TLS review, 2026-12-03).
	in := &l.plain
	own := len(m.partial) > 0
	if own {
		in.buf, in.off = m.partial, 0
	} else {
		in.buf, in.off = l.plainBuf[:0], 0
	}
	b := ct
	var err error
	closing := false // the peer sent close_notify
	for len(b) >= recordHeader && err == nil && !m.dead {
		n := int(binary.BigEndian.Uint16(b[3:]))
		if n > maxCiphertext {
			err = recordErr(alertRecordOverflow, "record of %d bytes, limit %d", n, maxCiphertext)
			break
		}
		if b[0] != typeAppData {
			err = recordErr(alertUnexpected, "record of type %d after the handshake", b[0])
			break
		}
		if recordHeader+n > len(b) {
			break
		}
		var typ byte
		var size int
		if cap(in.buf)-len(in.buf) < n {
			in.buf = append(in.buf, make([]byte, n)...)[:len(in.buf)]
		}
		in.buf, typ, size, err = rl.in.open(in.buf, b[:recordHeader], b[recordHeader:recordHeader+n], &l.nonce)
		b = b[recordHeader+n:]
		if err != nil {
			break
		}
		// Records that carry no bytes of the stream (empty ones, key
		// updates) cost a decryption, and a key update asked of us a
		// record out, without anything to pace: a run of them is refused,
		// as crypto/tls refuses it.
		if typ == typeAppData && size > 0 {
			rl.useless = 0
		} else if rl.useless++; rl.useless > maxUselessRecords {
			err = recordErr(alertUnexpected, "%d records in a row without data", rl.useless)
			break
		}
		switch typ {
		case typeAppData:
			if len(rl.hsPart) > 0 {
				err = recordErr(alertUnexpected, "data in the middle of a handshake message")
			}
		case typeHandshake:
			piece := in.buf[len(in.buf)-size:]
			in.buf = in.buf[:len(in.buf)-size]
			var msg []byte
			if msg, err = rl.gather(piece); msg != nil {
				err = s.keyUpdate(m, msg)
			}
		case typeAlert:
			// close_notify or a fatal alert: the peer is done either way;
			// a close_notify is answered with ours (RFC 8446, 6.1).
			msg := in.buf[len(in.buf)-size:]
			in.buf = in.buf[:len(in.buf)-size]
			err = io.EOF
			if size != 2 {
				err = recordErr(alertDecodeError, "alert of %d bytes", size)
			} else if msg[1] == alertCloseNotify {
				closing = true
			}
		default:
			err = recordErr(alertUnexpected, "content type %d", typ)
		}
	}
	if len(b) > 0 && err == nil && !m.dead {
		rl.pending = append(rl.pending[:0], b...)
	} else {
		rl.pending = nil
	}
	l.cipherBuf = ct[:0]
	if in.InboundBuffered() > 0 {
		s.serve(m, in)
	}
	switch rest := in.buf[in.off:]; {
	case len(rest) == 0 || m.dead:
		m.partial = nil
	case own && in.off == 0:
		m.partial = in.buf // nothing taken: it stays where it is
	case own:
		m.partial = append(in.buf[:0], rest...) // moved down in its own buffer
	default:
		m.partial = append([]byte(nil), rest...)
	}
	if !own {
		l.plainBuf = in.buf[:0]
	}
	in.buf = nil
	if err != nil && !m.dead {
		// The peer learns why, in TLS's own terms: an alert for a fault
		// in its records, our close_notify for its own (before, the
		// connection just closed: abuse probe, 2026-12-03).
		if err != io.EOF {
			s.log.Debug("TLS record", "remote", m.c.RemoteAddr(), "err", err)
			l.sealAlert(m, 2, alertOf(err))
		} else if closing {
			l.sealAlert(m, 1, alertCloseNotify)
		}
		m.dead = true
		_ = m.c.Close()
	}
	return gnet.None
}

// sealAlert writes one alert record of level and description to m. Event
// loop only.
func (l *loop) sealAlert(m *member, level, desc byte) {
	l.sealBuf = m.rec.out.alert(l.sealBuf[:0], level, desc, &l.nonce)
	_, _ = m.c.Write(l.sealBuf)
}

// keyUpdate handles a post-handshake message: only KeyUpdate is allowed.
// The peer's next records use its next key; if it asks, ours move on too,
// announced under the old key. Event loop only.
func (s *Server) keyUpdate(m *member, msg []byte) error {
	switch {
	case len(msg) == 0 || msg[0] != keyUpdate:
		return recordErr(alertUnexpected, "unexpected handshake message % x", msg)
	case len(msg) != 5 || msg[1] != 0 || msg[2] != 0 || msg[3] != 1:
		return recordErr(alertDecodeError, "malformed key update % x", msg)
	case msg[4] > 1:
		return recordErr(alertIllegalParameter, "key update request %d", msg[4])
	}
	// Each costs three HKDF expansions and a new AEAD, on the loop every
	// member on it shares, and a byte of data between them resets the
	// run of useless records: they are paced apart (abuse probe,
	// 2026-12-03: one client re-keyed 107,000 times a second, 64% of a
	// loop). A peer needs one every 2^24 records or so.
	if m.rec.keyUpdates == nil {
		m.rec.keyUpdates = rate.NewLimiter(keyUpdateRate, keyUpdateBurst)
	}
	if !m.rec.keyUpdates.AllowN(m.loop.now, 1) {
		return recordErr(alertUnexpected, "more than %d key updates in a burst, %g a second", keyUpdateBurst, float64(keyUpdateRate))
	}
	if err := m.rec.in.update(); err != nil {
		return err
	}
	if msg[4] == 1 {
		if n := m.c.OutboundBuffered(); n >= s.cfg.MaxOutbound {
			// Our answers pile up unread, like any other output.
			m.kill(proto.CodeSlowConsumer, fmt.Sprintf("%d bytes unread, limit %d, and a key update asked for more", n, s.cfg.MaxOutbound))
			return nil
		}
		l := m.loop
		l.sealBuf = m.rec.out.seal(l.sealBuf[:0], typeHandshake, []byte{keyUpdate, 0, 0, 1, 0}, &l.nonce)
		_, _ = m.c.Write(l.sealBuf)
		return m.rec.out.update()
	}
	return nil
}

// keyUpdateRate and keyUpdateBurst pace a member's key updates.
const (
	keyUpdateRate  = rate.Limit(1)
	keyUpdateBurst = 16
)

// maxUselessRecords bounds a run of records that carry no stream bytes
// (crypto/tls allows 16 too).
const maxUselessRecords = 16

// sealTo encrypts b into records and writes them to m. Event loop only.
func (l *loop) sealTo(m *member, b []byte) {
	out := l.sealBuf[:0]
	for len(b) > 0 {
		k := min(len(b), maxPlain)
		out = m.rec.out.seal(out, typeAppData, b[:k], &l.nonce)
		b = b[k:]
	}
	l.sealBuf = out[:0]
	_, _ = m.c.Write(out)
}
