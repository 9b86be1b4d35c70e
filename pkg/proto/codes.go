package proto

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"nearchat/pkg/wire"
)

// Code classifies an Error frame.
type Code uint16

// Error codes. Values are part of the protocol: never renumber.
const (
	CodeBadFrame     Code = 1  // bytes that are not a frame
	CodeTooLarge     Code = 2  // length prefix over the receiver's limit
	CodeUnknownType  Code = 3  // a type byte this version does not define, or not valid here
	CodeBadBody      Code = 4  // body of the wrong msgpack shape
	CodeVersion      Code = 5  // Hello with a version the listener does not speak
	CodeNoHello      Code = 6  // anything but Hello as the first frame
	CodeNotJoined    Code = 7  // Chat (or Leave, Resend) before Join
	CodeBadJoin      Code = 8  // empty or oversized room id or user name, or a second Join
	CodeRoomFull     Code = 9  // the room has its maximum number of members
	CodeServerFull   Code = 10 // connection or room limit of the server reached
	CodeSlowConsumer Code = 11 // the peer did not read fast enough
	CodeUnauthorized Code = 12 // missing, wrong or expired token or ticket
	CodeShutdown     Code = 13 // the server is going away
	CodeNotFound     Code = 14 // unknown user, request or room
	CodeConflict     Code = 15 // duplicate request, name taken
	CodeRateLimited  Code = 16 // too many requests
	CodeBadRequest   Code = 17 // a well-formed message that makes no sense (request to oneself)
	CodeInternal     Code = 18 // the server's own fault
	CodeTimeout      Code = 19 // the peer said nothing for too long
	CodeWrongPort    Code = 20 // this port serves something else: TLS to a plaintext Hello, HTTP (Central's REST port)
	CodeUnavailable  Code = 21 // no Central leads now (a replica that relays to the leader has none): try again shortly
)

var codeNames = map[Code]string{
	CodeBadFrame: "bad_frame", CodeTooLarge: "too_large", CodeUnknownType: "unknown_type",
	CodeBadBody: "bad_body", CodeVersion: "version", CodeNoHello: "no_hello",
	CodeNotJoined: "not_joined", CodeBadJoin: "bad_join", CodeRoomFull: "room_full",
	CodeServerFull: "server_full", CodeSlowConsumer: "slow_consumer",
	CodeUnauthorized: "unauthorized", CodeShutdown: "shutdown", CodeNotFound: "not_found",
	CodeConflict: "conflict", CodeRateLimited: "rate_limited", CodeBadRequest: "bad_request",
	CodeInternal: "internal", CodeTimeout: "timeout", CodeWrongPort: "wrong_port",
	CodeUnavailable: "unavailable",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code_%d", uint16(c))
}

// DecodeMsgpack refuses a code past 16 bits: msgpack's decoder would
// wrap 65,537 into code 1.
func (c *Code) DecodeMsgpack(d *msgpack.Decoder) error {
	n, err := decodeBounded(d, math.MaxUint16, "error code")
	*c = Code(n)
	return err
}

// StatusCode is one step of a chat request's status stream.
type StatusCode uint8

// DecodeMsgpack refuses a status code past 8 bits (see Code's).
func (c *StatusCode) DecodeMsgpack(d *msgpack.Decoder) error {
	n, err := decodeBounded(d, math.MaxUint8, "status code")
	*c = StatusCode(n)
	return err
}

func decodeBounded(d *msgpack.Decoder, limit uint64, what string) (uint64, error) {
	n, err := d.DecodeUint64()
	if err == nil && n > limit {
		return 0, fmt.Errorf("%s %d out of range (at most %d)", what, n, limit)
	}
	return n, err
}

// Status codes, in the order a request normally sees them. Values are part
// of the protocol: never renumber.
const (
	AckConn      StatusCode = 1 // Central has the request
	ReqSent      StatusCode = 2 // every invitee has been told
	UserNotFound StatusCode = 3 // an invitee is not registered or not connected (final)
	AwaitingReq  StatusCode = 4 // still waiting for an answer (repeated)
	ReqAccepted  StatusCode = 5 // all accepted; Assign follows (final)
	ServerErr    StatusCode = 6 // no chat server can host the room (final)
	ReqDeclined  StatusCode = 7 // an invitee declined (final)
	ReqTimeout   StatusCode = 8 // no answer in time (final)
	ReqInvalid   StatusCode = 9 // request to oneself, duplicate, or malformed (final)
)

var statusNames = [...]string{
	AckConn: "ACK_CONN", ReqSent: "REQ_SENT", UserNotFound: "USER_NOT_FOUND",
	AwaitingReq: "AWAITING_REQ", ReqAccepted: "REQ_ACCEPTED", ServerErr: "SERVER_ERR",
	ReqDeclined: "REQ_DECLINED", ReqTimeout: "REQ_TIMEOUT", ReqInvalid: "REQ_INVALID",
}

func (s StatusCode) String() string {
	if int(s) < len(statusNames) && statusNames[s] != "" {
		return statusNames[s]
	}
	return fmt.Sprintf("STATUS_%d", uint8(s))
}

// Final reports whether no further Status follows s for the same request.
func (s StatusCode) Final() bool {
	switch s {
	case AckConn, ReqSent, AwaitingReq:
		return false
	}
	return true
}

