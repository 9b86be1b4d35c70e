package proto_test

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
	{"beat", &proto.Beat{Every: 100}},
	{"join", &proto.Join{Room: "r-1", User: "alice", Ticket: []byte{1, 2, 3}, Epoch: 2, LastSent: 41, Since: 9, Inc: 1700000000000000001, Move: true}},
	{"joined", &proto.Joined{Room: "r-1", Epoch: 2, Seq: 10, Members: []proto.Member{{User: "alice", LastSent: 41, Inc: 1700000000000000001}, {User: "bob"}}}},
	{"leave", &proto.Leave{}},
	{"chat", &proto.Chat{Num: 42, At: 1700000000000000000, Text: "hello, world"}},
	{"chat-to", &proto.Chat{Num: 40, At: 1700000000000000000, Text: "again", To: "bob"}},
	{"ack", &proto.Ack{Num: 42, Seq: 11}},
	{"ack-resend", &proto.Ack{Num: 40}},
	{"deliver", &proto.Deliver{Seq: 11, From: "alice", Num: 42, At: 1700000000000000000, Text: "hello, world", Inc: 1700000000000000001}},
	{"presence", &proto.Presence{User: "bob", Here: true, LastSent: 3, Inc: 1700000000000000002}},
	{"presences", &proto.Presences{Changes: []proto.Presence{{User: "bob", Here: true, LastSent: 3, Inc: 1700000000000000002}, {User: "carol"}}}},
	{"resend", &proto.Resend{Of: "alice", After: 40, By: "bob", Inc: 1700000000000000001}},
	{"missed", &proto.Missed{To: "bob", From: "alice", First: 1, Last: 5, Inc: 1700000000000000001}},
	{"request", &proto.Request{To: []string{"bob"}}},
	{"request-key", &proto.Request{To: []string{"bob", "carol"}, Key: "k-7f3a"}},
	{"status", &proto.Status{Req: "q-1", Code: proto.AwaitingReq, Detail: "waiting for bob"}},
	{"incoming", &proto.Incoming{Req: "q-1", From: "alice", Members: []string{"alice", "bob"}}},
	{"answer", &proto.Answer{Req: "q-1", Accept: true}},
	{"assign", &proto.Assign{Room: "r-1", Epoch: 3, Server: proto.ServerRef{ID: "serv1", Addr: "127.0.0.1:3002"}, Members: []string{"alice", "bob"}, Reason: "better server", Prev: "serv3", PrevRTT: 60e6, RTT: 40e6}},
	{"assign-ack", &proto.AssignAck{Room: "r-1", Epoch: 3}},
	{"unreachable", &proto.Unreachable{Room: "r-1", Server: "serv3", Epoch: 2}},
	{"unreachable-silent", &proto.Unreachable{Room: "r-1", Server: "serv3", Epoch: 2, Silent: true}},
	{"leave-room", &proto.LeaveRoom{Room: "r-1"}},
	{"room-closed", &proto.RoomClosed{Room: "r-1", Reason: "all members left"}},
	{"holding", &proto.Holding{Rooms: []proto.Held{{Room: "r-1", Epoch: 3, Server: "serv1"}}}},
	{"latency", &proto.Latency{Servers: []proto.ServerRTT{{Server: "serv1", MedianUS: 20500, SpreadUS: 300, Count: 5}, {Server: "serv2", MedianUS: 41000, SpreadUS: 1200, Count: 4}}}},
	{"holding-ticket", &proto.Holding{Rooms: []proto.Held{{Room: "r-1", Epoch: 3, Server: "serv1", Ticket: []byte{0x81, 0xa4, 'r', 'o', 'o', 'm'}}}}},
	{"holding-left", &proto.Holding{Rooms: []proto.Held{{Room: "r-1", Epoch: 3, Server: "serv1"}}, Left: []string{"r-2"}}},
	{"server-event", &proto.ServerEvent{Server: proto.ServerRef{ID: "serv2", Addr: "127.0.0.1:3003"}, State: proto.ServerDraining}},
	{"server-list", &proto.ServerList{Servers: []proto.ListedServer{{ID: "serv1", Addr: "127.0.0.1:3002"}, {ID: "serv2", Addr: "127.0.0.1:3003", Draining: true}}, Last: true}},
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
				t.Fatalf("%v (run go test ./pkg/proto -update once to create it)", err)
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

