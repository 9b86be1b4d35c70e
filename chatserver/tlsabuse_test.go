package chatserver

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

// rawTLS is a TLS 1.3 client that writes its own records after crypto/tls
// did the handshake (the key log gives it the traffic secrets), so a test
// can send what crypto/tls never would: runs of key updates, records of
// any shape.
type rawTLS struct {
	t       *testing.T
	c       net.Conn
	out, in halfConn
	nonce   [12]byte
	buf     []byte // received, not yet a whole record
	plain   []byte // decrypted, not yet a whole frame
}

// dialRawTLS handshakes with s's TLS port over a socket whose receive
// buffer is rcvbuf bytes (0: the system's).
func dialRawTLS(t *testing.T, s *Server, ca tlsconfig.Files, rcvbuf int) *rawTLS {
	t.Helper()
	d := &net.Dialer{}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			return serr
		}
	}
	c, err := d.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cfg := clientTLS(t, ca)
	keys := &keyCapture{}
	cfg.KeyLogWriter = keys
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r := &rawTLS{t: t, c: c}
	suite := tc.ConnectionState().CipherSuite
	if err := r.out.setSecret(suite, keys.client); err != nil {
		t.Fatal(err)
	}
	if err := r.in.setSecret(suite, keys.server); err != nil {
		t.Fatal(err)
	}
	return r
}

// record seals payload as one record of content type typ.
func (r *rawTLS) record(typ byte, payload []byte) []byte {
	return r.out.seal(nil, typ, payload, &r.nonce)
}

// keyUpdate returns a KeyUpdate record (asking the server to update its
// key too when request), after which this side writes under its next key.
func (r *rawTLS) keyUpdate(request bool) []byte {
	req := byte(0)
	if request {
		req = 1
	}
	rec := r.record(typeHandshake, []byte{keyUpdate, 0, 0, 1, req})
	if err := r.out.update(); err != nil {
		r.t.Fatal(err)
	}
	return rec
}

func (r *rawTLS) frame(m wire.Message) []byte {
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.record(typeAppData, b)
}

// next returns the type of the next frame the server sends, skipping its
// session tickets and following its key updates.
func (r *rawTLS) next(timeout time.Duration) (wire.Type, error) {
	deadline := time.Now().Add(timeout)
	for {
		if len(r.plain) >= wire.HeaderSize {
			if n := wire.LenSize + int(binary.BigEndian.Uint32(r.plain)); len(r.plain) >= n {
				typ := wire.Type(r.plain[wire.LenSize])
				r.plain = r.plain[n:]
				return typ, nil
			}
		}
		for len(r.buf) >= recordHeader {
			n := recordHeader + int(binary.BigEndian.Uint16(r.buf[3:]))
			if n > len(r.buf) {
				break
			}
			out, typ, size, err := r.in.open(nil, r.buf[:recordHeader], r.buf[recordHeader:n], &r.nonce)
			r.buf = r.buf[n:]
			if err != nil {
				return 0, err
			}
			switch {
			case typ == typeHandshake && size > 0 && out[0] == keyUpdate:
				if err := r.in.update(); err != nil {
					return 0, err
				}
			case typ == typeAppData:
				r.plain = append(r.plain, out...)
			}
		}
		if len(r.plain) >= wire.HeaderSize {
			continue
		}
		r.c.SetReadDeadline(deadline)
		b := make([]byte, 64<<10)
		k, err := r.c.Read(b)
		if err != nil {
			return 0, err
		}
		r.buf = append(r.buf, b[:k]...)
	}
}

// closed waits until the server closes r's connection, reading (and
// dropping) whatever it sends first.
func (r *rawTLS) closed(timeout time.Duration) bool {
	r.c.SetReadDeadline(time.Now().Add(timeout))
	b := make([]byte, 64<<10)
	for {
		_, err := r.c.Read(b)
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			return false
		default:
			return true // EOF or a reset
		}
	}
}

