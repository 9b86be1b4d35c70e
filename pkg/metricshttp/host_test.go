package metricshttp

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// get sends GET /metrics to addr over a connection of its own, with the
// Host line written as given (none when host is empty, as HTTP/1.0
// allows): a raw request, so no client tidies the odd forms up first.
func get(t *testing.T, addr, host string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /metrics HTTP/1.0\r\n\r\n"
	if host != "" {
		req = fmt.Sprintf("GET /metrics HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	}
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("Host %q: %v", host, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestLoopbackMetricsServeOnlyLoopbackNames: metrics bound to loopback
// answer only requests that name localhost or a loopback address, whatever
// the port, so a web page that points a name of its own at 127.0.0.1 (DNS
// rebinding) cannot read them from the operator's browser; the refusal
// closes the connection. Before, every Host was served.
func TestLoopbackMetricsServeOnlyLoopbackNames(t *testing.T) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, port, _ := net.SplitHostPort(s.Addr())
	for host, want := range map[string]int{
		"127.0.0.1:" + port:      http.StatusOK,
		"localhost:" + port:      http.StatusOK,
		"localhost":              http.StatusOK,
		"LocalHost:9090":         http.StatusOK,
		"localhost.:" + port:     http.StatusOK,
		"prom.localhost:" + port: http.StatusOK,
		"127.0.0.1":              http.StatusOK,
		"127.1.2.3:1":            http.StatusOK,
		"[::1]:" + port:          http.StatusOK,
		"[::1]":                  http.StatusOK,
		"::1":                    http.StatusOK,

		"evil.com":                   http.StatusForbidden,
		"evil.com:" + port:           http.StatusForbidden,
		"localhost.evil.com":         http.StatusForbidden,
		"localhost.evil.com:" + port: http.StatusForbidden,
		"127.0.0.1.evil.com":         http.StatusForbidden,
		"127.1":                      http.StatusForbidden,
		"127.1:" + port:              http.StatusForbidden,
		"2130706433":                 http.StatusForbidden,
		"2130706433:" + port:         http.StatusForbidden,
		"0x7f000001":                 http.StatusForbidden,
		"0177.0.0.1":                 http.StatusForbidden,
		"127.000.000.001":            http.StatusForbidden,
		"10.0.0.1:" + port:           http.StatusForbidden,
		"[::2]:" + port:              http.StatusForbidden,
		"":                           http.StatusForbidden, // HTTP/1.0, no Host
	} {
		resp, body := get(t, s.Addr(), host)
		if resp.StatusCode != want {
			t.Errorf("Host %q: %s; want %d", host, resp.Status, want)
			continue
		}
		if want == http.StatusOK && !strings.Contains(body, "go_goroutines") {
			t.Errorf("Host %q: 200 without the metrics (%d bytes)", host, len(body))
		}
		if want == http.StatusForbidden && (!resp.Close || strings.Contains(body, "go_goroutines")) {
			t.Errorf("Host %q: refused but closed %v, body %q", host, resp.Close, body)
		}
	}
}

// TestLocalhostMetricsAreLoopback: -metrics localhost:PORT binds a
// loopback address, and so is guarded the same way.
func TestLocalhostMetricsAreLoopback(t *testing.T) {
	s, err := Listen("localhost:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if resp, _ := get(t, s.Addr(), "evil.com"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("Host evil.com on %s: %s; want 403", s.Addr(), resp.Status)
	}
	if resp, _ := get(t, s.Addr(), "localhost"); resp.StatusCode != http.StatusOK {
		t.Errorf("Host localhost on %s: %s; want 200", s.Addr(), resp.Status)
	}
}

// TestOtherMetricsServeAnyHost: bound to every address, metrics are
// scraped by whatever name or address the operator set up, so Host is
// not checked. (Reached only through 127.0.0.1 here.)
func TestOtherMetricsServeAnyHost(t *testing.T) {
	s, err := Listen("0.0.0.0:0")
	if err != nil {
		t.Skipf("cannot bind 0.0.0.0: %v", err)
	}
	defer s.Close()
	_, port, _ := net.SplitHostPort(s.Addr())
	for _, host := range []string{"evil.com", "prometheus-target.internal:" + port, "10.0.0.1:" + port, "127.0.0.1:" + port} {
		resp, body := get(t, net.JoinHostPort("127.0.0.1", port), host)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "go_goroutines") {
			t.Errorf("Host %q: %s; want 200 with the metrics", host, resp.Status)
		}
	}
}