// Codes past their width are refused, not wrapped: msgpack's decoder made
// an Error of code 65,537 into code 1 (abuse probe, 2026-12-02).
func TestCodesOutOfRangeRefused(t *testing.T) {
	for _, tc := range []struct {
		body []byte
		v    any
	}{
		{[]byte{0x81, 0xa4, 'c', 'o', 'd', 'e', 0xce, 0x00, 0x01, 0x00, 0x01}, &proto.Error{}},
		{[]byte{0x81, 0xa4, 'c', 'o', 'd', 'e', 0xcd, 0x01, 0x00}, &proto.Status{}},
	} {
		if err := wire.Unmarshal(tc.body, tc.v); err == nil {
			t.Errorf("%T from % x: %+v, want an error", tc.v, tc.body, tc.v)
		}
	}
	var e proto.Error
	if err := wire.Unmarshal([]byte{0x81, 0xa4, 'c', 'o', 'd', 'e', 0xcd, 0xff, 0xff}, &e); err != nil || e.Code != 0xffff {
		t.Errorf("code 65535: %+v %v", e, err)
	}
}

// An unsigned integer past 2^63-1 in a signed field is refused, not
// wrapped to a negative number: wire.Unmarshal took it, and a Chat's time
// went on to every member as a negative integer their decoders refuse.
// The unsigned fields keep their whole range (ping IDs use it).
func TestSignedFieldsPastInt64Refused(t *testing.T) {
	big := []byte{0xcf, 0x80, 0, 0, 0, 0, 0, 0, 1}
	field := func(key string) []byte {
		b := append([]byte{0x81, 0xa0 | byte(len(key))}, key...)
		return append(b, big...)
	}
	sample := append([]byte{0x81, 0xa7, 's', 'e', 'r', 'v', 'e', 'r', 's', 0x91, 0x81, 0xa9}, "median_us"...)
	for _, tc := range []struct {
		t    wire.Type
		body []byte
	}{
		{proto.THello, field("v")},
		{proto.TWelcome, field("max")},
		{proto.TPing, field("at")},
		{proto.TPong, field("at")},
		{proto.TChat, field("at")},
		{proto.TDeliver, field("at")},
		{proto.TAssign, field("rtt")},
		{proto.TLatency, append(sample, big...)},
	} {
		if m, err := proto.Decode(tc.t, tc.body); err == nil || !errors.Is(err, wire.ErrBody) {
			t.Errorf("frame 0x%02x % x: %+v, %v; want a malformed body", byte(tc.t), tc.body, m, err)
		}
	}
	for _, tc := range []struct {
		body []byte
		ok   bool
	}{
		{[]byte{0x82, 0xa3, 'n', 'u', 'm', 0x01, 0xa2, 'a', 't', 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 1}, false},
		{[]byte{0x82, 0xa3, 'n', 'u', 'm', 0x01, 0xa2, 'a', 't', 0xcf, 0x7f, 0, 0, 0, 0, 0, 0, 1}, true},
	} {
		if _, _, _, _, ok := proto.ScanChat(tc.body); ok != tc.ok {
			t.Errorf("ScanChat(% x) ok %v, want %v", tc.body, ok, tc.ok)
		}
		if _, _, _, ok := proto.DeliverInfo(tc.body); ok != tc.ok {
			t.Errorf("DeliverInfo(% x) ok %v, want %v", tc.body, ok, tc.ok)
		}
	}
	m, err := proto.Decode(proto.TPing, field("id"))
	if p, _ := m.(*proto.Ping); err != nil || p.ID != 1<<63+1 {
		t.Errorf("ping id past 2^63-1: %+v %v, want it kept", m, err)
	}
}
