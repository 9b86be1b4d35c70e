package dashboard_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/central/dashboard"
)

// Live views cannot take every connection: past 4 streams from one
// address (16 in all) /api/events answers 503, and a snapshot is still
// served beside them. Before, 32 open streams held every slot for good
// and the dashboard answered nothing else (abuse probe, 2026-12-01).
func TestEventStreamsBounded(t *testing.T) {
	d, err := dashboard.New(dashboard.Config{Listen: "127.0.0.1:0"}, fixed{central.Snapshot{At: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	open := func() (net.Conn, string) {
		t.Helper()
		c, err := net.Dial("tcp", d.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		return c, strings.TrimSpace(status)
	}
	var streams []net.Conn
	defer func() {
		for _, c := range streams {
			c.Close()
		}
	}()
	for i := range 6 {
		c, status := open()
		streams = append(streams, c)
		want := "200"
		if i >= 4 {
			want = "503"
		}
		if !strings.Contains(status, want) {
			t.Fatalf("stream %d from one address: %q, want %s", i+1, status, want)
		}
		if want == "503" {
			// A refused view does not keep its connection (and a slot).
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("stream %d refused, its connection not closed: %v", i+1, err)
			}
		}
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + d.Addr() + "/api/snapshot")
	if err != nil {
		t.Fatalf("snapshot beside the streams: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("snapshot beside the streams: %s", resp.Status)
	}
	// A stream that ends frees its place.
	streams[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, status := open()
		streams = append(streams, c)
		if strings.Contains(status, "200") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream's place was not freed: %q", status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