// A run of records that carry no stream bytes (here key updates; empty
// records count the same) is refused past maxUselessRecords, as crypto/tls
// refuses it: each is a decryption, and each key update that asks for one
// is a record out, with nothing to pace them (abuse probe, 2026-12-01).
func TestTLSUselessRecordsRefused(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)

	ok := dialRawTLS(t, s, ca, 0)
	hello := ok.frame(&proto.Hello{V: wire.Version})
	var run []byte
	for range maxUselessRecords {
		run = append(run, ok.keyUpdate(false)...)
	}
	run = append(run, ok.frame(&proto.Ping{ID: 7})...)
	if _, err := ok.c.Write(append(hello, run...)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []wire.Type{proto.TWelcome, proto.TPong} {
		typ, err := ok.next(10 * time.Second)
		if err != nil || typ != want {
			t.Fatalf("after %d key updates: frame 0x%02x, %v; want 0x%02x", maxUselessRecords, byte(typ), err, byte(want))
		}
	}

	bad := dialRawTLS(t, s, ca, 0)
	out := bad.frame(&proto.Hello{V: wire.Version})
	for range maxUselessRecords + 1 {
		out = append(out, bad.record(typeAppData, nil)...)
	}
	if _, err := bad.c.Write(out); err != nil {
		t.Fatal(err)
	}
	if !bad.closed(10 * time.Second) {
		t.Fatalf("%d empty records in a row: the connection stays open", maxUselessRecords+1)
	}
}

// The abuse probe's attack: a member that never reads sends nothing but
// key updates asking for ours. Before, it was never paced nor cut off (no
// stream bytes reach the frame parser, where output is checked): 38 MB of
// requests grew a server by 218 MB. Now the run ends the connection; and
// an answer that would pile up past MaxOutbound cuts the member off.
func TestTLSKeyUpdateFloodCutOff(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	r := dialRawTLS(t, s, ca, 4<<10)
	if _, err := r.c.Write(r.frame(&proto.Hello{V: wire.Version})); err != nil {
		t.Fatal(err)
	}
	// Well within the server's idle timeout, which would end the
	// connection too, in its own time.
	sent, limit, start := 0, 8<<20, time.Now()
	for sent < limit {
		var b []byte
		for range 256 {
			b = append(b, r.keyUpdate(true)...)
		}
		r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		n, err := r.c.Write(b)
		sent += n
		if err != nil {
			t.Logf("cut off after %d bytes of requests (%v): %v", sent, time.Since(start), err)
			return
		}
	}
	t.Fatalf("sent %d bytes of key update requests in %v, reading none of the answers: still connected", sent, time.Since(start))
}

