package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

const (
	// Version is the newest protocol version, carried by Hello and
	// Welcome. It is bumped whenever the wire changes. A listener speaks
	// every version from MinVersion to Version, each as it was: it answers
	// a Hello in one of them with a Welcome in the same version and sends
	// that peer only what its version has; it refuses any other version
	// (proto.CheckHello). A dialer takes only a Welcome in its own version.
	//
	//   - version 1: the frame format and the messages as first released.
	//   - version 2: sessions carry an incarnation: Inc in Join, Member,
	//     Presence, Deliver, Resend and Missed; Chat.To makes a Chat the
	//     answer to one member's Resend (no room sequence, Deliver.Seq 0,
	//     not kept in history, not acknowledged).
	//   - version 3: Presences (0x19) carries several joins and leaves in
	//     one frame; the chat server sends it instead of runs of Presence
	//     frames, and for the members a big room's Joined cannot list.
	//   - version 4: the chat server acknowledges a resend (Chat.To) with
	//     Ack.Seq 0, in order with the sender's other Acks, so a sender
	//     paces its Resend answers by its SendWindow.
	//   - version 5: Held (in Holding, member -> Central) carries the
	//     ticket of the placement the member follows; where Central signs
	//     tickets, a report that would make its sender a member or move the
	//     room counts only with it. Nothing else changes.
	//   - version 6: Beat (0x06, client -> chat server) asks the server to
	//     write an empty Pong whenever the connection has been silent for
	//     an interval, so a client watches for silence without pinging.
	//   - version 7: Latency (0x2b, member -> Central) carries the
	//     member's latency vector on the control connection, which the
	//     member otherwise sent over REST on a connection of its own.
	//   - version 8: Holding (member -> Central) carries Left, the rooms
	//     the member left that Central may not have heard of; an older
	//     Central refuses the key (unknown keys are refused), so a member
	//     sends it only to a Central that answered version 8.
	//   - version 9: Central's control port follows its Welcome with
	//     ServerList (0x2c), the servers up at that moment; an older
	//     client would refuse the unknown type, so Central sends it only
	//     to a client whose Hello said version 9.
	Version = 9
	// MinVersion is the oldest version a listener still speaks.
	MinVersion = 2
	// LenSize is the size of the length prefix.
	LenSize = 4
	// HeaderSize is the length prefix plus the type byte.
	HeaderSize = LenSize + 1
	// MaxFrame is the largest L (type byte plus body) any peer sends or
	// accepts. Receivers may be configured with a lower limit.
	MaxFrame = 64 << 10
)

// Type is a frame's type byte.
type Type uint8

// Message is implemented by every frame body type; package proto defines them.
type Message interface {
	FrameType() Type
}

var (
	// ErrIncomplete means buf holds the start of a frame but not all of it.
	// It is not a protocol error: read more and try again.
	ErrIncomplete = errors.New("wire: incomplete frame")
	// ErrTooLarge means the length prefix exceeds the receiver's maximum.
	ErrTooLarge = errors.New("wire: frame too large")
	// ErrEmpty means a length prefix of zero: a frame without a type byte.
	ErrEmpty = errors.New("wire: empty frame")
	// ErrBody means a body that is not exactly one msgpack value of the
	// expected shape.
	ErrBody = errors.New("wire: malformed body")
)

// FrameLen reads the length prefix at the start of buf and returns the whole
// frame's size on the wire (4+L). It fails with ErrIncomplete when buf holds
// fewer than four bytes, and with ErrTooLarge or ErrEmpty when L is out of
// range, so callers can refuse a frame before buffering its body.
func FrameLen(buf []byte, max int) (int, error) {
	if len(buf) < LenSize {
		return 0, ErrIncomplete
	}
	l := binary.BigEndian.Uint32(buf)
	if l == 0 {
		return 0, ErrEmpty
	}
	if max <= 0 || max > MaxFrame {
		max = MaxFrame
	}
	if l > uint32(max) {
		return 0, fmt.Errorf("%w: %d bytes, limit %d%s", ErrTooLarge, l, max, foreign(buf))
	}
	return LenSize + int(l), nil
}

