package chatserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

func devCA(t testing.TB) tlsconfig.Files {
	t.Helper()
	f, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func startTLSServer(t testing.TB, ca tlsconfig.Files) *Server {
	t.Helper()
	return startTLSServerWith(t, ca, nil)
}

// startTLSServerWith is startTLSServer with mod applied to the config.
func startTLSServerWith(t testing.TB, ca tlsconfig.Files, mod func(*Config)) *Server {
	t.Helper()
	cfg, err := tlsconfig.Server(ca.ServerCert, ca.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, func(c *Config) {
		c.Listen = "" // TLS only
		c.TLS = cfg
		c.TLSListen = "127.0.0.1:0"
		if mod != nil {
			mod(c)
		}
	})
}

// clientTLS is a client configuration trusting ca, for the loopback
// address.
func clientTLS(t testing.TB, ca tlsconfig.Files) *tls.Config {
	t.Helper()
	cfg, err := tlsconfig.Client(ca.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = "127.0.0.1"
	return cfg
}

func dialTLS(t testing.TB, addr string, ca tlsconfig.Files, base *net.Dialer) (*peer, error) {
	t.Helper()
	cfg, err := tlsconfig.Client(ca.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	d := &tlsconfig.Dialer{Config: cfg}
	if base != nil {
		d.Base = base
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newPeer(t, c), nil
}

func tlsMember(t testing.TB, addr string, ca tlsconfig.Files, room, user string) *peer {
	t.Helper()
	p, err := dialTLS(t, addr, ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Hello(&proto.Hello{})
	p.send(&proto.Join{Room: room, User: user})
	p.expect(proto.TJoined)
	return p
}

func TestTLSChat(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	a := tlsMember(t, s.Addr(), ca, "r", "alice")
	b := tlsMember(t, s.Addr(), ca, "r", "bob")
	for i := uint64(1); i <= 50; i++ {
		a.send(&proto.Chat{Num: i, Text: "over tls"})
	}
	for i := uint64(1); i <= 50; i++ {
		if d := b.expect(proto.TDeliver).(*proto.Deliver); d.Num != i {
			t.Fatalf("got %+v, want num %d", d, i)
		}
	}
	if !strings.HasPrefix(s.PlainAddr(), "/") {
		t.Fatalf("event loops listen on %q, want a private Unix socket when plaintext is off", s.PlainAddr())
	}
}

func TestTLSRejections(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	x := tlsMember(t, s.Addr(), ca, "bystanders", "x")
	y := tlsMember(t, s.Addr(), ca, "bystanders", "y")
	var num uint64
	stillFine := func(t *testing.T) {
		t.Helper()
		num++
		x.send(&proto.Chat{Num: num, Text: "fine"})
		if d := y.expect(proto.TDeliver).(*proto.Deliver); d.Num != num {
			t.Fatalf("bystander got %+v", d)
		}
	}

	t.Run("plaintext to the TLS port", func(t *testing.T) {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version})
		c.Write(hello)
		c.SetReadDeadline(time.Now().Add(tlsconfig.HandshakeTimeout + 5*time.Second))
		buf := make([]byte, 256)
		var got []byte
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		// It is told, in its own protocol, that the port speaks TLS,
		// and nothing more: no Welcome.
		typ, body, n, err := wire.ParseFrame(got, 0)
		if err != nil || typ != proto.TError {
			t.Fatalf("a plaintext Hello got %q (%v), want an Error frame", got, err)
		}
		var e proto.Error
		if err := wire.Unmarshal(body, &e); err != nil || !e.Fatal || !strings.Contains(e.Reason, "speaks TLS") {
			t.Fatalf("Error %+v (%v), want a fatal one saying the port speaks TLS", e, err)
		}
		if n != len(got) {
			t.Fatalf("%d more bytes after the Error: %q", len(got)-n, got[n:])
		}
		stillFine(t)
	})
	// HTTP to the TLS port was reset without a byte (black-box sweep,
	// 2026-12-05); it is answered in HTTP, as net/http answers HTTP on
	// an HTTPS port.
	t.Run("HTTP to the TLS port", func(t *testing.T) {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(tlsconfig.HandshakeTimeout + 5*time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("HTTP on the TLS port: %v, want a 400 response", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "TLS") {
			t.Fatalf("HTTP on the TLS port got %d %q, want 400 saying the port speaks TLS", resp.StatusCode, body)
		}
		stillFine(t)
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other := devCA(t)
		_, err := dialTLS(t, s.Addr(), other, nil)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("dial with another CA: %v, want a certificate error", err)
		}
		stillFine(t)
	})
}

// recorder is a TCP proxy that keeps a copy of every byte it forwards.
type recorder struct {
	ln  net.Listener
	mu  sync.Mutex
	buf bytes.Buffer
}

func newRecorder(t *testing.T, target string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	testkit.Serve(t, ln, func(c net.Conn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		cp := func(dst, src net.Conn) {
			_, _ = io.Copy(io.MultiWriter(dst, r), src)
			dst.Close()
			src.Close()
		}
		go cp(up, c)
		cp(c, up)
	})
	return r
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

func TestTLSCaptureHoldsNoText(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	rec := newRecorder(t, s.Addr())
	cfg, _ := tlsconfig.Client(ca.CA, "", "")
	cfg.ServerName = "127.0.0.1"
	raw, err := net.Dial("tcp", rec.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, cfg)
	a := newPeer(t, c)
	a.send(&proto.Hello{V: wire.Version})
	a.expect(proto.TWelcome)
	a.send(&proto.Join{Room: "secret-room", User: "alice"})
	a.expect(proto.TJoined)
	b := tlsMember(t, s.Addr(), ca, "secret-room", "bob")
	const text = "the eagle lands at midnight"
	b.send(&proto.Chat{Num: 1, Text: text})
	if d := a.expect(proto.TDeliver).(*proto.Deliver); d.Text != text {
		t.Fatalf("alice got %+v", d)
	}
	a.send(&proto.Chat{Num: 1, Text: text + " again"})
	a.expect(proto.TAck)
	captured := rec.bytes()
	if len(captured) < 200 {
		t.Fatalf("captured only %d bytes", len(captured))
	}
	for _, needle := range []string{"eagle", "midnight", "secret-room", "alice", "bob"} {
		if bytes.Contains(captured, []byte(needle)) {
			t.Fatalf("captured TLS bytes contain %q", needle)
		}
	}
	t.Logf("%d bytes captured, none of the message text, room or user names among them", len(captured))
}

// TestTLSNoGoroutinePerConnection holds the design's promise that TLS
// members are served by the event loops: once their handshakes are done,
// forty TLS members cost the server no goroutine (the relay this replaced
// ran two per member).
func TestTLSNoGoroutinePerConnection(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	first := tlsMember(t, s.Addr(), ca, "warm", "a")
	tlsMember(t, s.Addr(), ca, "warm", "b")
	first.send(&proto.Ping{})
	first.expect(proto.TPong)
	before := runtime.NumGoroutine()
	const n = 40
	peers := make([]*peer, n)
	for i := range peers {
		peers[i] = tlsMember(t, s.Addr(), ca, fmt.Sprintf("r%d", i/2), fmt.Sprintf("u%d", i%2))
	}
	// Handshake goroutines end just after their connection is enrolled.
	var after int
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = runtime.NumGoroutine()
		if after-before < n/4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("goroutines: %d before, %d with %d more TLS members", before, after, n)
	if after-before >= n/4 {
		t.Fatalf("%d TLS members added %d goroutines", n, after-before)
	}
	for i := 0; i < n; i += 2 {
		peers[i].send(&proto.Chat{Num: 1, Text: "hi"})
		if d := peers[i+1].expect(proto.TDeliver).(*proto.Deliver); d.Text != "hi" {
			t.Fatalf("got %+v", d)
		}
	}
}

// TestTLSFramesSplitAcrossRecords sends frames whose bytes are cut across
// TLS records at every awkward place (inside the length prefix, the type
// byte, the body) with the records apart in time, and several frames in
// one record: the loop must keep a partial frame between records.
func TestTLSFramesSplitAcrossRecords(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	a := tlsMember(t, s.Addr(), ca, "split", "alice")
	b := tlsMember(t, s.Addr(), ca, "split", "bob")
	var stream []byte
	const n = 20
	for i := uint64(1); i <= n; i++ {
		stream, _ = wire.AppendFrame(stream, &proto.Chat{Num: i, Text: strings.Repeat("s", int(i)*37)})
	}
	cuts := []int{1, 2, 3, 4, 5, 7, 11, 64, 300, 2}
	for i := 0; len(stream) > 0; i++ {
		k := min(cuts[i%len(cuts)], len(stream))
		a.raw(stream[:k])
		stream = stream[k:]
		if i%3 == 0 {
			time.Sleep(time.Millisecond) // a record on its own, not coalesced
		}
	}
	for i := uint64(1); i <= n; i++ {
		d := b.expect(proto.TDeliver).(*proto.Deliver)
		if d.Num != i || len(d.Text) != int(i)*37 {
			t.Fatalf("got num %d with %d bytes, want %d with %d", d.Num, len(d.Text), i, i*37)
		}
	}
}

// TestTLSLimitsAndSlowConsumer: a TLS connection past MaxConns is told
// server_full over TLS, and a TLS member that stops reading is cut off as
// a slow consumer like a plaintext one.
func TestTLSLimitsAndSlowConsumer(t *testing.T) {
	ca := devCA(t)
	cfg, err := tlsconfig.Server(ca.ServerCert, ca.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(c *Config) {
		c.Listen = ""
		c.TLS = cfg
		c.TLSListen = "127.0.0.1:0"
		c.MaxConns = 3
		c.MaxOutbound = 64 << 10
		c.SlowTimeout = time.Second
	})
	sender := tlsMember(t, s.Addr(), ca, "r", "sender")
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		return serr
	}}
	slow, err := dialTLS(t, s.Addr(), ca, d)
	if err != nil {
		t.Fatal(err)
	}
	slow.send(&proto.Hello{V: wire.Version})
	slow.expect(proto.TWelcome)
	slow.send(&proto.Join{Room: "r", User: "slow"})
	slow.expect(proto.TJoined)
	third, err := dialTLS(t, s.Addr(), ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	third.send(&proto.Hello{V: wire.Version})
	third.expect(proto.TWelcome)
	third.send(&proto.Join{Room: "r", User: "third"}) // a Hello alone may be evicted
	third.expect(proto.TJoined)
	// third reads, so that the member cut off is slow: not reading
	// either, third was at times cut off first, the sender stopped, and
	// slow's read found no error frame (about 1 run in 8).
	go func() {
		for {
			if _, err := third.next(30 * time.Second); err != nil {
				return
			}
		}
	}()
	over, err := dialTLS(t, s.Addr(), ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	over.expectClosed(proto.CodeServerFull)

	text := strings.Repeat("z", 4000)
	errc := make(chan error, 1)
	go func() {
		// The sender keeps 32 messages unacknowledged, as a client does;
		// Acks wait while the slow member is behind, until it is cut off.
		var frame []byte
		for i := uint64(1); i <= 2000; i++ {
			frame, _ = wire.AppendFrame(frame[:0], &proto.Chat{Num: i, Text: text})
			if _, err := sender.conn.Write(frame); err != nil {
				errc <- err
				return
			}
			if i%32 != 0 {
				continue
			}
			for acked := 0; acked < 32; {
				m, err := sender.next(10 * time.Second)
				if err != nil {
					errc <- fmt.Errorf("sender waiting for acks at %d: %w", i, err)
					return
				}
				if _, ok := m.(*proto.Ack); ok {
					acked++
				}
			}
			if s.Metrics().SlowConsumers > 0 {
				break
			}
		}
		errc <- nil
	}()
	testkit.WaitFor(t, 20*time.Second, "the slow TLS member to be cut off", func() bool { return s.Metrics().SlowConsumers > 0 })
	// Its backlog, and the error frame after it, leave as it reads.
	for {
		m, err := slow.next(5 * time.Second)
		if err != nil {
			t.Fatalf("slow member: no slow_consumer error before %v", err)
		}
		if e, ok := m.(*proto.Error); ok {
			if e.Code != proto.CodeSlowConsumer {
				t.Fatalf("slow member got %+v", e)
			}
			break
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("sender: %v", err)
	}
}

// TestTLSResumedAndEagerClients: a client resuming its session with a
// ticket (the server sent tickets under the new keys, which the record
// layer must count) and a client whose first frames ride in the same
// segment as its Finished both chat normally.
func TestTLSResumedAndEagerClients(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	cfg := clientTLS(t, ca)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	join := func(user string) (*peer, bool) {
		raw, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, cfg)
		t.Cleanup(func() { c.Close() })
		// Hello and Join are written before the handshake is driven, so
		// they leave with the client's Finished.
		b, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version})
		b, _ = wire.AppendFrame(b, &proto.Join{Room: "resume", User: user})
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		p := newPeer(t, c)
		p.expect(proto.TWelcome)
		p.expect(proto.TJoined)
		return p, c.ConnectionState().DidResume
	}
	a, _ := join("alice")
	// Tickets arrive after the handshake; reading a frame took them in.
	b, resumed := join("bob")
	if !resumed {
		t.Fatal("second connection did not resume its session")
	}
	// Each side reads the other's message, skipping its own Acks.
	deliver := func(p *peer) *proto.Deliver {
		for {
			m, err := p.next(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := m.(*proto.Deliver); ok {
				return d
			}
		}
	}
	for i := uint64(1); i <= 3; i++ {
		a.send(&proto.Chat{Num: i, Text: "to bob"})
		b.send(&proto.Chat{Num: i, Text: "to alice"})
		if d := deliver(b); d.Num != i || d.From != "alice" {
			t.Fatalf("bob got %+v", d)
		}
		if d := deliver(a); d.Num != i || d.From != "bob" {
			t.Fatalf("alice got %+v", d)
		}
	}
}

// TestTLSIdleSocketsDoNotStallHandshakes opens more idle TCP connections
// to the TLS port than there are handshake slots, and then a real client:
// idle sockets wait for their first record outside the pool, so the client
// is served at once rather than after the idle ones time out.
func TestTLSIdleSocketsDoNotStallHandshakes(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	idle := make([]net.Conn, 0, 2*tlsHandshakes)
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	for range cap(idle) {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	start := time.Now()
	p, err := dialTLS(t, s.Addr(), ca, nil)
	if err != nil {
		t.Fatalf("TLS client behind %d idle sockets: %v after %v", len(idle), err, time.Since(start))
	}
	p.Hello(&proto.Hello{})
	took := time.Since(start)
	t.Logf("handshake and hello behind %d idle sockets: %v", len(idle), took)
	if took > tlsHandshakeTimeout/2 {
		t.Fatalf("took %v: the idle sockets held the handshake pool", took)
	}
	// The idle ones are closed once their hello deadline passes.
	testkit.WaitFor(t, tlsHelloTimeout+5*time.Second, "idle sockets closed", func() bool {
		_ = idle[0].SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := idle[0].Read(make([]byte, 1))
		return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	})
}

// stallConn sends what the TLS client writes (its ClientHello) but never
// lets it read the server's answer, so the client never finishes.
type stallConn struct {
	net.Conn
	wrote *atomic.Int32
	stop  chan struct{}
}

func (c stallConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.wrote.Add(1)
	return n, err
}

func (c stallConn) Read([]byte) (int, error) {
	<-c.stop
	return 0, net.ErrClosed
}

// TestTLSStalledHandshakesDoNotStallOthers starts more TLS handshakes
// than there are slots, each sending a real ClientHello and then never
// answering the server: a new client is served at once, as the slot is
// given up while the server waits on its client.
func TestTLSStalledHandshakesDoNotStallOthers(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	cfg := clientTLS(t, ca)
	n := 2 * tlsHandshakes
	var wrote atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	for range n {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = tls.Client(stallConn{Conn: c, wrote: &wrote, stop: stop}, cfg).Handshake()
		}()
	}
	testkit.WaitFor(t, 10*time.Second, "every stalled client's ClientHello sent", func() bool { return wrote.Load() >= int32(n) })
	start := time.Now()
	p, err := dialTLS(t, s.Addr(), ca, nil)
	if err != nil {
		t.Fatalf("TLS client behind %d stalled handshakes: %v after %v", n, err, time.Since(start))
	}
	p.Hello(&proto.Hello{})
	took := time.Since(start)
	t.Logf("handshake and hello behind %d stalled handshakes: %v", n, took)
	if took > tlsHandshakeTimeout/2 {
		t.Fatalf("took %v: stalled handshakes held the pool", took)
	}
}
