package chatserver

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
)

// TestCentralMisconfigNamesTLSMismatch: a chat server talking plain HTTP
// to a TLS Central (or TLS to a plain one) is told which flag to fix, not
// that Central is unreachable.
func TestCentralMisconfigNamesTLSMismatch(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	tlsSrv := httptest.NewTLSServer(h)
	defer tlsSrv.Close()
	plainSrv := httptest.NewServer(h)
	defer plainSrv.Close()

	_, err := centralapi.NewClient(strings.TrimPrefix(tlsSrv.URL, "https://"), nil).Health(context.Background())
	if got := centralMisconfig(err); !strings.Contains(got, "Central serves TLS: start the chat server with -ca FILE") {
		t.Errorf("plain to TLS: %v -> %q", err, got)
	}
	_, err = centralapi.NewClientTLS(strings.TrimPrefix(plainSrv.URL, "http://"), tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig).Health(context.Background())
	if got := centralMisconfig(err); !strings.Contains(got, "Central does not serve TLS") {
		t.Errorf("TLS to plain: %v -> %q", err, got)
	}
	if got := centralMisconfig(context.DeadlineExceeded); got != "" {
		t.Errorf("a timeout called a misconfiguration: %q", got)
	}
}

// TestCentralMisconfigNamesControlPort: -central given Central's control
// port (or a chat server), which answers HTTP with an Error frame, was
// logged as "Central unreachable" forever (usability review 7, M7).
func TestCentralMisconfigNamesControlPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 4096))
			proto.Refuse(c, proto.CodeWrongPort, "this is Central's control port, which speaks nearchat's framed protocol; HTTP goes to its REST port")
			c.Close()
		}
	}()
	_, err = centralapi.NewClient(ln.Addr().String(), nil).Health(context.Background())
	if got := centralMisconfig(err); !strings.Contains(got, "REST port") {
		t.Errorf("HTTP to a framed port: %v -> %q", err, got)
	}
}
