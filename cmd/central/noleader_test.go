package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

// TestFollowerAnswersWithoutALeader: while no Central leads (here nobody
// campaigns on the prefix; in production etcd lost quorum), a follower
// held every REST and control connection 4 s and then closed it without
// a word, so clients saw only EOF for the whole outage (rel7 R7-4). It
// now answers REST 503 unavailable and a control Hello a fatal Error
// unavailable, over plaintext and over TLS.
func TestFollowerAnswersWithoutALeader(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	files, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "tls"}[withTLS]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := central.Config{RESTListen: "127.0.0.1:0", ControlListen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}
			var clientTLS *tls.Config
			if withTLS {
				if cfg.TLS, err = tlsconfig.Server(files.ServerCert, files.ServerKey, ""); err != nil {
					t.Fatal(err)
				}
				if clientTLS, err = tlsconfig.Client(files.CA, "", ""); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f, err := startFollower(ctx, "etcd://"+ec.Hosts()+"/noleader-"+name, nil, &cfg, "")
			if err != nil {
				t.Fatal(err)
			}
			defer f.stop()

			scheme := map[bool]string{false: "http", true: "https"}[withTLS]
			hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS}}
			start := time.Now()
			resp, err := hc.Get(scheme + "://" + cfg.RESTListen + "/healthz")
			if err != nil {
				t.Fatalf("REST through a follower with no leader: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e centralapi.Error
			if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e.Code != centralapi.CodeUnavailable ||
				!strings.Contains(e.Message, "no Central leads") || resp.Header.Get("Retry-After") != "2" {
				t.Fatalf("REST: %d %q (Retry-After %q), want 503 unavailable saying no Central leads", resp.StatusCode, body, resp.Header.Get("Retry-After"))
			}
			t.Logf("REST answered 503 after %v", time.Since(start))

			var c net.Conn
			if withTLS {
				c, err = tls.Dial("tcp", cfg.ControlListen, clientTLS)
			} else {
				c, err = net.Dial("tcp", cfg.ControlListen)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "test"})
			if _, err := c.Write(hello); err != nil {
				t.Fatal(err)
			}
			typ, b, err := wire.NewReader(c, wire.MaxFrame).Next()
			if err != nil {
				t.Fatalf("control Hello through a follower with no leader: %v", err)
			}
			m, err := proto.Decode(typ, b)
			pe, ok := m.(*proto.Error)
			if err != nil || !ok || pe.Code != proto.CodeUnavailable || !pe.Fatal || !strings.Contains(pe.Reason, "no Central leads") {
				t.Fatalf("control: %#v, %v; want a fatal Error unavailable", m, err)
			}
		})
	}
}

// TestRefusalSaysWhatWasWrong: with no leader, a follower's refusals
// closed a peer that dialled the wrong port without a word, where the
// leader names the port to use (abuse7 #7), and the control refusal read
// a first frame of up to 64 KiB, waiting for its body, where the leader
// refuses more than a Hello's 4 KiB unread (abuse7 #3). Each wrong
// opening is now answered at once with the leader's fatal Error.
func TestRefusalSaysWhatWasWrong(t *testing.T) {
	hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "test"})
	for _, tc := range []struct {
		name   string
		refuse func(net.Conn, string)
		send   []byte
		code   proto.Code
		says   string
	}{
		{"hello on REST", refuseREST(nil, "127.0.0.1:7001"), hello, proto.CodeWrongPort, "control port, 127.0.0.1:7001"},
		{"HTTP on control", refuseControl(nil), []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), proto.CodeTooLarge, "looks like HTTP"},
		{"32 KiB first frame on control", refuseControl(nil), []byte{0, 0, 0x80, 0, 0x01, 0x80}, proto.CodeTooLarge, "limit 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := refusedConn(t, tc.refuse, tc.send)
			start := time.Now()
			// Half the refusal's own bound: a refusal that waits for more
			// input times out here.
			c.SetReadDeadline(start.Add(refuseWait / 2))
			typ, b, err := wire.NewReader(c, wire.MaxFrame).Next()
			t.Logf("answered after %v", time.Since(start))
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			m, err := proto.Decode(typ, b)
			pe, ok := m.(*proto.Error)
			if err != nil || !ok || !pe.Fatal || pe.Code != tc.code || !strings.Contains(pe.Reason, tc.says) {
				t.Fatalf("answered %#v, %v; want a fatal Error %v saying %q", m, err, tc.code, tc.says)
			}
		})
	}
}

