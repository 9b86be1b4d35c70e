package wire_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// FuzzParseFrame feeds arbitrary bytes to the frame readers, whole and
// split in two at every point a reader might see them: ParseFrame on the
// whole input; wire.Next, the event-loop servers' reader, on an in-memory
// inbound buffer that receives the input in two parts; and wire.Reader, the
// blocking reader, on a stream whose reads are cut at the same point. All
// must agree, never panic and never read past a frame, and decoded messages
// must survive a re-encode.
func FuzzParseFrame(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		whole := parseAll(t, data)
		split := int(cut) % (len(data) + 1)
		if got := nextStream(t, data[:split], data[split:]); !equalResults(whole, got) {
			t.Fatalf("Next, split at %d: %v, whole: %v", split, got, whole)
		}
		if got := readStream(t, data, split); !equalResults(whole, got) {
			t.Fatalf("Reader, split at %d: %v, whole: %v", split, got, whole)
		}
	})
}

// seeds are one frame of each body shape the codec meets.
var seeds = []wire.Message{
	&proto.Hello{V: wire.Version, Agent: "chat/1", Token: "tok"},
	&proto.Ping{ID: 7, At: 123456789},
	&proto.Joined{Room: "r-1", Epoch: 2, Seq: 10, Members: []proto.Member{{User: "alice", LastSent: 41}, {User: "bob"}}},
	&proto.Chat{Num: 42, At: 1700000000000000000, Text: "hello, world"},
	&proto.Assign{Room: "r-1", Epoch: 3, Server: proto.ServerRef{ID: "serv1", Addr: "127.0.0.1:3002"}, Members: []string{"alice", "bob"}},
}

func addSeeds(f *testing.F) {
	for _, m := range seeds {
		b, err := wire.AppendFrame(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(len(b)/2))
		f.Add(append(b, b...), uint16(len(b)))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x01}, uint16(2))
	f.Add([]byte{0, 0, 0, 0}, uint16(0))
}

// nextStream reads frames with wire.Next from an in-memory inbound buffer
// that receives first, then second.
func nextStream(t *testing.T, first, second []byte) result {
	var r result
	in := &inbound{}
	for _, chunk := range [][]byte{first, second} {
		in.b = append(in.b, chunk...)
		for {
			typ, body, n, err := wire.Next(in, 0)
			if errors.Is(err, wire.ErrIncomplete) {
				break
			}
			if err != nil {
				r.err = err
				return r
			}
			checkDecode(t, typ, body)
			r.types = append(r.types, typ)
			in.discard(n)
		}
	}
	return r
}

// readStream reads frames with a wire.Reader from a stream whose first
// read returns data up to split.
func readStream(t *testing.T, data []byte, split int) result {
	var r result
	rd := wire.NewReader(io.MultiReader(bytes.NewReader(data[:split]), bytes.NewReader(data[split:])), 0)
	for {
		typ, body, err := rd.Next()
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return r // the end of the input, like ErrIncomplete
		}
		if err != nil {
			r.err = err
			return r
		}
		checkDecode(t, typ, body)
		r.types = append(r.types, typ)
	}
}

type result struct {
	types []wire.Type
	err   error
}

func equalResults(a, b result) bool {
	if len(a.types) != len(b.types) || (a.err == nil) != (b.err == nil) {
		return false
	}
	for i := range a.types {
		if a.types[i] != b.types[i] {
			return false
		}
	}
	return true
}

// parseAll parses data as one buffer until it runs out or breaks.
func parseAll(t *testing.T, data []byte) result {
	var r result
	for len(data) > 0 {
		typ, body, n, err := wire.ParseFrame(data, 0)
		if errors.Is(err, wire.ErrIncomplete) {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		if n <= 0 || n > len(data) || len(body) != n-wire.HeaderSize {
			t.Fatalf("ParseFrame consumed %d of %d with body %d", n, len(data), len(body))
		}
		checkDecode(t, typ, body)
		r.types = append(r.types, typ)
		data = data[n:]
	}
	return r
}

// checkDecode decodes a body; whatever decodes must re-encode and decode to
// the same bytes.
func checkDecode(t *testing.T, typ wire.Type, body []byte) {
	m, err := proto.Decode(typ, body)
	if err != nil {
		return
	}
	b1, err := wire.AppendFrame(nil, m)
	if err != nil {
		return // a decoded body can exceed the limit once re-encoded with defaults
	}
	_, body2, _, err := wire.ParseFrame(b1, 0)
	if err != nil {
		t.Fatalf("re-encoded %T does not parse: %v", m, err)
	}
	m2, err := proto.Decode(typ, body2)
	if err != nil {
		t.Fatalf("re-encoded %T does not decode: %v", m, err)
	}
	b2, _ := wire.AppendFrame(nil, m2)
	if !bytes.Equal(b1, b2) {
		t.Fatalf("%T not stable across re-encoding: %x vs %x", m, b1, b2)
	}
}
