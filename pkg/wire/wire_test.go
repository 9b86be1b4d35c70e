package wire_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

func TestParseFrameErrors(t *testing.T) {
	ping, _ := wire.AppendFrame(nil, &proto.Ping{ID: 1})
	tests := []struct {
		name string
		buf  []byte
		max  int
		want error
	}{
		{"empty input", nil, 0, wire.ErrIncomplete},
		{"partial length", []byte{0, 0}, 0, wire.ErrIncomplete},
		{"partial body", ping[:len(ping)-1], 0, wire.ErrIncomplete},
		{"zero length", []byte{0, 0, 0, 0, 1}, 0, wire.ErrEmpty},
		{"over protocol maximum", []byte{0, 1, 0, 1}, 0, wire.ErrTooLarge},
		{"over configured maximum", []byte{0, 0, 1, 0}, 100, wire.ErrTooLarge},
		{"huge length with no body yet", []byte{0xff, 0xff, 0xff, 0xff}, 0, wire.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, n, err := wire.ParseFrame(tc.buf, tc.max)
			if !errors.Is(err, tc.want) || n != 0 {
				t.Fatalf("ParseFrame = n %d, err %v; want %v", n, err, tc.want)
			}
		})
	}
	t.Run("two frames back to back", func(t *testing.T) {
		b := append(append([]byte(nil), ping...), ping...)
		_, _, n, err := wire.ParseFrame(b, 0)
		if err != nil || n != len(ping) {
			t.Fatalf("first frame: n %d err %v", n, err)
		}
		_, _, n2, err := wire.ParseFrame(b[n:], 0)
		if err != nil || n2 != len(ping) {
			t.Fatalf("second frame: n %d err %v", n2, err)
		}
	})
}

// TestTooLargeNamesForeignProtocols: the bytes of an HTTP request or of a
// TLS ClientHello read as a huge length; the error says what they look
// like, so the peer learns it dialled the wrong port or spoke TLS to a
// plaintext one. Other huge lengths are not given a guess.
func TestTooLargeNamesForeignProtocols(t *testing.T) {
	for _, tc := range []struct {
		buf  string
		want string
	}{
		{"GET / HTTP/1.1\r\n", "HTTP"},
		{"POST /v1/join HTTP/1.1\r\n", "HTTP"},
		{"PRI * HTTP/2.0\r\n", "HTTP"},
		{"HTTP/1.1 400 Bad Request\r\n", "HTTP"},
		{"\x16\x03\x01\x00\xa5\x01", "TLS handshake"},
		{"\xff\xff\xff\xff", ""},
		{"ABCD", ""},
	} {
		_, err := wire.FrameLen([]byte(tc.buf), 0)
		if !errors.Is(err, wire.ErrTooLarge) {
			t.Fatalf("%q: %v, want ErrTooLarge", tc.buf, err)
		}
		if tc.want == "" && strings.Contains(err.Error(), "looks like") {
			t.Errorf("%q: %v guesses a protocol", tc.buf, err)
		}
		if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v does not say %q", tc.buf, err, tc.want)
		}
	}
}