// Limits on names and text, enforced by every receiver.
const (
	MaxUser   = 32
	MaxServer = MaxUser
	MaxRoom   = 64
	MaxKey    = 32
	MaxReq    = 32 // Central issues "q-" and 16 hex digits
	MaxText   = 4096
	// MaxAddr bounds a chat server's host:port: a DNS name is at most
	// 253 bytes, an IPv6 literal in brackets 47.
	MaxAddr = 260
	// MaxListed bounds the servers a ServerList names, and a client
	// measures: 1,024 of the longest ids and addresses fit 330 KiB.
	MaxListed = 1024
)

// ErrName is returned by CheckUser, CheckServer, CheckRoom, CheckKey and
// CheckReq.
var ErrName = errors.New("proto: invalid name")

// CheckUser reports whether s is a valid user name: 1 to MaxUser bytes of
// ASCII letters, digits, '.', '_' and '-'.
func CheckUser(s string) error { return checkName("user name", s, MaxUser) }

// CheckServer reports whether s is a valid chat server id: 1 to MaxServer
// bytes of ASCII letters, digits, '.', '_' and '-', the rule of user names,
// and not CentralName in any case: a client takes the Welcome of a
// listener that names itself so for Central's control port. Central
// refuses to register any other id, and bin/chatserver refuses to start
// with one, so both sides of a registration agree.
func CheckServer(s string) error {
	if strings.EqualFold(s, CentralName) {
		return fmt.Errorf("%w: server id %q is reserved: Central's control port names itself so", ErrName, s)
	}
	return checkName("server id", s, MaxServer)
}

// CheckRoom reports whether s is a valid room id: 1 to MaxRoom bytes of
// ASCII letters, digits, '.', '_', ':' and '-'.
func CheckRoom(s string) error { return checkName("room id", s, MaxRoom) }

// CheckKey reports whether s is a valid Request key: 1 to MaxKey bytes of
// ASCII letters, digits, '.', '_' and '-'.
func CheckKey(s string) error { return checkName("request key", s, MaxKey) }

// CheckReq reports whether s could be a request id Central issued (in
// ChatRequest, for an Answer): 1 to MaxReq bytes of ASCII letters,
// digits, '.', '_' and '-'.
func CheckReq(s string) error { return checkName("request id", s, MaxReq) }

func checkName(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrName, what)
	}
	if len(s) > max {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrName, what, len(s), max)
	}
	if s == "." || s == ".." {
		// They name no one in a URL path (/v1/clients/..).
		return fmt.Errorf("%w: %s %q is a path element", ErrName, what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-' || (c == ':' && what == "room id")
		if !ok {
			// Name the character, not its first byte ('\u202e', not 'â').
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size <= 1 {
				return fmt.Errorf("%w: %s %q is not UTF-8 at byte %d (0x%02x)", ErrName, what, s, i, c)
			}
			return fmt.Errorf("%w: %s %q has character %q at byte %d", ErrName, what, s, r, i)
		}
	}
	return nil
}

// PlaintextOnTLS answers on c, a TLS port's connection about to be
// closed, a client that opened in plaintext (first holds the first 5
// bytes it sent, a TLS record header's worth): a nearchat Hello with a
// fatal Error wrong_port, an HTTP request with a 400 response, each
// saying that the port speaks TLS, as net/http answers HTTP on an HTTPS
// port, rather than leaving it a closed or reset connection. Anything
// else is left unanswered. It then reads what the client still sends,
// for at most a second, so that closing does not reset the connection
// before the answer is read.
func PlaintextOnTLS(c net.Conn, first []byte) {
	switch {
	case len(first) > wire.LenSize && wire.Type(first[wire.LenSize]) == THello:
		if _, err := wire.FrameLen(first, 0); err != nil {
			return
		}
		Refuse(c, CodeWrongPort, "this port speaks TLS 1.3: connect with TLS (the client's -ca)")
	case looksLikeHTTP(first):
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, httpOnTLS)
	default:
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// httpOnTLS is the answer to HTTP on a TLS port of nearchat's protocol.
var httpOnTLS = func() string {
	const body = "This port speaks nearchat's framed protocol over TLS 1.3, not HTTP: wrong port?\n"
	return fmt.Sprintf("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

// looksLikeHTTP reports whether b, a connection's first bytes, begin an
// HTTP/1 request.
func looksLikeHTTP(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	switch string(b[:4]) {
	case "GET ", "HEAD", "POST", "PUT ", "DELE", "OPTI", "PATC", "CONN", "TRAC", "PRI ":
		return true
	}
	return false
}

// StartsError reports whether b, the first bytes a peer sent, begin a
// frame of type Error: a refusal of the connection is then left unsaid,
// since an Error is never answered with an Error.
func StartsError(b []byte) bool {
	return len(b) > wire.LenSize && wire.Type(b[wire.LenSize]) == TError
}

// Refuse writes a fatal Error of code and reason to c, a raw connection
// about to be closed, giving the write a second.
func Refuse(c net.Conn, code Code, reason string) {
	b, _ := wire.AppendFrame(nil, &Error{Code: code, Reason: reason, Fatal: true})
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(b)
}
