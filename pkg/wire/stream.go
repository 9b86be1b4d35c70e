package wire

import (
	"bufio"
	"errors"
	"io"
)

// Reader reads frames from a byte stream, such as a net.Conn. It is the one
// blocking frame reader of nearchat: every program that reads frames off a
// socket with a goroutine uses it.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	r   *bufio.Reader
	max int
	buf []byte // a frame larger than r's buffer, reused
}

// readerSize is the read buffer: frames up to it are returned without a
// copy, larger ones are copied into a buffer kept for the next one.
const readerSize = 4 << 10

// NewReader returns a Reader of frames from r that refuses a frame whose
// length prefix exceeds max (0 means MaxFrame) right after reading the four
// length bytes, before any of its body.
func NewReader(r io.Reader, max int) *Reader { return NewReaderSize(r, max, readerSize) }

// NewReaderSize is NewReader with a read buffer of size bytes (at least
// 16): a stream of few, small frames (a probe's Pongs) needs no 4 KB
// buffer, and one that is dialled often should not allocate one each time.
// A frame larger than the buffer is still read whole, copied once into a
// buffer kept for the next large one.
func NewReaderSize(r io.Reader, max, size int) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, size), max: max}
}

// Next reads the next frame and returns its type and body. The body is
// valid until the next call. A stream that ends between frames returns
// io.EOF; one that ends inside a frame returns io.ErrUnexpectedEOF. Any
// other error from FrameLen is a protocol violation.
func (r *Reader) Next() (Type, []byte, error) {
	hdr, err := r.r.Peek(LenSize)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	n, err := FrameLen(hdr, r.max)
	if err != nil {
		return 0, nil, err
	}
	var b []byte
	if n <= r.r.Size() {
		if b, err = r.r.Peek(n); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		_, _ = r.r.Discard(n)
	} else {
		if cap(r.buf) < n {
			r.buf = make([]byte, n)
		}
		b = r.buf[:n]
		if _, err := io.ReadFull(r.r, b); err != nil {
			return 0, nil, err
		}
	}
	return Type(b[LenSize]), b[HeaderSize:n:n], nil
}

// Read reads the stream's bytes past the frames Next returned: it lets a
// caller that reads whole frames for a while hand the stream over to code
// of its own without losing what the Reader had buffered.
func (r *Reader) Read(p []byte) (int, error) { return r.r.Read(p) }

// Inbound is the part of an event-loop connection's input buffer that Next
// needs. gnet.Conn satisfies it; wire does not import gnet.
type Inbound interface {
	// InboundBuffered is the number of bytes buffered.
	InboundBuffered() int
	// Peek returns the next n buffered bytes without consuming them.
	Peek(n int) ([]byte, error)
}

// Next returns the first whole frame buffered in in, without consuming it:
// the caller discards n bytes once done with body, which aliases in's
// buffer. It returns ErrIncomplete while the frame is not all there (with n
// its whole size once the length bytes are in, for a caller that must make
// room for it), and
// refuses an oversized frame (ErrTooLarge, max 0 meaning MaxFrame) as soon
// as its four length bytes are buffered. Any error but ErrIncomplete is a
// protocol violation: answer it (proto.CodeOf) and close the connection.
// Next is the one incremental frame reader of nearchat's event-loop
// servers.
func Next(in Inbound, max int) (t Type, body []byte, n int, err error) {
	buffered := in.InboundBuffered()
	if buffered < LenSize {
		return 0, nil, 0, ErrIncomplete
	}
	hdr, err := in.Peek(LenSize)
	if err != nil {
		return 0, nil, 0, ErrIncomplete
	}
	if n, err = FrameLen(hdr, max); err != nil {
		return 0, nil, 0, err
	}
	if buffered < n {
		return 0, nil, n, ErrIncomplete
	}
	b, err := in.Peek(n)
	if err != nil || len(b) < n {
		return 0, nil, n, ErrIncomplete
	}
	return Type(b[LenSize]), b[HeaderSize:n:n], n, nil
}