// Twice as many clients as there are handshake slots each send a first
// record that promises more than it brings, and stall: a ClientHello's
// header alone in a 9-byte record, or the header of a record too big to
// wait for whole. A new client is served at once: the slot is given up
// while the handshake waits on its client. Before, each held its slot for
// the whole handshake timeout, and 70 such clients stopped every TLS
// handshake (abuse probe, 2026-12-01).
func TestTLSPartialFirstRecordsDoNotHoldSlots(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	firsts := [][]byte{
		{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x01, 0x00}, // ClientHello header: 256 bytes to come
		{0x16, 0x03, 0x01, 0x41, 0x3c},                         // a handshake record of 16,700 bytes
		{0x15, 0x03, 0x01, 0x3e, 0x80},                         // an alert record of 16,000 bytes
	}
	var stalled []net.Conn
	t.Cleanup(func() {
		for _, c := range stalled {
			c.Close()
		}
	})
	for i := range 2 * tlsHandshakes {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
		if _, err := c.Write(firsts[i%len(firsts)]); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let them reach their handshakes; nothing waits on this
	start := time.Now()
	p, err := dialTLS(t, s.Addr(), ca, nil)
	if err != nil {
		t.Fatalf("TLS client behind %d stalled first records: %v after %v", len(stalled), err, time.Since(start))
	}
	p.Hello(&proto.Hello{})
	took := time.Since(start)
	t.Logf("handshake and hello behind %d stalled first records: %v", len(stalled), took)
	if took > tlsHandshakeTimeout/2 {
		t.Fatalf("took %v: stalled first records held the handshake slots", took)
	}
}

// afterFinished runs a handshake with s in which the client's Finished
// carries the records extra makes from the keys the handshake logged
// (sealed with AES-128-GCM, which the server prefers on AES hardware), and
// returns the client's first read after it.
func afterFinished(t *testing.T, s *Server, ca tlsconfig.Files, extra func(keys *keyCapture, nonce *[12]byte) []byte) ([]byte, error) {
	t.Helper()
	raw, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	cfg := clientTLS(t, ca)
	keys := &keyCapture{}
	cfg.KeyLogWriter = keys
	var nonce [12]byte
	ac := &appendConn{Conn: raw, extra: func() []byte { return extra(keys, &nonce) }}
	cfg.CipherSuites = []uint16{tls.TLS_AES_128_GCM_SHA256} // TLS 1.3 ignores it
	tcn := tls.Client(ac, cfg)
	if err := tcn.Handshake(); err != nil {
		t.Fatal(err)
	}
	if tcn.ConnectionState().CipherSuite != tls.TLS_AES_128_GCM_SHA256 {
		t.Skipf("suite %s, not the one the test sealed with", tls.CipherSuiteName(tcn.ConnectionState().CipherSuite))
	}
	tcn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 64)
	n, err := tcn.Read(b)
	return b[:n], err
}

// appendConn appends extra records to the client's second write of the
// handshake (its Finished), sealed by then under its application key.
type appendConn struct {
	net.Conn
	writes int
	extra  func() []byte
}

func (c *appendConn) Write(p []byte) (int, error) {
	c.writes++
	if c.writes == 2 {
		if _, err := c.Conn.Write(append(append([]byte(nil), p...), c.extra()...)); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Records that come with the client's Finished are held to the same rules
// as later ones: a record neither of the client's keys opens, or a
// plaintext one after its encrypted records, ends the connection. Before,
// they were skipped while looking for the first application record, and a
// Hello behind them was answered (abuse probe, 2026-12-01).
func TestTLSRecordsWithFinishedChecked(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version})
	for _, tc := range []struct {
		name  string
		extra func(out *halfConn, nonce *[12]byte) []byte
		ok    bool
	}{
		{"hello alone", func(out *halfConn, nonce *[12]byte) []byte { return out.seal(nil, typeAppData, hello, nonce) }, true},
		{"junk record, then hello", func(out *halfConn, nonce *[12]byte) []byte {
			junk := append([]byte{typeAppData, 3, 3, 0, 40}, make([]byte, 40)...)
			return append(junk, out.seal(nil, typeAppData, hello, nonce)...)
		}, false},
		{"plaintext change_cipher_spec, then hello", func(out *halfConn, nonce *[12]byte) []byte {
			return append([]byte{20, 3, 3, 0, 1, 1}, out.seal(nil, typeAppData, hello, nonce)...)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := afterFinished(t, s, ca, func(keys *keyCapture, nonce *[12]byte) []byte {
				var out halfConn
				if err := out.setSecret(tls.TLS_AES_128_GCM_SHA256, keys.client); err != nil {
					t.Error(err)
				}
				return tc.extra(&out, nonce)
			})
			n := len(b)
			welcomed := err == nil && n >= wire.HeaderSize && wire.Type(b[wire.LenSize]) == proto.TWelcome
			if welcomed != tc.ok {
				t.Fatalf("welcomed %v (read %d bytes, %v), want %v", welcomed, n, err, tc.ok)
			}
		})
	}
}

