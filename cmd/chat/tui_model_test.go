package main

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"nearchat/client"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
)

func keysOf(s string) []any {
	var out []any
	for _, r := range s {
		out = append(out, runeKey(r))
	}
	return out
}

func status(req string, code proto.StatusCode, detail, room string) client.Status {
	return client.Status{Status: proto.Status{Req: req, Code: code, Detail: detail, Room: room}}
}

// ready is a room whose other members were all on the server at the join.
func ready(room, server string, rtt time.Duration, members ...string) client.RoomReady {
	return client.RoomReady{Room: room, Assign: proto.Assign{Room: room, Epoch: 1, Server: proto.ServerRef{ID: server}, Members: members, RTT: rtt},
		Present: slices.DeleteFunc(slices.Clone(members), func(u string) bool { return u == "alice" })}
}

// seq flattens messages and message lists into one sequence.
func seq(parts ...any) []any {
	var out []any
	for _, p := range parts {
		if l, ok := p.([]any); ok {
			out = append(out, l...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

// terminal is the keys the terminal's input s decodes to.
func terminal(s string) []any {
	keys, _ := decodeKeys([]byte(s), true)
	var out []any
	for _, k := range keys {
		out = append(out, k)
	}
	return out
}

// inMenu is alice registered, latency reported, on the menu.
func inMenu() []any {
	return seq(keysOf("alice"), codeKey(keyEnter), registeredMsg{name: "alice"}, reportedMsg{}, client.Connected{})
}

// inChat is alice in room r1 with bob on serv3.
func inChat() []any {
	return seq(inMenu(), ready("r1", "serv3", 60*time.Millisecond, "alice", "bob"))
}

func lastLine(m *model) string {
	if m.chat == nil || len(m.chat.lines) == 0 {
		return ""
	}
	return m.chat.lines[len(m.chat.lines)-1].text
}

func TestModel(t *testing.T) {
	taken := &centralapi.Error{Status: 409, Code: centralapi.CodeNameTaken, Message: "in use"}
	tests := []struct {
		name  string
		init  string // -name
		msgs  []any
		cmds  []cmd // of the last message
		check func(t *testing.T, m *model)
	}{
		{
			name: "empty name refused",
			msgs: []any{codeKey(keyEnter)},
			check: func(t *testing.T, m *model) {
				if m.scr != scrName || !strings.Contains(m.nameErr, "type a user name") {
					t.Errorf("screen %d, error %q", m.scr, m.nameErr)
				}
			},
		},
		{
			name: "invalid name refused",
			msgs: seq(keysOf("a b"), codeKey(keyEnter)),
			check: func(t *testing.T, m *model) {
				if m.registering || !strings.Contains(m.nameErr, "a space (character 2) is not allowed") {
					t.Errorf("registering %v, error %q", m.registering, m.nameErr)
				}
			},
		},
		{
			name: "valid name registers",
			msgs: seq(keysOf(" alice"), codeKey(keyEnter)),
			cmds: []cmd{cmdRegister{name: "alice"}},
			check: func(t *testing.T, m *model) {
				if !m.registering {
					t.Error("not registering")
				}
			},
		},
		{
			name: "keys ignored while registering",
			msgs: seq(keysOf("alice"), codeKey(keyEnter), runeKey('x'), codeKey(keyEnter)),
			check: func(t *testing.T, m *model) {
				if m.name.String() != "alice" {
					t.Errorf("name %q", m.name.String())
				}
			},
		},
		{
			name: "taken name asks again",
			msgs: seq(keysOf("bob"), codeKey(keyEnter), registeredMsg{name: "bob", online: true, err: fmt.Errorf("client: %w", taken)}),
			check: func(t *testing.T, m *model) {
				if m.scr != scrName || m.registering || !strings.Contains(m.nameErr, `"bob" is taken: someone with that name is online`) {
					t.Errorf("screen %d registering %v error %q", m.scr, m.registering, m.nameErr)
				}
			},
		},
		{
			name: "name of an ended session says what Central said, not online",
			msgs: seq(keysOf("bob"), codeKey(keyEnter), registeredMsg{name: "bob", err: fmt.Errorf("client: %w",
				&centralapi.Error{Status: 409, Code: centralapi.CodeNameTaken, Message: `user name "bob" is reserved for 42 s`})}),
			check: func(t *testing.T, m *model) {
				if !strings.Contains(m.nameErr, "reserved for 42 s") || strings.Contains(m.nameErr, "online") {
					t.Errorf("error %q", m.nameErr)
				}
			},
		},
		{
			name: "over-long and non-ASCII names refused with the limit, never cut",
			msgs: seq(keysOf("a-very-long-name-that-exceeds-32-chars"), codeKey(keyEnter)),
			check: func(t *testing.T, m *model) {
				if m.registering || m.name.String() != "a-very-long-name-that-exceeds-32-chars" || !strings.Contains(m.nameErr, "has 38 characters; a user name has at most 32") {
					t.Errorf("registering %v name %q error %q", m.registering, m.name.String(), m.nameErr)
				}
				if got := nameProblem("zoë"); !strings.Contains(got, "'ë' (character 3) is not allowed") {
					t.Errorf("zoë: %q", got)
				}
			},
		},
		{
			name: "taken name, then another",
			msgs: seq(keysOf("bob"), codeKey(keyEnter), registeredMsg{name: "bob", err: taken},
				ctrlKey('u'), keysOf("alice"), codeKey(keyEnter)),
			cmds: []cmd{cmdRegister{name: "alice"}},
		},
		{
			name: "unreachable Central",
			msgs: seq(keysOf("bob"), codeKey(keyEnter), registeredMsg{name: "bob", err: errors.New("connection refused")}),
			check: func(t *testing.T, m *model) {
				if !strings.Contains(m.nameErr, "connection refused") {
					t.Errorf("error %q", m.nameErr)
				}
			},
		},
		{
			name: "name from the flag registers at once",
			init: "alice",
			msgs: []any{registeredMsg{name: "alice"}},
			check: func(t *testing.T, m *model) {
				if m.scr != scrMenu || m.user != "alice" {
					t.Errorf("screen %d user %q", m.scr, m.user)
				}
			},
		},
		{
			name: "menu: down twice reaches Quit, which asks first",
			msgs: seq(inMenu(), codeKey(keyDown), runeKey('j'), codeKey(keyEnter), runeKey('y')),
			cmds: []cmd{cmdQuit{}},
			check: func(t *testing.T, m *model) {
				if !m.quit {
					t.Error("not quitting")
				}
			},
		},
		{
			name: "menu: up wraps to Quit, k moves back",
			msgs: seq(inMenu(), codeKey(keyUp), runeKey('k')),
			check: func(t *testing.T, m *model) {
				if m.menu != menuRequests {
					t.Errorf("menu at %d", m.menu)
				}
			},
		},
		{
			name: "ctrl-c quits from the name prompt",
			msgs: []any{ctrlKey('c')},
			cmds: []cmd{cmdQuit{}},
		},
		{
			name: "ctrl-c quits from a chat",
			msgs: seq(inChat(), ctrlKey('c')),
			cmds: []cmd{cmdQuit{}},
		},
		{
			name: "ctrl-l redraws",
			msgs: seq(inMenu(), ctrlKey('l')),
			cmds: []cmd{cmdRedraw{}},
		},
		{
			name: "begin a chat sends the request",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob, carol"), codeKey(keyEnter)),
			cmds: []cmd{cmdRequest{to: []string{"bob", "carol"}}},
		},
		{
			name: "request waits for the first latency report",
			msgs: seq(keysOf("alice"), codeKey(keyEnter), registeredMsg{name: "alice"}, codeKey(keyEnter),
				keysOf("bob"), codeKey(keyEnter), reportedMsg{}),
			cmds: []cmd{cmdRequest{to: []string{"bob"}}},
		},
		{
			name: "request to oneself refused",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob,alice"), codeKey(keyEnter)),
			check: func(t *testing.T, m *model) {
				if m.out != nil || !strings.Contains(m.beginErr, "that is you") {
					t.Errorf("out %v error %q", m.out, m.beginErr)
				}
			},
		},
		{
			name: "duplicate invitee refused",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob, bob"), codeKey(keyEnter)),
			check: func(t *testing.T, m *model) {
				if !strings.Contains(m.beginErr, "twice") {
					t.Errorf("error %q", m.beginErr)
				}
			},
		},
		{
			name: "no invitee refused",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf(" , "), codeKey(keyEnter)),
			check: func(t *testing.T, m *model) {
				if !strings.Contains(m.beginErr, "one or more") {
					t.Errorf("error %q", m.beginErr)
				}
			},
		},
		{
			name: "online users listed; Tab completes and cycles",
			msgs: seq(inMenu(), codeKey(keyEnter), onlineMsg{names: []string{"alice", "bob", "bert", "carol"}}, keysOf("carol, b"), codeKey(keyTab)),
			check: func(t *testing.T, m *model) {
				if !reflect.DeepEqual(m.online, []string{"bob", "bert", "carol"}) {
					t.Errorf("online %q (alice is this user)", m.online)
				}
				if got := m.peers.String(); got != "carol, bob" {
					t.Errorf("after Tab: %q", got)
				}
				m.update(codeKey(keyTab))
				if got := m.peers.String(); got != "carol, bert" {
					t.Errorf("after Tab Tab: %q", got)
				}
				if s := text(m.view()); !strings.Contains(s, "Online now: bob, bert, carol") {
					t.Errorf("screen lacks the online list:\n%s", s)
				}
			},
		},
		{
			name: "a waiting request says how long it has waited",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter),
				status("q1", proto.AckConn, "", ""), status("q1", proto.ReqSent, "", ""), status("q1", proto.AwaitingReq, "", "")),
			check: func(t *testing.T, m *model) {
				m.update(tickMsg{now: m.out.since.Add(12 * time.Second)})
				if s := text(m.view()); !strings.Contains(s, "waiting for an answer (12 s so far)") {
					t.Errorf("screen:\n%s", s)
				}
			},
		},
		{
			name: "status stream is followed",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter),
				status("q1", proto.AckConn, "", ""), status("q1", proto.ReqSent, "", ""),
				status("q9", proto.AwaitingReq, "", ""), // someone else's
				status("q1", proto.AwaitingReq, "", ""), status("q1", proto.AwaitingReq, "", ""),
				status("q1", proto.ReqAccepted, "", "r1")),
			check: func(t *testing.T, m *model) {
				o := m.out
				if o == nil || o.req != "q1" || !o.final {
					t.Fatalf("outgoing %+v", o)
				}
				if got := o.summary(); got != "Central has the request, asked, waiting for an answer, accepted" {
					t.Errorf("summary %q", got)
				}
			},
		},
		{
			name: "accepted request opens the chat with its history",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter),
				status("q1", proto.AckConn, "", ""), status("q1", proto.ReqSent, "", ""),
				status("q1", proto.ReqAccepted, "", "r1"), ready("r1", "serv3", 60*time.Millisecond, "alice", "bob")),
			check: func(t *testing.T, m *model) {
				if m.scr != scrChat || m.chat.id != "r1" || m.out != nil {
					t.Fatalf("screen %d chat %+v out %+v", m.scr, m.chat, m.out)
				}
				for _, l := range m.chat.lines {
					if strings.Contains(l.text, "q1") || strings.Contains(l.text, "r1") {
						t.Errorf("a request or room id on screen: %q", l.text)
					}
				}
				if got := lastLine(m); !strings.Contains(got, "chat with bob on serv3") {
					t.Errorf("last line %q", got)
				}
			},
		},
		{
			name: "declined request ends with its detail, and a new one may go",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter),
				status("q1", proto.AckConn, "", ""), status("q1", proto.ReqDeclined, "bob declined", ""),
				codeKey(keyEnter)),
			cmds: []cmd{cmdRequest{to: []string{"bob"}}},
			check: func(t *testing.T, m *model) {
				if len(m.out.steps) != 0 {
					t.Errorf("new request has steps %v", m.out.steps)
				}
			},
		},
		{
			name: "second request refused while one is under way",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter),
				status("q1", proto.AckConn, "", ""), codeKey(keyEnter)),
			check: func(t *testing.T, m *model) {
				if !strings.Contains(m.beginErr, "under way") {
					t.Errorf("error %q", m.beginErr)
				}
			},
		},
		{
			name: "failed request send",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter),
				failedMsg{cmd: cmdRequest{to: []string{"bob"}}, err: errors.New("not connected")}),
			check: func(t *testing.T, m *model) {
				if !m.out.final || !strings.Contains(m.beginErr, "not connected") {
					t.Errorf("out %+v error %q", m.out, m.beginErr)
				}
			},
		},
		{
			name: "incoming requests bounded",
			msgs: func() []any {
				ms := inMenu()
				for i := range maxIncoming + 10 {
					ms = append(ms, client.Incoming{Incoming: proto.Incoming{Req: fmt.Sprintf("q%d", i), From: "carol"}})
				}
				return ms
			}(),
			check: func(t *testing.T, m *model) {
				if len(m.incoming) != maxIncoming || m.incoming[0].Req != "q10" {
					t.Errorf("%d requests listed, the first %s; want %d from q10", len(m.incoming), m.incoming[0].Req, maxIncoming)
				}
			},
		},
		{
			name: "incoming request counted",
			msgs: seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol", Members: []string{"carol", "alice"}}},
				client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}}), // a repeat
			check: func(t *testing.T, m *model) {
				if got := m.menuLabel(menuRequests); got != "View chat requests (1)" {
					t.Errorf("label %q", got)
				}
			},
		},
		{
			name: "accept an incoming request",
			msgs: seq(inMenu(),
				client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}},
				client.Incoming{Incoming: proto.Incoming{Req: "q3", From: "dave"}},
				codeKey(keyDown), codeKey(keyEnter), codeKey(keyDown), codeKey(keyEnter)),
			cmds: []cmd{cmdAnswer{req: "q3", accept: true}},
			check: func(t *testing.T, m *model) {
				if len(m.incoming) != 1 || m.incoming[0].Req != "q2" || m.scr != scrMenu {
					t.Errorf("incoming %v screen %d", m.incoming, m.scr)
				}
			},
		},
		{
			name: "accept with a",
			msgs: seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}},
				codeKey(keyDown), codeKey(keyEnter), runeKey('a')),
			cmds: []cmd{cmdAnswer{req: "q2", accept: true}},
		},
		{
			name: "decline with d stays on the list",
			msgs: seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}},
				codeKey(keyDown), codeKey(keyEnter), runeKey('d')),
			cmds: []cmd{cmdAnswer{req: "q2", accept: false}},
			check: func(t *testing.T, m *model) {
				if m.scr != scrRequests || len(m.incoming) != 0 {
					t.Errorf("screen %d incoming %v", m.scr, m.incoming)
				}
			},
		},
		{
			name: "enter on an empty list does nothing; Esc goes back",
			msgs: seq(inMenu(), codeKey(keyDown), codeKey(keyEnter), codeKey(keyEnter), codeKey(keyEsc)),
			check: func(t *testing.T, m *model) {
				if m.scr != scrMenu {
					t.Errorf("screen %d", m.scr)
				}
			},
		},
		{
			name: "incoming request that timed out disappears",
			msgs: seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}},
				status("q2", proto.ReqTimeout, "no answer", "")),
			check: func(t *testing.T, m *model) {
				if len(m.incoming) != 0 || !strings.Contains(m.notice, "carol's chat request expired: you did not answer in time") {
					t.Errorf("incoming %v notice %q", m.incoming, m.notice)
				}
			},
		},
		{
			// The acceptor's request left the list on accept, and its
			// SERVER_ERR was dropped: the user waited for a chat that
			// would never open.
			name: "accepted request whose room cannot be placed says why",
			msgs: seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}},
				codeKey(keyDown), codeKey(keyEnter), codeKey(keyEnter), status("q2", proto.ServerErr, placeErr, "")),
			check: func(t *testing.T, m *model) {
				want := "you accepted carol's chat request, but the chat could not start: no chat server can host the chat: of 3 chat servers, 1 is down and 2 are full"
				if m.notice != want || !m.noticeEr || len(m.accepted) != 0 {
					t.Errorf("notice %q (error %v), accepted %v; want error %q", m.notice, m.noticeEr, m.accepted, want)
				}
			},
		},
		{
			name: "accepted request that another member declines says so",
			msgs: seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol", Members: []string{"carol", "alice", "dave"}}},
				codeKey(keyDown), codeKey(keyEnter), codeKey(keyEnter), status("q2", proto.ReqDeclined, "dave declined", "")),
			check: func(t *testing.T, m *model) {
				if want := "you accepted carol's chat request, but the chat could not start: declined: dave declined"; m.notice != want {
					t.Errorf("notice %q, want %q", m.notice, want)
				}
			},
		},
		{
			name: "accepted request whose room opens says nothing more",
			msgs: seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}},
				codeKey(keyDown), codeKey(keyEnter), codeKey(keyEnter), status("q2", proto.ReqAccepted, "", "r2")),
			check: func(t *testing.T, m *model) {
				if !strings.HasPrefix(m.notice, "accepted carol's request") || len(m.accepted) != 0 {
					t.Errorf("notice %q, accepted %v", m.notice, m.accepted)
				}
			},
		},
		{
			name: "request whose room cannot be placed says why in words",
			msgs: seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter), status("q1", proto.AckConn, "", ""),
				status("q1", proto.ServerErr, placeErr, "")),
			check: func(t *testing.T, m *model) {
				o := m.out
				if got, want := o.steps[len(o.steps)-1].String(), "no chat server can host the chat: of 3 chat servers, 1 is down and 2 are full"; got != want {
					t.Errorf("last step %q, want %q", got, want)
				}
			},
		},
		{
			name: "a paste is text: its line breaks do not send",
			msgs: seq(inChat(), keysOf("say: "), terminal("\x1b[200~hi\r\nthere\r\n\x1b[201~")),
			check: func(t *testing.T, m *model) {
				if got := m.chat.input.String(); got != "say: hi there " || len(m.chat.lines) != 1 {
					t.Errorf("input %q, lines %v", got, m.chat.lines)
				}
			},
		},
		{
			name: "a pasted letter is no command",
			msgs: seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}},
				codeKey(keyDown), codeKey(keyEnter), terminal("\x1b[200~dq\x1b[201~")),
			check: func(t *testing.T, m *model) {
				if len(m.incoming) != 1 || m.scr != scrRequests {
					t.Errorf("screen %d, incoming %v: a pasted d declined", m.scr, m.incoming)
				}
			},
		},
		{
			name: "send a message",
			msgs: seq(inChat(), keysOf("hi bob"), codeKey(keyEnter)),
			cmds: []cmd{cmdSend{room: "r1", text: "hi bob", id: 1}},
			check: func(t *testing.T, m *model) {
				l := m.chat.lines[len(m.chat.lines)-1]
				if l.kind != lineSelf || l.from != "alice" || l.text != "hi bob" || m.chat.input.String() != "" || !l.pending {
					t.Errorf("line %+v input %q", l, m.chat.input.String())
				}
			},
		},
		{
			name: "pending mark cleared by the acknowledgement, not before",
			msgs: seq(inChat(), keysOf("one"), codeKey(keyEnter), keysOf("two"), codeKey(keyEnter),
				sentMsg{room: "r1", id: 1, num: 1}, sentMsg{room: "r1", id: 2, num: 2}, ackedMsg{room: "r1", num: 1}),
			check: func(t *testing.T, m *model) {
				n := len(m.chat.lines)
				if one, two := m.chat.lines[n-2], m.chat.lines[n-1]; one.pending || !two.pending {
					t.Errorf("one pending %v, two pending %v; want false, true", one.pending, two.pending)
				}
			},
		},
		{
			name: "a message over the limit is refused with the limit and kept, never cut",
			msgs: seq(inChat(), keysOf(strings.Repeat("y", proto.MaxText+10)), codeKey(keyEnter)),
			check: func(t *testing.T, m *model) {
				if got := lastLine(m); !strings.Contains(got, fmt.Sprintf("not sent: the message is %d bytes, the limit is %d", proto.MaxText+10, proto.MaxText)) {
					t.Errorf("line %q", got)
				}
				if len(m.chat.input.String()) != proto.MaxText+10 {
					t.Errorf("input cut to %d bytes", len(m.chat.input.String()))
				}
			},
		},
		{
			name: "input history: Up recalls, Down returns to the draft",
			msgs: seq(inChat(), keysOf("first"), codeKey(keyEnter), keysOf("second"), codeKey(keyEnter), keysOf("dra"),
				codeKey(keyUp), codeKey(keyUp)),
			check: func(t *testing.T, m *model) {
				if got := m.chat.input.String(); got != "first" {
					t.Errorf("after Up Up: %q", got)
				}
				m.update(codeKey(keyDown))
				m.update(codeKey(keyDown))
				if got := m.chat.input.String(); got != "dra" {
					t.Errorf("after Down Down: %q", got)
				}
			},
		},
		{
			name: "Esc ends scroll mode before it asks to leave; End jumps to the latest",
			msgs: seq(inChat(), many(40), codeKey(keyPgUp), client.Message{Room: "r1", From: "bob", Text: "new"}),
			check: func(t *testing.T, m *model) {
				r := m.chat
				if r.scroll == 0 || r.unread != 1 {
					t.Fatalf("scroll %d unread %d", r.scroll, r.unread)
				}
				m.update(codeKey(keyEsc))
				if m.scr != scrChat || r.scroll != 0 || r.unread != 0 || r.leaving {
					t.Errorf("after Esc: screen %d scroll %d unread %d leaving %v", m.scr, r.scroll, r.unread, r.leaving)
				}
				m.update(codeKey(keyPgUp))
				m.update(codeKey(keyEnd))
				if r.scroll != 0 {
					t.Errorf("End left scroll at %d", r.scroll)
				}
			},
		},
		{
			name: "blank message not sent",
			msgs: seq(inChat(), keysOf("  "), codeKey(keyEnter)),
		},
		{
			name: "cursor editing in the chat input",
			msgs: seq(inChat(), keysOf("hllo"), codeKey(keyHome), codeKey(keyRight), runeKey('e'), codeKey(keyEnd), runeKey('!'), codeKey(keyEnter)),
			cmds: []cmd{cmdSend{room: "r1", text: "hello!", id: 1}},
		},
		{
			name: "message received",
			msgs: seq(inChat(), client.Message{Room: "r1", From: "bob", Text: "yo\x1b[2J"}, client.Message{Room: "r0", From: "x", Text: "old room"}),
			check: func(t *testing.T, m *model) {
				l := m.chat.lines[len(m.chat.lines)-1]
				if l.kind != lineMsg || l.from != "bob" || l.text != "yo\uFFFD[2J" {
					t.Errorf("line %+v", l)
				}
			},
		},
		{
			name: "move shown as a system line",
			msgs: seq(inChat(), client.Moved{Room: "r1", From: proto.ServerRef{ID: "serv3"}, To: proto.ServerRef{ID: "serv1"}, Epoch: 2, Assign: proto.Assign{Room: "r1", Epoch: 2, Server: proto.ServerRef{ID: "serv1"},
				Prev: "serv3", PrevRTT: 62400 * time.Microsecond, RTT: 40600 * time.Microsecond, Reason: "better server"}, Took: 12 * time.Millisecond}),
			check: func(t *testing.T, m *model) {
				if got := lastLine(m); got != "the chat moved to serv1, a closer server: the slowest member's round trip went from 62 ms to 41 ms; nothing lost (switched in 12 ms)" {
					t.Errorf("line %q", got)
				}
				if m.chat.server != "serv1" || m.chat.rtt != 40600*time.Microsecond {
					t.Errorf("header server %s rtt %v", m.chat.server, m.chat.rtt)
				}
			},
		},
		{
			name: "presence only on change; a leave is told once it is not a move",
			msgs: seq(inChat(), client.Moved{Room: "r1", From: proto.ServerRef{ID: "serv2"}, To: proto.ServerRef{ID: "serv3"}, Epoch: 2, Members: []string{"bob"}},
				client.Presence{Room: "r1", User: "bob", Here: true, Server: "serv3"},
				client.Presence{Room: "r1", User: "bob", Here: false, Server: "serv3"}),
			check: func(t *testing.T, m *model) {
				for _, l := range m.chat.lines {
					if strings.Contains(l.text, "joined") || strings.Contains(l.text, "left") {
						t.Errorf("line %q before the leave grace passed", l.text)
					}
				}
				m.update(tickMsg{now: time.Now().Add(leaveGrace)})
				if got := lastLine(m); got != "bob left the chat" {
					t.Errorf("last line %q", got)
				}
			},
		},
		{
			name: "the first member is told when the second joins",
			msgs: seq(inMenu(), client.RoomReady{Room: "r1", Assign: proto.Assign{Room: "r1", Epoch: 1, Server: proto.ServerRef{ID: "serv3"}, Members: []string{"alice", "bob"}}},
				client.Presence{Room: "r1", User: "bob", Here: true, Server: "serv3"}),
			check: func(t *testing.T, m *model) {
				if got := lastLine(m); got != "bob joined the chat" {
					t.Errorf("last line %q", got)
				}
			},
		},
		{
			name: "missed messages",
			msgs: seq(inChat(), client.Missed{Room: "r1", From: "bob", First: 4, Last: 6, Reason: "gone"}),
			check: func(t *testing.T, m *model) {
				if got := lastLine(m); got != "missed messages 4-6 of bob: gone" {
					t.Errorf("line %q", got)
				}
			},
		},
		{
			name: "broken connection",
			msgs: seq(inChat(), client.Broken{Room: "r1", Server: proto.ServerRef{ID: "serv3"}, Err: errors.New("EOF")}),
			check: func(t *testing.T, m *model) {
				if !m.chat.broken || !strings.Contains(lastLine(m), "lost the connection to serv3 (EOF)") {
					t.Errorf("broken %v line %q", m.chat.broken, lastLine(m))
				}
			},
		},
		{
			name: "control connection lost and restored",
			msgs: seq(inChat(), client.Disconnected{Err: errors.New("EOF")}, client.Disconnected{Err: errors.New("refused")}, client.Connected{}),
			check: func(t *testing.T, m *model) {
				var sys []string
				for _, l := range m.chat.lines[1:] {
					sys = append(sys, l.text)
				}
				want := []string{"control connection to Central lost (EOF); reconnecting", "control connection to Central restored"}
				if !reflect.DeepEqual(sys, want) {
					t.Errorf("lines %q, want %q", sys, want)
				}
			},
		},
		{
			name: "esc leaves the chat, once confirmed",
			msgs: seq(inChat(), codeKey(keyEsc), runeKey('y')),
			cmds: []cmd{cmdLeave{room: "r1"}},
			check: func(t *testing.T, m *model) {
				if m.scr != scrMenu || m.chat != nil {
					t.Errorf("screen %d", m.scr)
				}
			},
		},
		{
			name: "ctrl-d leaves the chat, once confirmed",
			msgs: seq(inChat(), ctrlKey('d'), codeKey(keyEnter)),
			cmds: []cmd{cmdLeave{room: "r1"}},
		},
		{
			name: "leaving can be called off",
			msgs: seq(inChat(), codeKey(keyEsc), runeKey('n')),
			check: func(t *testing.T, m *model) {
				if m.scr != scrChat || m.chat == nil || m.chat.leaving {
					t.Errorf("screen %d", m.scr)
				}
			},
		},
		{
			name: "closed room: no Leave",
			msgs: seq(inChat(), client.RoomClosed{RoomClosed: proto.RoomClosed{Room: "r1", Reason: "everyone left"}}, codeKey(keyEsc)),
			check: func(t *testing.T, m *model) {
				if m.scr != scrMenu {
					t.Errorf("screen %d", m.scr)
				}
			},
		},
		{
			name: "a second room while chatting is left",
			msgs: seq(inChat(), ready("r2", "serv1", 0, "alice", "carol")),
			cmds: []cmd{cmdLeave{room: "r2"}},
			check: func(t *testing.T, m *model) {
				if m.chat.id != "r1" {
					t.Errorf("chat %s", m.chat.id)
				}
			},
		},
		{
			name: "end of input quits",
			msgs: seq(inMenu(), inputClosedMsg{}),
			cmds: []cmd{cmdQuit{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, cmds := newModel(tt.init, 80, 24)
			for _, msg := range tt.msgs {
				cmds = m.update(msg)
			}
			if !reflect.DeepEqual(cmds, tt.cmds) {
				t.Errorf("commands %#v, want %#v", cmds, tt.cmds)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
			// Every state must draw.
			checkFrame(t, m.view(), 80, 24)
		})
	}
}

