package wire_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// inbound is an in-memory wire.Inbound: the bytes an event loop has
// buffered for a connection.
type inbound struct{ b []byte }

func (in *inbound) InboundBuffered() int { return len(in.b) }

func (in *inbound) Peek(n int) ([]byte, error) {
	if n > len(in.b) {
		return nil, io.ErrShortBuffer
	}
	return in.b[:n], nil
}

func (in *inbound) discard(n int) { in.b = in.b[n:] }

func frames(t testing.TB, ms ...wire.Message) []byte {
	var b []byte
	for _, m := range ms {
		var err error
		if b, err = wire.AppendFrame(b, m); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestReaderReadsFramesOfEverySize(t *testing.T) {
	big := &proto.Chat{Num: 2, Text: strings.Repeat("x", 40<<10)} // past the read buffer: the copy path
	stream := frames(t, &proto.Ping{ID: 1}, big, &proto.Ping{ID: 3}, big)
	for name, r := range map[string]io.Reader{
		"whole":       bytes.NewReader(stream),
		"byte a read": iotest.OneByteReader(bytes.NewReader(stream)),
		"half a read": iotest.HalfReader(bytes.NewReader(stream)),
	} {
		t.Run(name, func(t *testing.T) {
			rd := wire.NewReader(r, 0)
			for i, want := range []wire.Type{proto.TPing, proto.TChat, proto.TPing, proto.TChat} {
				typ, body, err := rd.Next()
				if err != nil || typ != want {
					t.Fatalf("frame %d: type %#x, %v; want %#x", i, typ, err, want)
				}
				m, err := proto.Decode(typ, body)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if c, ok := m.(*proto.Chat); ok && c.Text != big.Text {
					t.Fatalf("frame %d: text of %d bytes, want %d", i, len(c.Text), len(big.Text))
				}
			}
			if _, _, err := rd.Next(); err != io.EOF {
				t.Fatalf("after the last frame: %v, want io.EOF", err)
			}
		})
	}
}

func TestReaderRefusesOversizeAfterItsLengthBytes(t *testing.T) {
	// Only the length prefix is there; reading one byte more fails the test.
	tooBig := []byte{0, 0, 1, 0}
	r := io.MultiReader(bytes.NewReader(tooBig), iotest.ErrReader(errors.New("read past the length prefix")))
	_, _, err := wire.NewReader(r, 100).Next()
	if !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("Next = %v, want ErrTooLarge", err)
	}
	if proto.CodeOf(err) != proto.CodeTooLarge {
		t.Fatalf("CodeOf(%v) = %v", err, proto.CodeOf(err))
	}
}

func TestReaderCutStreams(t *testing.T) {
	ping := frames(t, &proto.Ping{ID: 1})
	for _, cut := range []int{1, wire.LenSize, wire.HeaderSize, len(ping) - 1} {
		_, _, err := wire.NewReader(bytes.NewReader(ping[:cut]), 0).Next()
		if err != io.ErrUnexpectedEOF {
			t.Errorf("stream cut at %d of %d: %v, want io.ErrUnexpectedEOF", cut, len(ping), err)
		}
	}
	if _, _, err := wire.NewReader(bytes.NewReader([]byte{0, 0, 0, 0}), 0).Next(); !errors.Is(err, wire.ErrEmpty) {
		t.Errorf("zero length: %v, want ErrEmpty", err)
	}
}

func TestNextWaitsForWholeFrames(t *testing.T) {
	ping, chat := frames(t, &proto.Ping{ID: 1}), frames(t, &proto.Chat{Num: 2, Text: "hi"})
	stream := append(ping, chat...)
	sizes := []int{len(ping), len(chat)}
	in := &inbound{}
	var got []wire.Type
	for i := range stream {
		in.b = append(in.b, stream[i]) // one byte arrives at a time
		for {
			typ, body, n, err := wire.Next(in, 0)
			if errors.Is(err, wire.ErrIncomplete) {
				want := 0 // the size of the frame at the head, once its length is in
				if len(in.b) >= wire.LenSize {
					want = sizes[len(got)]
				}
				if n != want {
					t.Fatalf("byte %d: incomplete with n %d, want %d", i, n, want)
				}
				break
			}
			if err != nil || n != wire.HeaderSize+len(body) {
				t.Fatalf("byte %d: n %d body %d, %v", i, n, len(body), err)
			}
			got = append(got, typ)
			in.discard(n)
		}
	}
	if len(got) != 2 || got[0] != proto.TPing || got[1] != proto.TChat || len(in.b) != 0 {
		t.Fatalf("got %v with %d bytes left", got, len(in.b))
	}
	_, _, _, err := wire.Next(&inbound{b: []byte{0xff, 0xff, 0xff, 0xff}}, 0)
	if !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("huge length with no body: %v, want ErrTooLarge", err)
	}
}
