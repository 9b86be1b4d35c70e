package proto

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"nearchat/pkg/wire"
)

// Dialer opens connections. *net.Dialer satisfies it; the TLS dialer of
// package tlsconfig and the latency-adding one of package delaynet do too.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Conn is the dialing side of a connection after the handshake: whole
// messages in, whole messages out. Send is safe for concurrent use; Recv
// is for one goroutine.
type Conn struct {
	nc  net.Conn
	r   *wire.Reader
	mu  sync.Mutex
	out []byte
}

// NewConn wraps nc, which has not carried a frame yet, in a Conn that
// refuses inbound frames over max bytes (0: wire.MaxFrame). Dial uses it;
// so can a test that plays a peer which breaks the handshake.
func NewConn(nc net.Conn, max int) *Conn {
	return &Conn{nc: nc, r: wire.NewReader(nc, max)}
}

// dialReadBuffer is the read buffer of a connection Dial opens. Those are
// probes (a Welcome and a few Pongs, dialled again and again when the
// client cannot keep them open) and Central's control connection (rare
// frames, mostly small); a 4 KB buffer per dial was a quarter of what a
// process of 6,000 chatload members allocated, and its collector's pauses
// were the tail of their latency. A larger frame is read whole all the same
// (wire.NewReaderSize). A room's connection, which carries bursts, is
// wrapped with NewConn and reads through 4 KB.
const dialReadBuffer = 512