func TestUnmarshalRejectsWrongShapes(t *testing.T) {
	tests := []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"array instead of map", []byte{0x92, 0x01, 0x02}},
		{"integer", []byte{0x05}},
		{"unknown field", []byte{0x81, 0xa3, 'z', 'z', 'z', 0x01}},
		{"wrong field type", []byte{0x81, 0xa2, 'i', 'd', 0xa1, 'x'}},
		{"trailing bytes", []byte{0x80, 0x00}},
		{"truncated map", []byte{0x82, 0xa2, 'i', 'd'}},
		{"invalid byte", []byte{0xc1}},
		// Declared lengths past the body: msgpack would allocate them up
		// front, so a tiny frame could exhaust the receiver's memory.
		{"bin32 of 2 GiB", []byte{0x81, 0xa2, 'i', 'd', 0xc6, 0x7f, 0xff, 0xff, 0xf0, 1, 2, 3}},
		{"str32 past the end", []byte{0x81, 0xa2, 'i', 'd', 0xdb, 0x00, 0x01, 0x00, 0x00, 'x'}},
		{"array32 of 2 billion", []byte{0x81, 0xa2, 'i', 'd', 0xdd, 0x7f, 0xff, 0xff, 0xf0, 0x80}},
		{"map32 of 2 billion", []byte{0x81, 0xa2, 'i', 'd', 0xdf, 0x7f, 0xff, 0xff, 0xf0, 0x80}},
		{"map16 header cut", []byte{0x81, 0xa2, 'i', 'd', 0xde, 0x01}},
		{"ext32 past the end", []byte{0x81, 0xa2, 'i', 'd', 0xc9, 0x00, 0x10, 0x00, 0x00, 0x01}},
		{"fixmap with too few entries", []byte{0x83, 0xa2, 'i', 'd', 0x01}},
		// Negative integers: msgpack wraps -1 into an unsigned field as
		// 2^64-1, and no field of the protocol takes one.
		{"negative fixint", []byte{0x81, 0xa2, 'i', 'd', 0xff}},
		{"negative int8", []byte{0x81, 0xa2, 'i', 'd', 0xd0, 0x80}},
		{"negative int16", []byte{0x81, 0xa2, 'i', 'd', 0xd1, 0xff, 0xfe}},
		{"negative int32", []byte{0x81, 0xa2, 'i', 'd', 0xd2, 0x80, 0, 0, 0}},
		{"negative int64 into a signed field", []byte{0x81, 0xa2, 'a', 't', 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		// A key twice: msgpack takes the last, so two readers could
		// disagree on what the frame says (black-box sweep, 2026-12-04).
		{"duplicate key", []byte{0x82, 0xa2, 'i', 'd', 0x01, 0xa2, 'i', 'd', 0x02}},
		{"duplicate key, second as str8", []byte{0x82, 0xa2, 'i', 'd', 0x01, 0xd9, 0x02, 'i', 'd', 0x02}},
		{"duplicate key after another", []byte{0x83, 0xa2, 'i', 'd', 0x01, 0xa2, 'a', 't', 0x02, 0xda, 0x00, 0x02, 'a', 't', 0x03}},
		{"more keys than any message has", append([]byte{0xde, 0x00, 33}, bytes.Repeat([]byte{0xc0, 0xc0}, 33)...)},
		{"nested nine deep", append(append([]byte{0x81, 0xa2, 'i', 'd'}, bytes.Repeat([]byte{0x91}, 8)...), 0x01)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p proto.Ping
			if err := wire.Unmarshal(tc.body, &p); !errors.Is(err, wire.ErrBody) {
				t.Fatalf("Unmarshal(%x) = %v, want ErrBody", tc.body, err)
			}
		})
	}
}

