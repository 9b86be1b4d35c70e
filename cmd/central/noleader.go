package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// What a follower answers on a connection that no leader took within its
// patience (an election pending, etcd unreachable, the leader not
// answering): without an answer its client saw only a close after 4 s,
// for as long as the outage lasted, and could not tell it from a broken
// network (rel7 R7-4). The REST port answers one request 503
// "unavailable", the control port a Hello with a fatal Error of code
// unavailable; both then close. TLS ends here when Central serves it,
// with the same certificate the leader presents.

// refuseWait bounds how long a refusal waits for the client's request
// and for it to read the answer.
const refuseWait = 5 * time.Second

// retryAfter is what a refusal tells a client to wait before trying
// again: about one lease TTL, in which an election usually ends.
const retryAfter = 2 * time.Second

// noLeaderReason says why no leader took the connection.
func noLeaderReason(leader string) string {
	if leader == "" {
		return fmt.Sprintf("no Central leads now (an election is pending, or etcd is unreachable): try again in %v", retryAfter)
	}
	return fmt.Sprintf("the leading Central did not answer within %v: try again in %v", relayPatience, retryAfter)
}

// serverTLS returns the connection a refusal speaks on: c itself, or the
// server side of TLS on it with tc (HTTP/1.1 only: a refusal answers one
// request).
func serverTLS(c net.Conn, tc *tls.Config) net.Conn {
	if tc == nil {
		return c
	}
	tc = tc.Clone()
	tc.NextProtos = nil
	return tls.Server(c, tc)
}

// refuseREST answers one HTTP request on c with 503 unavailable, and a
// peer that opens with a frame of nearchat's protocol with a fatal Error
// naming control, the control port, as the leader's REST port does.
func refuseREST(tc *tls.Config, control string) func(net.Conn, string) {
	return func(c net.Conn, leader string) {
		_ = c.SetDeadline(time.Now().Add(refuseWait))
		conn := serverTLS(c, tc)
		rd := bufio.NewReaderSize(io.LimitReader(conn, 64<<10), 4096)
		b, err := rd.Peek(1)
		if rh := (tls.RecordHeaderError{}); errors.As(err, &rh) && rh.Conn != nil {
			// Plaintext on the TLS port: answered in plaintext, as the
			// leader's REST port answers it.
			switch first := rh.RecordHeader[:]; {
			case first[0] == 0 && !proto.StartsError(first):
				proto.Refuse(rh.Conn, proto.CodeWrongPort, "this is Central's REST port, which speaks HTTP; nearchat's framed protocol goes to its control port, "+control)
			case first[0] != 0:
				_ = rh.Conn.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = io.WriteString(rh.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			default:
				return // an Error is not answered with one
			}
			linger(rh.Conn)
			return
		}
		if err == nil && b[0] == 0 { // no request line starts with NUL; every frame does
			if b, _ := rd.Peek(wire.LenSize + 1); proto.StartsError(b) {
				return // an Error is not answered with one
			}
			proto.Refuse(conn, proto.CodeWrongPort, "this is Central's REST port, which speaks HTTP; nearchat's framed protocol goes to its control port, "+control)
			linger(conn)
			return
		}
		req, err := http.ReadRequest(rd)
		if err != nil {
			return // not HTTP, or nothing sent: a close says enough
		}
		body, _ := json.Marshal(centralapi.Error{Code: centralapi.CodeUnavailable, Message: noLeaderReason(leader)})
		resp := &http.Response{
			StatusCode: http.StatusServiceUnavailable, ProtoMajor: 1, ProtoMinor: 1, Request: req,
			Header: http.Header{
				"Content-Type": {"application/json"},
				"Retry-After":  {strconv.Itoa(int(retryAfter / time.Second))},
			},
			ContentLength: int64(len(body)),
			Body:          io.NopCloser(bytes.NewReader(body)),
			Close:         true,
		}
		if resp.Write(conn) != nil {
			return
		}
		linger(conn)
	}
}

// refuseControl answers the first frame on c (a Hello) with a fatal
// Error of code unavailable; a first frame that is itself an Error is
// closed without an answer.
func refuseControl(tc *tls.Config) func(net.Conn, string) {
	return func(c net.Conn, leader string) {
		_ = c.SetDeadline(time.Now().Add(refuseWait))
		conn := serverTLS(c, tc)
		// A Hello is small: a longer first frame is refused unread, as
		// the leader's control port does before the Hello.
		typ, _, err := wire.NewReader(conn, proto.MaxHelloFrame).Next()
		if rh := (tls.RecordHeaderError{}); errors.As(err, &rh) && rh.Conn != nil {
			proto.PlaintextOnTLS(rh.Conn, rh.RecordHeader[:]) // as the leader's front does
			return
		}
		if err != nil {
			// A peer that spoke something else (HTTP, TLS to a plaintext
			// port, a frame too large) is told what, as the leader tells
			// it; one that went quiet or away is closed.
			if code := proto.CodeOf(err); code != proto.CodeInternal {
				proto.Refuse(conn, code, err.Error())
				linger(conn)
			}
			return
		}
		if typ == proto.TError {
			// An Error is never answered with an Error: the peer has
			// given up already and is closed without a word.
			return
		}
		b, err := wire.AppendFrame(nil, &proto.Error{Code: proto.CodeUnavailable, Fatal: true, Reason: noLeaderReason(leader)})
		if err != nil {
			return
		}
		if _, err := conn.Write(b); err != nil {
			return
		}
		linger(conn)
	}
}

// linger ends the answer and reads what the client still sends, until it
// closes or the deadline, so that closing with unread bytes does not
// reset the connection before the answer is read.
func linger(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<20))
}
