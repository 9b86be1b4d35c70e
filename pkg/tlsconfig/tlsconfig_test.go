package tlsconfig

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
)

func TestConfigErrors(t *testing.T) {
	f, err := WriteDev(t.TempDir(), []string{"example.test", "10.9.8.7"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"client without CA", func() error { _, err := Client("", "", ""); return err }(), "CA file is needed"},
		{"CA file that is a key", func() error { _, err := Client(f.ServerKey, "", ""); return err }(), "no PEM certificate"},
		{"missing server key", func() error { _, err := Server(f.ServerCert, f.Dir+"/nope", ""); return err }(), "server certificate"},
		{"client cert without key", func() error { _, err := Client(f.CA, f.ClientCert, ""); return err }(), "client certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", tc.err, tc.want)
			}
		})
	}
}

// TestFrontRelaysAndVerifies: a TLS client with the right CA reaches the
// plaintext backend through the Front; one trusting another CA is refused.
func TestFrontRelaysAndVerifies(t *testing.T) {
	f, err := WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The backend echoes in plaintext on a private Unix socket.
	network, addr, dir, err := Backend("")
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := back.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	scfg, err := Server(f.ServerCert, f.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	front := NewFront(ln, network, addr, dir, nil, nil)
	t.Cleanup(func() { front.Close(); back.Close() })

	dial := func(ca string) (net.Conn, error) {
		cfg, err := Client(ca, "", "")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return (&Dialer{Config: cfg}).DialContext(ctx, "tcp", front.Addr().String())
	}
	c, err := dial(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping through tls")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping through tls" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	if _, err := dial(other.CA); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("dial trusting another CA: %v, want a certificate error", err)
	}
	// A client speaking nearchat in plaintext is told, in nearchat's
	// protocol, that the port speaks TLS.
	pc, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version})
	pc.Write(hello)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(pc)
	typ, body, _, err := wire.ParseFrame(got, 0)
	var e proto.Error
	if err == nil && typ == proto.TError {
		err = wire.Unmarshal(body, &e)
	}
	if err != nil || !e.Fatal || !strings.Contains(e.Reason, "speaks TLS") {
		t.Fatalf("a plaintext Hello got %q (%v), want a fatal Error saying the port speaks TLS", got, err)
	}
}

// TestFrontCutsClientThatReadsNothing: a client that shakes hands and
// then reads nothing, while the server sends, held the front's relay (its
// goroutines, its TLS connection and its place on the port) for as long
// as its window stayed shut: no write to it had a deadline (V2-4). Each
// write now has writeStall.
func TestFrontCutsClientThatReadsNothing(t *testing.T) {
	old := writeStall
	writeStall = 300 * time.Millisecond
	t.Cleanup(func() { writeStall = old })
	f, err := WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	network, addr, dir, err := Backend("")
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	go func() {
		for {
			c, err := back.Accept()
			if err != nil {
				return
			}
			go func() { // the server talks, up to 256 MiB, until cut off
				defer c.Close()
				for range 4096 {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
	scfg, err := Server(f.ServerCert, f.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	front := NewFront(ln, network, addr, dir, nil, nil)
	t.Cleanup(func() { front.Close(); back.Close() })
	cfg, err := Client(f.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.(*net.TCPConn).SetReadBuffer(4096) // the window shuts soon
	cfg.ServerName = "localhost"
	c := tls.Client(raw, cfg)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	// Read nothing more.
	relaying := func() int {
		front.mu.Lock()
		defer front.mu.Unlock()
		return len(front.conns)
	}
	if relaying() != 1 {
		t.Fatalf("%d connections relayed, want 1", relaying())
	}
	start := time.Now()
	testkit.WaitFor(t, 20*time.Second, "the front to let go of the client that reads nothing", func() bool { return relaying() == 0 })
	t.Logf("cut %v after the handshake (stall %v)", time.Since(start), writeStall)
}

// TestFraming: the front tells a stream that ends between two frames from
// one that ends inside one, however the frames were cut into writes.
func TestFraming(t *testing.T) {
	frame := func(body string) []byte { return append([]byte{0, 0, 0, byte(len(body))}, body...) }
	stream := slices.Concat(frame("a"), frame("hello"), frame(strings.Repeat("x", 200)))
	ends := map[int]bool{0: true, 5: true, 14: true, len(stream): true}
	for cut := 1; cut <= len(stream); cut++ {
		var f framing
		for i := 0; i < len(stream); i += cut {
			j := min(i+cut, len(stream))
			f.feed(stream[i:j])
			if f.whole() != ends[j] {
				t.Fatalf("writes of %d bytes: after %d, whole() = %v", cut, j, f.whole())
			}
		}
	}
}