// foreign names the protocol whose first bytes make the length prefix
// buf[:4] too large, so that a peer that dialled the wrong port, or
// spoke TLS to a plaintext one, is told what happened rather than only
// how many bytes a frame of its would hold.
func foreign(b []byte) string {
	if b[0] == 0x16 && b[1] == 0x03 { // a TLS record carrying a handshake
		return " (that looks like a TLS handshake: this connection is plaintext)"
	}
	switch string(b[:4]) {
	case "GET ", "HEAD", "POST", "PUT ", "DELE", "OPTI", "PATC", "CONN", "TRAC", "PRI ", "HTTP":
		return " (that looks like HTTP: this connection speaks nearchat's framed protocol)"
	}
	return ""
}

// ParseFrame splits the first frame off buf. It returns the frame's type, its
// body (aliasing buf: copy it before buf is reused) and the number of bytes
// the frame occupies. ErrIncomplete asks for more input; any other error is a
// protocol violation. A max of 0 means MaxFrame.
func ParseFrame(buf []byte, max int) (t Type, body []byte, n int, err error) {
	n, err = FrameLen(buf, max)
	if err != nil {
		return 0, nil, 0, err
	}
	if len(buf) < n {
		return 0, nil, 0, ErrIncomplete
	}
	return Type(buf[LenSize]), buf[HeaderSize:n:n], n, nil
}

// appendWriter lets msgpack's Encoder append to a byte slice we own.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// WriteByte and WriteString keep msgpack from wrapping the writer in an
// adapter that allocates on every call.
func (w *appendWriter) WriteByte(c byte) error {
	w.b = append(w.b, c)
	return nil
}

func (w *appendWriter) WriteString(s string) (int, error) {
	w.b = append(w.b, s...)
	return len(s), nil
}

type encoder struct {
	w   appendWriter
	enc *msgpack.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = msgpack.NewEncoder(&e.w)
	return e
}}

// AppendFrame appends m as one frame to dst and returns the extended slice.
// On error dst is returned unchanged (in length).
func AppendFrame(dst []byte, m Message) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(m.FrameType()))
	e := encoders.Get().(*encoder)
	e.w.b = dst
	err := e.enc.Encode(m)
	dst = e.w.b
	e.w.b = nil
	encoders.Put(e)
	if err != nil {
		return dst[:start], fmt.Errorf("wire: encode %T: %w", m, err)
	}
	l := len(dst) - start - LenSize
	if l > MaxFrame {
		return dst[:start], fmt.Errorf("%w: %T encodes to %d bytes, limit %d", ErrTooLarge, m, l, MaxFrame)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(l))
	return dst, nil
}

type decoder struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

var decoders = sync.Pool{New: func() any {
	d := &decoder{}
	d.dec = msgpack.NewDecoder(&d.r)
	d.dec.DisallowUnknownFields(true)
	return d
}}

// Unmarshal decodes a frame body into v (a pointer to a proto type). The body
// must be exactly one msgpack map whose shape matches v: unknown fields,
// wrong types and trailing bytes are reported as ErrBody.
func Unmarshal(body []byte, v any) error {
	if len(body) == 0 || !isMap(body[0]) {
		return fmt.Errorf("%w: body is not a msgpack map", ErrBody)
	}
	if err := checkShape(body); err != nil {
		return fmt.Errorf("%w: %v", ErrBody, err)
	}
	if err := checkKeys(body); err != nil {
		return fmt.Errorf("%w: %v", ErrBody, err)
	}
	d := decoders.Get().(*decoder)
	d.r.Reset(body)
	d.dec.Reset(&d.r)
	d.dec.DisallowUnknownFields(true)
	err := d.dec.Decode(v)
	rest := d.r.Len()
	d.r.Reset(nil)
	decoders.Put(d)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBody, err)
	}
	if rest != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBody, rest)
	}
	return nil
}

// isMap reports whether b starts a msgpack map: fixmap, map16 or map32.
// Bodies are always maps; msgpack would also fill a struct from an array,
// which would make two encodings of one message valid.
func isMap(b byte) bool { return b&0xf0 == 0x80 || b == 0xde || b == 0xdf }