// refusedConn serves one connection with refuse and returns the client
// side of it, send written.
func refusedConn(t *testing.T, refuse func(net.Conn, string), send []byte) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		refuse(c, "")
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(send); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRefusalDoesNotAnswerAnError: a follower with no leader answered
// any first control frame with a fatal Error unavailable, an Error frame
// too, and a frame on the REST port with wrong_port, an Error too, where
// every other nearchat endpoint never answers an Error with an Error (two
// such peers would trade them). A peer whose first frame is an Error is
// now closed without an answer.
func TestRefusalDoesNotAnswerAnError(t *testing.T) {
	for name, refuse := range map[string]func(net.Conn, string){
		"control": refuseControl(nil),
		"REST":    refuseREST(nil, "127.0.0.1:7001"),
	} {
		t.Run(name, func(t *testing.T) {
			perr, _ := wire.AppendFrame(nil, &proto.Error{Code: proto.CodeInternal, Fatal: true, Reason: "test gives up"})
			c := refusedConn(t, refuse, perr)
			c.SetReadDeadline(time.Now().Add(refuseWait / 2))
			typ, b, err := wire.NewReader(c, wire.MaxFrame).Next()
			if err == nil {
				m, _ := proto.Decode(typ, b)
				t.Fatalf("an Error was answered with %#v; want the connection closed without a frame", m)
			}
			if err != io.EOF {
				t.Fatalf("want the connection closed (EOF), got %v", err)
			}
		})
	}
}

// TestTLSRefusalSaysWhatWasWrong: with TLS, a follower with no leader
// closed a peer speaking plaintext (a nearchat frame, or HTTP) without a
// word, where the leader's TLS ports answer it in its own protocol
// (black-box sweep, 2026-12-05). The refusals now answer as the leader.
func TestTLSRefusalSaysWhatWasWrong(t *testing.T) {
	files, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsconfig.Server(files.ServerCert, files.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "test"})
	get := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, tc := range []struct {
		name   string
		refuse func(net.Conn, string)
		send   []byte
		says   string // in an Error frame, or with http in a 400
		http   bool
	}{
		{"hello on control", refuseControl(tc), hello, "speaks TLS", false},
		{"HTTP on control", refuseControl(tc), get, "TLS", true},
		{"hello on REST", refuseREST(tc, "127.0.0.1:7001"), hello, "control port, 127.0.0.1:7001", false},
		{"HTTP on REST", refuseREST(tc, "127.0.0.1:7001"), get, "HTTPS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := refusedConn(t, tc.refuse, tc.send)
			c.SetReadDeadline(time.Now().Add(refuseWait / 2))
			if tc.http {
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("no HTTP answer: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.says) {
					t.Fatalf("answered %d %q, want 400 saying %q", resp.StatusCode, body, tc.says)
				}
				return
			}
			typ, b, err := wire.NewReader(c, wire.MaxFrame).Next()
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			m, err := proto.Decode(typ, b)
			pe, ok := m.(*proto.Error)
			if err != nil || !ok || !pe.Fatal || pe.Code != proto.CodeWrongPort || !strings.Contains(pe.Reason, tc.says) {
				t.Fatalf("answered %#v, %v; want a fatal wrong_port saying %q", m, err, tc.says)
			}
		})
	}
}
