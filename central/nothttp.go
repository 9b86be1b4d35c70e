package central

import (
	"io"
	"net"

	"nearchat/pkg/proto"
)

// framedOff wraps the REST listener (beneath TLS, if any) so that a peer
// opening in plaintext with a frame of nearchat's protocol (a client or
// chat server given the REST port where the control port belongs) is
// answered at once with a fatal Error naming the control port. Without
// it the HTTP server waits restHeaderTimeout for a request line that
// never comes, and over TLS the handshake fails without a word: the peer
// learns nothing. No HTTP request or TLS record starts with a NUL byte,
// and every frame under 16 MiB does (its big-endian length prefix).
type framedOff struct {
	net.Listener
	control func() string // the control port's address
}

func (l framedOff) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return &framedOffConn{Conn: c, control: l.control}, nil
}

type framedOffConn struct {
	net.Conn
	control func() string
	read    bool // the first bytes were looked at
}

// NetConn returns the connection c wraps (connlimit.NewcomerOf).
func (c *framedOffConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection as the one it wraps does: net/http
// sends a refusal (413, 431) that way and waits before closing, so that a
// client still sending its body reads the answer rather than a reset.
func (c *framedOffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Read is never called concurrently (net/http's background read takes
// turns with the request's reads, and starts only after the first
// request), so read needs no lock.
func (c *framedOffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.read || n == 0 {
		return n, err
	}
	c.read = true
	if p[0] != 0 {
		return n, err
	}
	if proto.StartsError(p[:n]) {
		return 0, io.EOF // the peer gave up: nothing to tell it
	}
	proto.Refuse(c.Conn, proto.CodeWrongPort, "this is Central's REST port, which speaks HTTP; nearchat's framed protocol goes to its control port, "+c.control())
	return 0, io.EOF
}