// TestTLSPausedMemberNotDecrypted: a TLS member whose output is backed up
// (it reads nothing) is not read from, as a plaintext one is not: what it
// sends stays undecrypted and counts against maxPausedInbound as sent.
// Before, its records were opened at full speed and only their plaintext
// counted, so 1-byte records cost the loop about 23 times the bound in
// decryption (16 KB of padding each: 6.5 GB) before the cut-off (abuse
// sweep, 2026-12-03).
func TestTLSPausedMemberNotDecrypted(t *testing.T) {
	ca := devCA(t)
	s := startTLSServerWith(t, ca, func(c *Config) { c.MaxOutbound = 64 << 10 })
	r := dialRawTLS(t, s, ca, 4<<10)
	if err := r.c.(*net.TCPConn).SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	join := append(r.frame(&proto.Hello{V: wire.Version}), r.frame(&proto.Join{Room: "p", User: "slow"})...)
	if _, err := r.c.Write(join); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "slow in room p", func() bool {
		s.mu.Lock()
		rm := s.rooms["p"]
		s.mu.Unlock()
		if rm == nil {
			return false
		}
		rm.mu.Lock()
		defer rm.mu.Unlock()
		return rm.members["slow"] != nil
	})
	shrinkSendBuffer(t, s, "p", "slow")
	s.mu.Lock()
	rm := s.rooms["p"]
	s.mu.Unlock()
	rm.mu.Lock()
	fd := rm.members["slow"].c.Fd()
	rm.mu.Unlock()
	// No autotuning of the server's receive buffer either (to megabytes
	// on loopback): what was sent is what the server took, within a few
	// kilobytes.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10); err != nil {
		t.Fatal(err)
	}
	// Pings whose Pongs it never reads back its output up past half of
	// MaxOutbound: the server stops reading it.
	var pings []byte
	for i := range 1024 {
		pings, _ = wire.AppendFrame(pings, &proto.Ping{ID: uint64(i + 1), At: 1})
	}
	for range 4 {
		for i := 0; i < len(pings); i += maxPlain {
			if _, err := r.c.Write(r.record(typeAppData, pings[i:min(i+maxPlain, len(pings))])); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Then more Pings, a byte to a record, until the server cuts it off.
	sent, start := 0, time.Now()
	for sent < 64<<20 && time.Since(start) < 30*time.Second {
		var drip []byte
		for _, b := range pings[:256] {
			drip = append(drip, r.record(typeAppData, []byte{b})...)
		}
		r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		n, err := r.c.Write(drip)
		sent += n
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			break
		}
	}
	t.Logf("cut off after %d KiB of 1-byte records (%v)", sent>>10, time.Since(start).Round(time.Millisecond))
	if !r.closed(10 * time.Second) {
		t.Fatalf("still connected after %d KiB of records while reading nothing", sent>>10)
	}
	// maxPausedInbound of ciphertext, plus what the sockets hold (and
	// what was read before the pause); before, about 23 times as much.
	if sent > 2<<20 {
		t.Errorf("the server took %d KiB of records from a member it had stopped reading; want about %d KiB", sent>>10, maxPausedInbound>>10)
	}
}

// heldFinished is a client transport whose second write (the client's
// Finished flight) waits until release is closed, after telling at: a
// client one round trip away, caught between the server's flight and its
// answer.
type heldFinished struct {
	net.Conn
	writes  int
	at      chan struct{}
	release chan struct{}
}

func (c *heldFinished) Write(p []byte) (int, error) {
	c.writes++
	if c.writes == 2 {
		close(c.at)
		<-c.release
	}
	return c.Conn.Write(p)
}

