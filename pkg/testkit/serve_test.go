package testkit

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestServe: a handled connection is closed when its handler returns; a
// held one (nil handler) stays open and unread until the test that served
// it ends, and then is closed.
func TestServe(t *testing.T) {
	var held net.Conn
	t.Run("serve", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		Serve(t, ln, func(c net.Conn) { io.WriteString(c, "hi") })
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if b, err := io.ReadAll(c); err != nil || string(b) != "hi" {
			t.Fatalf("read %q, %v; want hi then EOF", b, err)
		}

		ln2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		Serve(t, ln2, nil)
		if held, err = net.Dial("tcp", ln2.Addr().String()); err != nil {
			t.Fatal(err)
		}
		held.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := held.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("held connection: %v, want it open and silent", err)
		}
	})
	defer held.Close()
	held.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the test ended: %v, want EOF", err)
	}
}