// TestUnmarshalDuplicateKeyNamed: the refusal of a repeated key names it,
// and keys of different maps may repeat one another.
func TestUnmarshalDuplicateKeyNamed(t *testing.T) {
	err := wire.Unmarshal([]byte{0x82, 0xa2, 'i', 'd', 0x01, 0xa2, 'i', 'd', 0x02}, &proto.Ping{})
	if err == nil || !strings.Contains(err.Error(), `key "id" given twice`) {
		t.Fatalf("err = %v", err)
	}
	// A key named once as a string and once as binary is the same field
	// to the decoder (abuse probe, 2026-12-05: a Ping answered with the
	// second id).
	err = wire.Unmarshal([]byte{0x82, 0xa2, 'i', 'd', 0x01, 0xc4, 0x02, 'i', 'd', 0x02}, &proto.Ping{})
	if err == nil || !strings.Contains(err.Error(), `key "id" given twice`) {
		t.Errorf("id as a string, then as binary: %v", err)
	}
	// The bounds that keep the check cheap, refused before msgpack reads on.
	wide := append([]byte{0xde, 0x00, 33}, bytes.Repeat([]byte{0xa1, 'x', 0xc0}, 33)...)
	if err := wire.Unmarshal(wide, &proto.Ping{}); err == nil || !strings.Contains(err.Error(), "more than 32 keys") {
		t.Errorf("33 keys: %v", err)
	}
	deep := append(append([]byte{0x81, 0xa2, 'i', 'd'}, bytes.Repeat([]byte{0x91}, 8)...), 0x01)
	if err := wire.Unmarshal(deep, &proto.Ping{}); err == nil || !strings.Contains(err.Error(), "deeper than 8") {
		t.Errorf("nine deep: %v", err)
	}
	frame, err := wire.AppendFrame(nil, &proto.Joined{Room: "r-1", Members: []proto.Member{{User: "alice"}, {User: "bob"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, body, _, err := wire.ParseFrame(frame, 0)
	if err != nil {
		t.Fatal(err)
	}
	var j proto.Joined
	if err := wire.Unmarshal(body, &j); err != nil || len(j.Members) != 2 || j.Members[1].User != "bob" {
		t.Fatalf("Joined with two members: %+v, %v", j, err)
	}
}

func TestAppendFrameRefusesOversize(t *testing.T) {
	big := &proto.Chat{Text: strings.Repeat("x", wire.MaxFrame)}
	b, err := wire.AppendFrame([]byte{9}, big)
	if !errors.Is(err, wire.ErrTooLarge) || len(b) != 1 {
		t.Fatalf("AppendFrame = %d bytes, %v; want ErrTooLarge and dst unchanged", len(b), err)
	}
}

func TestHotPathAllocations(t *testing.T) {
	d := &proto.Deliver{Seq: 11, From: "alice", Num: 42, At: 1, Text: "hello, world"}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(1000, func() {
		buf, _ = wire.AppendFrame(buf[:0], d)
	}); n != 0 {
		t.Errorf("AppendFrame allocates %.1f times per call", n)
	}
	frame, _ := wire.AppendFrame(nil, &proto.Ping{ID: 3, At: 4})
	var p proto.Ping
	if n := testing.AllocsPerRun(1000, func() {
		_, body, _, _ := wire.ParseFrame(frame, 0)
		_ = wire.Unmarshal(body, &p)
	}); n != 0 {
		t.Errorf("ParseFrame+Unmarshal allocates %.1f times per call", n)
	}
}

func BenchmarkAppendDeliver(b *testing.B) {
	d := &proto.Deliver{Seq: 11, From: "alice", Num: 42, At: 1, Text: strings.Repeat("x", 64)}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = wire.AppendFrame(buf[:0], d)
	}
}

func BenchmarkParseChat(b *testing.B) {
	frame, _ := wire.AppendFrame(nil, &proto.Chat{Num: 42, At: 1, Text: strings.Repeat("x", 64)})
	var c proto.Chat
	b.ReportAllocs()
	for b.Loop() {
		_, body, _, _ := wire.ParseFrame(frame, 0)
		_ = wire.Unmarshal(body, &c)
	}
}

// TestHugeDeclaredLengthsAllocateNothing: the shape check runs before
// msgpack sees the body, so a declared 2 GiB costs nothing.
func TestHugeDeclaredLengthsAllocateNothing(t *testing.T) {
	body := []byte{0x81, 0xa7, 'm', 'e', 'm', 'b', 'e', 'r', 's', 0xdd, 0x7f, 0xff, 0xff, 0xf0, 0x80}
	var j proto.Joined
	if n := testing.AllocsPerRun(100, func() { _ = wire.Unmarshal(body, &j) }); n > 3 {
		t.Fatalf("rejecting a huge declared array allocates %.0f times", n)
	}
}
