package central

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
)

// TestRESTMalformedHTTPAnsweredInJSON: a request net/http cannot parse at
// all is answered by net/http itself, before any handler; that answer was
// plain text, where every other answer of the port is a JSON
// centralapi.Error (black-box sweep, 2026-12-04). Over TLS too, and plain
// HTTP sent to the TLS port is told so in JSON.
func TestRESTMalformedHTTPAnsweredInJSON(t *testing.T) {
	srvTLS, cliTLS := devTLS(t)
	cfg := testConfig(t)
	plain := startCentral(t, cfg)
	cfg = testConfig(t)
	cfg.TLS = srvTLS
	secure := startCentral(t, cfg)
	cases := []struct {
		name, req string
		status    int
		code      string
	}{
		{"two Host headers", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, centralapi.CodeBadRequest},
		{"a 40 KiB header", "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", 40<<10) + "\r\n\r\n", 431, centralapi.CodeTooLarge},
		{"HTTP/3.0", "GET /healthz HTTP/3.0\r\nHost: a\r\n\r\n", 505, centralapi.CodeBadVersion},
		{"unknown transfer encoding", "POST /v1/clients HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, centralapi.CodeBadRequest},
		{"a bad escape in the path", "GET /v1/clients/%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400, centralapi.CodeBadRequest},
	}
	dial := map[string]func() (net.Conn, error){
		"plain": func() (net.Conn, error) { return net.Dial("tcp", plain.c.RESTAddr()) },
		"TLS":   func() (net.Conn, error) { return tls.Dial("tcp", secure.c.RESTAddr(), cliTLS) },
	}
	for port, d := range dial {
		for _, tc := range cases {
			t.Run(port+"/"+tc.name, func(t *testing.T) {
				c, err := d()
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, tc.req); err != nil {
					t.Fatal(err)
				}
				checkJSONAnswer(t, c, tc.status, tc.code)
			})
		}
	}
	t.Run("plain HTTP to the TLS port", func(t *testing.T) {
		c, err := net.Dial("tcp", secure.c.RESTAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if e := checkJSONAnswer(t, c, 400, centralapi.CodeBadRequest); !strings.Contains(e.Message, "HTTPS") {
			t.Errorf("message %q does not say the port speaks HTTPS", e.Message)
		}
	})
}

// checkJSONAnswer reads one HTTP answer from c and checks that it is a
// JSON centralapi.Error of status and code.
func checkJSONAnswer(t *testing.T, c net.Conn, status int, code string) centralapi.Error {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e centralapi.Error
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &e) != nil || e.Code != code || e.Message == "" {
		t.Fatalf("answer %d %q %s, want %d application/json with code %q", resp.StatusCode, resp.Header.Get("Content-Type"), body, status, code)
	}
	t.Logf("%d %s: %s", resp.StatusCode, e.Code, e.Message)
	return e
}