// Dial connects to addr through d (nil: a plain net.Dialer), sends hello
// (its V set to wire.Version) and waits for the Welcome. An Error
// frame in its place is returned as the error (a *Error, fatal or not), and
// so is a Welcome in another version. ctx bounds the dial and the handshake
// and, until Dial returns, cancelling it unblocks them; afterwards the
// connection has no deadline.
func Dial(ctx context.Context, d Dialer, addr string, hello *Hello) (*Conn, *Welcome, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	c := &Conn{nc: nc, r: wire.NewReaderSize(nc, 0, dialReadBuffer)}
	w, err := c.handshake(hello)
	if !stop() || err != nil {
		nc.Close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return nil, nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return c, w, nil
}

// ErrNotNearchat is returned (wrapped) by Dial and CheckWelcome when the
// listener answered the Hello, but not with a nearchat frame (an HTTP
// server's "HTTP/1.1 400", say, read as a frame far over the limit) or
// not with a Welcome or Error: the address is some other service, and
// dialing it again will not help.
var ErrNotNearchat = errors.New("proto: the listener does not speak nearchat's protocol")

func (c *Conn) handshake(hello *Hello) (*Welcome, error) {
	h := *hello
	h.V = wire.Version
	if err := c.Send(&h); err != nil {
		return nil, err
	}
	m, err := c.Recv()
	if err != nil {
		if errors.Is(err, wire.ErrTooLarge) || errors.Is(err, wire.ErrEmpty) || errors.Is(err, wire.ErrBody) || errors.Is(err, ErrUnknownType) {
			return nil, fmt.Errorf("%w: its answer to Hello: %v", ErrNotNearchat, err)
		}
		return nil, fmt.Errorf("waiting for welcome: %w", err)
	}
	return CheckWelcome(m)
}

// CheckWelcome applies the dialer's rule to the listener's first frame: a
// Welcome in the version the dialer speaks (wire.Version) is returned; an
// Error frame is returned as the error; anything else is an error too. Dial
// uses it; so does a dialer that pipelines its first frames.
func CheckWelcome(m wire.Message) (*Welcome, error) {
	switch m := m.(type) {
	case *Welcome:
		if m.V != wire.Version {
			return nil, fmt.Errorf("welcome speaks protocol version %d, we speak %d", m.V, wire.Version)
		}
		return m, nil
	case *Error:
		return nil, m
	default:
		return nil, fmt.Errorf("%w: expected welcome, got frame 0x%02x", ErrNotNearchat, byte(m.FrameType()))
	}
}

// Send writes m as one frame. Safe for concurrent use.
func (c *Conn) Send(m wire.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	if c.out, err = wire.AppendFrame(c.out[:0], m); err != nil {
		return err
	}
	_, err = c.nc.Write(c.out)
	return err
}

// Recv reads and decodes the next frame. An Error frame is returned as a
// message like any other.
func (c *Conn) Recv() (wire.Message, error) {
	t, body, err := c.r.Next()
	if err != nil {
		return nil, err
	}
	return Decode(t, body)
}

// Next reads the next frame without decoding it; body is valid until the
// next call.
func (c *Conn) Next() (wire.Type, []byte, error) { return c.r.Next() }

// NetConn returns the connection, for deadlines and Close.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Read reads the stream past the frames Recv and Next returned, for a
// caller that takes the reading over.
func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// CheckHello applies the listener's version rule to a Hello and returns
// the version the connection speaks from then on, which the listener names
// in its Welcome: the Hello's own, when it is one spoken here
// (wire.MinVersion to wire.Version). A peer that speaks another version
// gets a fatal Error{CodeVersion}. who names the listener in the reason
// ("this server", "this Central").
func CheckHello(h *Hello, who string) (int, error) {
	switch {
	case h.V == 0:
		return 0, Fatalf(CodeVersion, "the Hello names no protocol version (v); %s speaks %d to %d", who, wire.MinVersion, wire.Version)
	case h.V < 0:
		// A number past 2^63-1, wrapped by the decoder: not "-1"
		// (black-box sweep, 2026-12-04).
		return 0, Fatalf(CodeVersion, "protocol version past 2^63-1 is not spoken here; %s speaks %d to %d", who, wire.MinVersion, wire.Version)
	case h.V < wire.MinVersion || h.V > wire.Version:
		return 0, Fatalf(CodeVersion, "protocol version %d is not spoken here; %s speaks %d to %d", h.V, who, wire.MinVersion, wire.Version)
	case len(h.Agent) > MaxAgent:
		return 0, Fatalf(CodeBadRequest, "agent of %d bytes: a program's name and version take at most %d", len(h.Agent), MaxAgent)
	case !printable(h.Agent):
		return 0, Fatalf(CodeBadRequest, "agent %.64q is not printable UTF-8", h.Agent)
	}
	return h.V, nil
}

// MaxAgent bounds a Hello's Agent ("chat/1", "chatload/1").
const MaxAgent = 64

// printable reports whether s is UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// Fatal is a protocol violation that ends the connection: the listener
// sends Error{Code, Reason, fatal} and closes. Both servers use it.
type Fatal struct {
	Code   Code
	Reason string
}

func (e *Fatal) Error() string { return e.Code.String() + ": " + e.Reason }

// Fatalf returns a *Fatal with a formatted reason.
func Fatalf(code Code, format string, a ...any) error {
	return &Fatal{Code: code, Reason: fmt.Sprintf(format, a...)}
}

// CodeOf maps an error met while reading or handling a frame to the code
// of the Error frame that answers it: a *Fatal's or *Error's own code, the
// wire and proto errors to theirs, and anything else to CodeInternal (the
// receiver's own fault).
func CodeOf(err error) Code {
	var f *Fatal
	var e *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &f):
		return f.Code
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, wire.ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, wire.ErrBody):
		return CodeBadBody
	case errors.Is(err, ErrUnknownType):
		return CodeUnknownType
	case errors.Is(err, wire.ErrEmpty), errors.Is(err, wire.ErrIncomplete):
		return CodeBadFrame
	}
	return CodeInternal
}

// ReasonOf is the reason to send with CodeOf(err): a *Fatal's own reason,
// the error's text otherwise.
func ReasonOf(err error) string {
	var f *Fatal
	if errors.As(err, &f) {
		return f.Reason
	}
	return err.Error()
}
