package connlimit

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

// TestDeclaredBodyDoesNotHoldAPlace (abuse sweep 6, F1): a request whose header
// declares a body that never comes is not a client at work. net/http runs
// the handler once the header is whole (ServeNewcomers holds the
// connection), then waits for the body until ReadTimeout, so connections
// that each send one header and nothing more hold every place of a Few
// port (metrics, dashboard) or of Central's REST port for ReadTimeout,
// and a scraper is refused meanwhile, from any address.
func TestDeclaredBodyDoesNotHoldAPlace(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			served.Add(1)
			_, _ = io.WriteString(w, "ok\n")
		}),
		ReadHeaderTimeout: 3 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
	}
	ServeNewcomers(srv)
	go func() { _ = srv.Serve(Few(inner, 4, 4)) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := inner.Addr().String()

	// Four connections from 127.0.0.2, each a whole GET that declares a
	// 10-byte body and sends none.
	for range 4 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
	}
	testkit.WaitFor(t, 5*time.Second, "the four requests to reach the handler", func() bool { return served.Load() == 4 })

	// A scraper from 127.0.0.1, within its own per-source cap.
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 3 {
		r, err := cl.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("scrape %d while 4 connections hold a declared body back: %v (want served: they are not serving a request, they wait for the client)", i, err)
		}
		r.Body.Close()
	}
}

// TestPerSourceCapCoversAnIPv6Slash64 (abuse sweep 6, F4): Central's rate limits
// take an IPv6 /64 as one source (central/limit.go sourceKey), as one
// host is usually given a whole /64; the connection caps count each
// address on its own, so one host holds perSource connections from each
// of its 2^64 addresses and every per-source cap (2,048 on each port, 4
// on metrics, 8 on the dashboard) is void against it.
func TestPerSourceCapCoversAnIPv6Slash64(t *testing.T) {
	p := New(1000).Port(2)
	admitted := 0
	for i := range 8 {
		ip := net.ParseIP(fmt.Sprintf("2001:db8:1:2::%x", i+1))
		if p.Acquire(&net.TCPAddr{IP: ip, Port: 1}, 1) {
			admitted++
		}
	}
	if admitted > 2 {
		t.Fatalf("8 connections from 8 addresses of one IPv6 /64 at a per-source cap of 2: %d admitted", admitted)
	}
}
