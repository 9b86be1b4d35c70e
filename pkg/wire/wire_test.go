package wire_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

var update = flag.Bool("update", false, "rewrite the golden frames in testdata")

// messages is one example of every message type; the golden files pin their
// encodings so that a change to the wire format cannot go unnoticed.
var messages = []struct {
	name string
	msg  wire.Message
}{
	{"hello", &proto.Hello{V: wire.Version, Agent: "chat/1", Token: "tok"}},
	{"welcome", &proto.Welcome{V: wire.Version, Server: "serv1", Max: wire.MaxFrame}},
	{"error", &proto.Error{Code: proto.CodeBadJoin, Reason: "empty room id", Fatal: true}},
	{"ping", &proto.Ping{ID: 7, At: 123456789}},
	{"pong", &proto.Pong{ID: 7, At: 123456789}},
	{"join", &proto.Join{Room: "r-1", User: "alice", Ticket: []byte{1, 2, 3}, Epoch: 2, LastSent: 41, Since: 9, Inc: 1700000000000000001, Move: true}},
	{"joined", &proto.Joined{Room: "r-1", Epoch: 2, Seq: 10, Members: []proto.Member{{User: "alice", LastSent: 41, Inc: 1700000000000000001}, {User: "bob"}}}},
	{"leave", &proto.Leave{}},
	{"chat", &proto.Chat{Num: 42, At: 1700000000000000000, Text: "hello, world"}},
	{"chat-to", &proto.Chat{Num: 40, At: 1700000000000000000, Text: "again", To: "bob"}},
	{"ack", &proto.Ack{Num: 42, Seq: 11}},
	{"deliver", &proto.Deliver{Seq: 11, From: "alice", Num: 42, At: 1700000000000000000, Text: "hello, world", Inc: 1700000000000000001}},
	{"presence", &proto.Presence{User: "bob", Here: true, LastSent: 3, Inc: 1700000000000000002}},
	{"resend", &proto.Resend{Of: "alice", After: 40, By: "bob", Inc: 1700000000000000001}},
	{"missed", &proto.Missed{To: "bob", From: "alice", First: 1, Last: 5, Inc: 1700000000000000001}},
	{"request", &proto.Request{To: []string{"bob"}}},
	{"status", &proto.Status{Req: "q-1", Code: proto.AwaitingReq, Detail: "waiting for bob"}},
	{"incoming", &proto.Incoming{Req: "q-1", From: "alice", Members: []string{"alice", "bob"}}},
	{"answer", &proto.Answer{Req: "q-1", Accept: true}},
	{"assign", &proto.Assign{Room: "r-1", Epoch: 3, Server: proto.ServerRef{ID: "serv1", Addr: "127.0.0.1:3002"}, Members: []string{"alice", "bob"}, Reason: "better server", Prev: "serv3", PrevRTT: 60e6, RTT: 40e6}},
	{"assign-ack", &proto.AssignAck{Room: "r-1", Epoch: 3}},
	{"unreachable", &proto.Unreachable{Room: "r-1", Server: "serv3", Epoch: 2}},
	{"leave-room", &proto.LeaveRoom{Room: "r-1"}},
	{"room-closed", &proto.RoomClosed{Room: "r-1", Reason: "all members left"}},
}

func TestRoundTripAndGolden(t *testing.T) {
	for _, tc := range messages {
		t.Run(tc.name, func(t *testing.T) {
			b, err := wire.AppendFrame([]byte("prefix"), tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("AppendFrame clobbered dst")
			}
			b = b[len("prefix"):]
			golden := filepath.Join("testdata", tc.name+".hex")
			if *update {
				if err := os.WriteFile(golden, []byte(hex.EncodeToString(b)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/wire -update once to create it)", err)
			}
			if got := hex.EncodeToString(b); got != strings.TrimSpace(string(want)) {
				t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
			}
			typ, body, n, err := wire.ParseFrame(b, 0)
			if err != nil || n != len(b) || typ != tc.msg.FrameType() {
				t.Fatalf("ParseFrame = type %#x, n %d, err %v", typ, n, err)
			}
			got, err := proto.Decode(typ, body)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.msg) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.msg)
			}
		})
	}
}

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
