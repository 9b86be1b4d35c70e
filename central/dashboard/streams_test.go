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

// Addresses share the live views: with all 16 held by four addresses, a
// fifth address's view ends the newest view of the address holding the
// most, and gets its place, until every address holds about as many.
// Before, the fifth was refused until one of the 16 ended on its own: up
// to 10 minutes.
func TestEventStreamsShared(t *testing.T) {
	d, err := dashboard.New(dashboard.Config{Listen: "127.0.0.1:0"}, fixed{central.Snapshot{At: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var bodies []io.Closer
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	// open asks for a live view from 127.0.0.host, on a connection of its own.
	open := func(host byte) *http.Response {
		t.Helper()
		dl := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}}
		hc := &http.Client{Transport: &http.Transport{DialContext: dl.DialContext}}
		resp, err := hc.Get("http://" + d.Addr() + "/api/events")
		if err != nil {
			t.Fatalf("events from 127.0.0.%d: %v", host, err)
		}
		bodies = append(bodies, resp.Body)
		if resp.StatusCode != http.StatusOK {
			io.Copy(io.Discard, resp.Body)
		}
		return resp
	}
	// ended reports whether v's stream ends soon.
	ended := func(v *http.Response) bool {
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, v.Body)
			done <- err
		}()
		select {
		case err := <-done:
			return err == nil
		case <-time.After(5 * time.Second):
			return false
		}
	}
	views := map[byte][]*http.Response{}
	for host := byte(1); host <= 4; host++ {
		for range 4 {
			v := open(host)
			if v.StatusCode != http.StatusOK {
				t.Fatalf("view %d from 127.0.0.%d: %s", len(views[host])+1, host, v.Status)
			}
			views[host] = append(views[host], v)
		}
	}
	// 127.0.0.5 takes two places, from 127.0.0.1 and then 127.0.0.2 (four
	// each, the lowest address first), their newest views.
	for i, from := range []byte{1, 2} {
		if v := open(5); v.StatusCode != http.StatusOK {
			t.Fatalf("view %d from a fifth address, 16 held by four: %s, want 200", i+1, v.Status)
		}
		if !ended(views[from][3]) {
			t.Fatalf("view %d from a fifth address: the newest of 127.0.0.%d went on", i+1, from)
		}
	}
	// Now 3, 3, 4, 4, 2: a third from 127.0.0.5 still has a place (127.0.0.3
	// holds 4), a fourth does not (every address holds 3 or 4).
	if v := open(5); v.StatusCode != http.StatusOK {
		t.Fatalf("third view from the fifth address: %s, want 200", v.Status)
	}
	if !ended(views[3][3]) {
		t.Fatal("third view from the fifth address: 127.0.0.3's newest went on")
	}
	if v := open(5); v.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("fourth view from the fifth address, every address holding 3 or 4: %s, want 503", v.Status)
	}
}