// TestTLSHandshakeAwaitingFinishedOutlastsIdleFlood: a client waiting its
// round trip to send its Finished is not closed to make room for sockets
// that never sent a byte, however many of them one other address opens.
// Before, the front's waiting list was one FIFO for every source and
// closed its oldest when full, so 1,024 newer idle sockets from one
// address closed a real client mid-handshake (abuse sweep, 2026-12-03:
// clients 150 ms away got 0 handshakes of 15 through).
func TestTLSHandshakeAwaitingFinishedOutlastsIdleFlood(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	raw, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	hc := &heldFinished{Conn: raw, at: make(chan struct{}), release: make(chan struct{})}
	tc := tls.Client(hc, clientTLS(t, ca))
	t.Cleanup(func() { tc.Close() })
	done := make(chan error, 1)
	go func() {
		_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
		done <- tc.Handshake()
	}()
	select {
	case <-hc.at:
	case err := <-done:
		t.Fatalf("handshake ended before the client's Finished: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the server's flight never came")
	}
	// Idle sockets from another address, more than the waiting list holds.
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	for range tlsHelloWaiters + 64 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, err := d.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// Every one of them parked: the list overflowed by all but its room.
	want := uint64(len(idle) + 1 - tlsHelloWaiters)
	testkit.WaitFor(t, 10*time.Second, "the idle sockets to be parked", func() bool {
		return s.front.evicted.Load() >= want
	})
	close(hc.release)
	if err := <-done; err != nil {
		t.Fatalf("handshake of a client one round trip from its Finished, after %d idle sockets: %v", len(idle), err)
	}
	// TLS 1.3: the client's handshake ends with its Finished sent; the
	// server's answer to a Hello says whether it took it.
	pc := proto.NewConn(tc, 0)
	err = pc.Send(&proto.Hello{V: wire.Version, Agent: "far"})
	var m wire.Message
	if err == nil {
		m, err = pc.Recv()
	}
	if err == nil {
		_, err = proto.CheckWelcome(m)
	}
	if err != nil {
		t.Fatalf("a client one round trip from its Finished, closed for %d newer idle sockets from another address: %v", len(idle), err)
	}
}

// addrConn is a connection from addr, for the waiting list's bookkeeping.
type addrConn struct {
	net.Conn
	addr *net.TCPAddr
}

func (c addrConn) RemoteAddr() net.Addr { return c.addr }

// TestTLSWaitersVictim: the waiter closed for a newcomer is a silent
// socket before one whose handshake is under way, and the oldest of a
// source holding more than its fair share before anyone else's.
func TestTLSWaitersVictim(t *testing.T) {
	from := func(ip string) net.Conn {
		return addrConn{addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}}
	}
	ws := newWaiters()
	// Handshakes under way: one from a client, a flood from another source.
	real := ws.add(from("127.0.0.1"), true)
	for range 100 {
		ws.add(from("127.0.0.2"), true)
	}
	if v := ws.victim(); v.c.RemoteAddr().String() != "127.0.0.2:1" {
		t.Fatalf("victim from %v, want the source holding the most", v.c.RemoteAddr())
	}
	// Within fair shares, a socket that never spoke goes first, however
	// new.
	ws2 := newWaiters()
	ws2.add(from("127.0.0.1"), true)
	silent := ws2.add(from("127.0.0.3"), false)
	if v := ws2.victim(); v != silent {
		t.Fatalf("victim from %v (spoke %v), want the silent socket", v.c.RemoteAddr(), v.spoke)
	}
	// An IPv6 /64 is one source.
	ws3 := newWaiters()
	ws3.add(from("2001:db8::1"), true)
	for i := range 40 {
		ws3.add(from(fmt.Sprintf("2001:db8:0:1::%x", i+1)), true)
	}
	if v := ws3.victim(); v.c.RemoteAddr().String() == "[2001:db8::1]:1" {
		t.Fatal("the lone IPv6 client went before a /64 holding 40")
	}
	ws.remove(real)
	ws.remove(real) // evicted and then unparked: a no-op
	if ws.n != 100 || len(ws.sources) != 1 {
		t.Fatalf("%d waiters from %d sources, want 100 from 1", ws.n, len(ws.sources))
	}
}
