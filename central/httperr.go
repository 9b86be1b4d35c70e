package central

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"nearchat/pkg/centralapi"
)

// Go's HTTP server answers a request it cannot parse at all (two Host
// headers, a header past MaxHeaderBytes, an HTTP version it does not
// speak) itself, before any handler, in plain text. Every other answer of
// the REST port is a JSON centralapi.Error, so a client parses one kind.
// jsonErrors rewrites those answers as they are written: net/http writes
// each in one Write, a status line and errorHeaders, then its text.

// stdErrorHeaders are the headers net/http's own error answers carry, and
// no answer of ours does (ours are application/json).
const stdErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// rewriteStdError returns b, one Write of net/http's connection, as a JSON
// answer when it is one of net/http's own plain-text errors (ok), and
// false otherwise.
func rewriteStdError(b []byte) (out []byte, ok bool) {
	const proto = "HTTP/1.1 "
	if !bytes.HasPrefix(b, []byte(proto)) || len(b) < len(proto)+3 {
		return nil, false
	}
	i := bytes.Index(b, []byte(stdErrorHeaders))
	if i < 0 {
		return nil, false
	}
	status, err := strconv.Atoi(string(b[len(proto) : len(proto)+3]))
	if err != nil || status < 400 || status > 599 {
		return nil, false
	}
	// The text is "431 Request Header Fields Too Large", "400 Bad
	// Request: missing required Host header" or a sentence of its own.
	text := string(b[i+len(stdErrorHeaders):])
	prefix := strconv.Itoa(status) + " " + http.StatusText(status)
	switch {
	case text == prefix:
		text = ""
	case len(text) > len(prefix)+2 && text[:len(prefix)+2] == prefix+": ":
		text = text[len(prefix)+2:]
	}
	code, msg := centralapi.CodeBadRequest, "the request could not be read as HTTP/1.1: a malformed request line, header, Host or path"
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		code, msg = centralapi.CodeTooLarge, "the request's header is over the 16 KiB this port reads"
	case http.StatusHTTPVersionNotSupported:
		code, msg = centralapi.CodeBadVersion, "this port speaks HTTP/1.1 only"
	case http.StatusNotImplemented:
		msg = "unsupported Transfer-Encoding: this port takes chunked or none"
	}
	if text != "" && status != http.StatusNotImplemented {
		msg += " (" + text + ")"
	}
	body, err := json.Marshal(centralapi.Error{Code: code, Message: msg})
	if err != nil {
		return nil, false
	}
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(body), body), true
}

// writeRewritten writes b to c, rewritten if it is one of net/http's own
// errors (rewriteStdError); it reports b's length as written.
func writeRewritten(c net.Conn, b []byte) (int, error) {
	out, ok := rewriteStdError(b)
	if !ok {
		return c.Write(b)
	}
	if _, err := c.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// jsonErrorsTLS wraps the TLS REST listener's connections so that
// net/http's own answers are rewritten (rewriteStdError) before they are
// encrypted. net/http then no longer sees a *tls.Conn: it does not shake
// hands up front (the first read does, under the header timeout) and
// leaves Request.TLS empty, which tlsState fills in from the connection.
type jsonErrorsTLS struct{ net.Listener }

func (l jsonErrorsTLS) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return c, nil
	}
	return &jsonErrorsConn{Conn: tc, tc: tc}, nil
}

type jsonErrorsConn struct {
	net.Conn
	tc *tls.Conn
}

func (c *jsonErrorsConn) Write(b []byte) (int, error) { return writeRewritten(c.Conn, b) }

// Read is the TLS connection's. A peer that spoke plain HTTP instead of
// TLS is told so in plain HTTP, as net/http tells it when it shakes hands
// itself (in plain text there, in JSON here), since nothing can be
// written over the failed TLS connection.
func (c *jsonErrorsConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	var re tls.RecordHeaderError
	if err != nil && errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		body, _ := json.Marshal(centralapi.Error{Code: centralapi.CodeBadRequest, Message: "this port speaks HTTPS: plain HTTP went to a TLS port"})
		_, _ = fmt.Fprintf(re.Conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	return n, err
}

// looksLikeHTTP reports whether the first five bytes of a TLS record's
// place start an HTTP request.
func looksLikeHTTP(h [5]byte) bool {
	switch string(h[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH":
		return true
	}
	return false
}

// NetConn returns the TLS connection (connlimit.NewcomerOf unwraps it
// further).
func (c *jsonErrorsConn) NetConn() net.Conn { return c.tc }

// CloseWrite half-closes as the TLS connection does: net/http sends a
// refusal (413, 431) that way and waits before closing.
func (c *jsonErrorsConn) CloseWrite() error { return c.tc.CloseWrite() }

type connKey struct{}

// withConn keeps the connection in a request's context (http.Server's
// ConnContext), for tlsState.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// tlsState fills in r.TLS from the connection jsonErrorsTLS wrapped: by
// the time a request was read, its handshake is done.
func tlsState(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if c, ok := r.Context().Value(connKey{}).(*jsonErrorsConn); ok {
				if cs := c.tc.ConnectionState(); cs.HandshakeComplete {
					r.TLS = &cs
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}