// placeErr is Central's detail of a SERVER_ERR.
const placeErr = "no chat server can host this room: of 3 chat servers, 1 is down and 2 are full"

// TestPlacementProblem: why Central could not place a room reaches the
// person as Central's sentence, never as a Go error chain (the words are
// selection.NoEligibleError's, TestNoEligibleSentence).
func TestPlacementProblem(t *testing.T) {
	for _, tt := range []struct{ detail, want string }{
		{placeErr, "of 3 chat servers, 1 is down and 2 are full"},
		{"no chat server can host this room: the chat has no members", "the chat has no members"},
		{"no chat server can host this room (an error of Central's own: its log has it)", ""},
		{"no room for you: the cluster is resizing", "no room for you"},
		{"", ""},
	} {
		if got := placementProblem(tt.detail); got != tt.want {
			t.Errorf("placementProblem(%q) = %q, want %q", tt.detail, got, tt.want)
		}
	}
	// Cleaned as every text from the network is.
	if got := placementProblem("no chat server can host this room: \x1b[2Jboom"); strings.ContainsRune(got, 0x1b) || !strings.Contains(got, "boom") {
		t.Errorf("placementProblem with an escape = %q", got)
	}
}

func TestMoveLine(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	mv := func(to string, a proto.Assign, took time.Duration) client.Moved {
		a.Server.ID = to
		return client.Moved{To: proto.ServerRef{ID: to}, Assign: a, Took: took}
	}
	tests := []struct {
		name   string
		from   string
		e      client.Moved
		lostAt time.Time
		want   string
	}{
		{"better server", "serv3", mv("serv1", proto.Assign{Reason: "better server: serv1 41.6ms < serv3 61.6ms", PrevRTT: 61500 * time.Microsecond, RTT: 41499 * time.Microsecond}, 166*time.Millisecond), time.Time{},
			"the chat moved to serv1, a closer server: the slowest member's round trip went from 62 ms to 41 ms; nothing lost (switched in 166 ms)"},
		{"drain", "serv3", mv("serv2", proto.Assign{Reason: "current server draining"}, time.Millisecond), time.Time{},
			"serv3 is shutting down; the chat moved to serv2; nothing lost (switched in 1 ms)"},
		// The user saw serv3 die; Central had cascaded the room through
		// serv4 and serv2 meanwhile: the line names what the user saw,
		// and the outage, not the last switch alone.
		{"down after an outage", "serv3", mv("serv3", proto.Assign{Reason: "current server down", Prev: "serv2"}, 249*time.Millisecond), t0.Add(-10200 * time.Millisecond),
			"serv3 stopped answering; the chat moved to serv3 after 10.2 s without a server; nothing lost (switched in 249 ms)"},
		{"nothing known", "serv3", mv("serv4", proto.Assign{}, 0), time.Time{}, "the chat moved to serv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := moveLine(tt.from, tt.e, tt.lostAt, t0); got != tt.want {
				t.Errorf("moveLine =\n%q, want\n%q", got, tt.want)
			}
		})
	}
}

func errTaken() error {
	return &centralapi.Error{Status: 409, Code: centralapi.CodeNameTaken, Message: "in use"}
}
