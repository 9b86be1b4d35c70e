package metricshttp

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSilentConnectionsLeaveRoom: connections from one address that send
// nothing hold at most MaxConnsPerSource of the port's slots, so a
// scraper elsewhere is served at once instead of after their header
// timeout (lengthened here to a minute). Before, MaxConns of them took
// every slot and the port answered nobody.
func TestSilentConnectionsLeaveRoom(t *testing.T) {
	old := readHeaderTimeout
	t.Cleanup(func() { readHeaderTimeout = old })
	readHeaderTimeout = time.Minute
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var silent []net.Conn
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	for range MaxConns {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	// Another loopback address is another source.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	defer hc.CloseIdleConnections()
	start := time.Now()
	resp, err := hc.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatalf("scrape beside %d silent connections: %v", MaxConns, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("scrape: %s, %d bytes", resp.Status, len(body))
	}
	t.Logf("scraped in %v beside %d silent connections", time.Since(start), MaxConns)
	// The silent ones past the cap were closed.
	closed := 0
	for _, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if want := MaxConns - MaxConnsPerSource; closed < want {
		t.Fatalf("%d of %d silent connections from one address closed, want %d", closed, MaxConns, want)
	}
}

// TestSilentFloodFromManySources: silent connections from four addresses
// fill every slot of the port; a scraper is still served at once, from
// one of those addresses or another, the oldest silent connection giving
// way. (Before: it waited in the listen queue for their header timeout.)
func TestSilentFloodFromManySources(t *testing.T) {
	old := readHeaderTimeout
	t.Cleanup(func() { readHeaderTimeout = old })
	readHeaderTimeout = time.Minute
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	from := func(i byte) *net.Dialer {
		return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 10+i)}}
	}
	var silent []net.Conn
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	for i := range MaxConns {
		c, err := from(byte(i%4)).Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	for _, src := range []byte{0, 7} {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: from(src).DialContext}}
		start := time.Now()
		resp, err := hc.Get("http://" + s.Addr() + "/metrics")
		if err != nil {
			t.Fatalf("scrape from 127.0.0.%d beside %d silent connections: %v", 10+src, MaxConns, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		hc.CloseIdleConnections()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape: %s", resp.Status)
		}
		t.Logf("scraped from 127.0.0.%d in %v", 10+src, time.Since(start))
	}
}
