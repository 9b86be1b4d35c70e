package main

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"nearchat/client"
	"nearchat/pkg/proto"
)

// checkFrame asserts the invariants every frame keeps: exactly h rows,
// none wider than w, the cursor on the screen.
func checkFrame(t *testing.T, f frame, w, h int) {
	t.Helper()
	if len(f.rows) != h {
		t.Fatalf("%dx%d frame has %d rows", w, h, len(f.rows))
	}
	for i, r := range f.rows {
		if n := textWidth(r.text); n > w {
			t.Errorf("%dx%d row %d is %d columns: %q", w, h, i, n, r.text)
		}
	}
	if f.cursor && (f.crow < 0 || f.crow >= h || f.ccol < 0 || f.ccol >= w) {
		t.Errorf("%dx%d cursor at %d,%d", w, h, f.crow, f.ccol)
	}
}

func text(f frame) string {
	var b strings.Builder
	for _, r := range f.rows {
		b.WriteString(r.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// many is n messages from bob, numbered from 1.
func many(n int) []any {
	var out []any
	for i := range n {
		out = append(out, client.Message{Room: "r1", From: "bob", Text: fmt.Sprint(i + 1)})
	}
	return out
}

func drive(t *testing.T, w, h int, msgs ...any) *model {
	t.Helper()
	m, _ := newModel("", w, h)
	m.now = func() time.Time { return time.Date(2026, 11, 30, 4, 5, 0, 0, time.Local) }
	for _, msg := range msgs {
		m.update(msg)
	}
	return m
}

func TestViewScreens(t *testing.T) {
	long := strings.Repeat("word ", 40)
	tests := []struct {
		name string
		msgs []any
		want []string // substrings of the screen
		crow int      // cursor row, -1 for hidden
	}{
		{"name prompt", nil, []string{"Your user name:", "Enter: continue"}, 6},
		{"name taken", seq(keysOf("bob"), codeKey(keyEnter), registeredMsg{name: "bob", online: true, err: fmt.Errorf("x: %w", errTaken())}), []string{`"bob" is taken`}, 6},
		{"menu", inMenu(), []string{"> Begin a chat", "View chat requests (0)", "Quit", "alice · online"}, -1},
		// The whole token, which 80 columns cut after "-token " (bug).
		{"menu shows the whole token", seq(keysOf("alice"), codeKey(keyEnter), registeredMsg{name: "alice", token: strings.Repeat("0123456789abcdef", 4)}, reportedMsg{}, client.Connected{}),
			[]string{"start with -token", "  " + strings.Repeat("0123456789abcdef", 4)}, -1},
		// A listing Central refused (its rate) says so, instead of
		// showing nothing (review, 2026-12-03).
		{"begin with the online list refused", seq(inMenu(), codeKey(keyEnter), onlineMsg{err: "central: rate_limited (429): too many listings"}),
			[]string{"Who is online is not known right now", "type the name"}, 3},
		{"menu with requests", seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}}), []string{"View chat requests (1)", "chat request from carol"}, -1},
		{"menu with probes", seq(inMenu(), probeMsg{rtt: map[string]time.Duration{"serv3": 60 * time.Millisecond, "serv1": 40 * time.Millisecond}}), []string{"RTT: serv1 40 ms · serv3 60 ms"}, -1},
		{"begin with status stream", seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter),
			status("q1", proto.AckConn, "", ""), status("q1", proto.ReqSent, "", ""), status("q1", proto.AwaitingReq, "", ""),
			status("q1", proto.ReqDeclined, "bob declined", "")),
			[]string{"Request to bob:", "Central has the request", "asked", "waiting for an answer", "declined: bob declined"}, 3},
		{"requests list", seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol", Members: []string{"carol", "alice", "dave"}}},
			codeKey(keyDown), codeKey(keyEnter)), []string{"> carol (with dave)", "Enter/a: accept"}, -1},
		{"empty requests list", seq(inMenu(), codeKey(keyDown), codeKey(keyEnter)), []string{"No pending chat requests."}, -1},
		{"chat", seq(inChat(), client.Message{Room: "r1", From: "bob", Text: "hi alice"}, keysOf("typing")),
			[]string{" with bob · on serv3 · slowest member 60 ms", "04:05 bob: hi alice", "> typing", "Esc: leave"}, 23},
		{"chat header with probes and TLS, a member away", seq(inMenu(), probeMsg{rtt: map[string]time.Duration{"serv3": 61 * time.Millisecond}},
			client.RoomReady{Room: "r1", Assign: proto.Assign{Room: "r1", Epoch: 1, Server: proto.ServerRef{ID: "serv3"}, Members: []string{"alice", "bob", "carol"}, RTT: 62 * time.Millisecond}, Present: []string{"bob"}}),
			[]string{" with bob, carol (away) · on serv3 · you 61 ms, slowest 62 ms", "waiting for carol to join"}, 23},
		{"chat pending line", seq(inChat(), keysOf("hello"), codeKey(keyEnter)), []string{"04:05 alice: hello [sending]"}, 23},
		{"asking before leaving", seq(inChat(), codeKey(keyEsc)), []string{"Leave the chat with bob? y: leave"}, 23},
		{"new messages while scrolled back", seq(inChat(), many(40), codeKey(keyPgUp), client.Message{Room: "r1", From: "bob", Text: "late"}),
			[]string{"1 new below", "End or Esc: jump to the latest"}, 23},
		{"chat long line wraps", seq(inChat(), client.Message{Room: "r1", From: "bob", Text: long}), []string{"bob: word word"}, 23},
		{"chat scrolled", seq(inChat(), many(40), codeKey(keyPgUp)), []string{"scrolled back 20 rows", "bob: 20\n scrolled"}, 23},
		{"chat scrolled to the top", seq(inChat(), many(40), codeKey(keyPgUp), codeKey(keyPgUp), codeKey(keyPgUp)), []string{"* chat with bob", "scrolled back 20 rows"}, 23},
		{"chat with pending request", seq(inChat(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}}), []string{"requests: 1", "chat request from carol"}, 23},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := drive(t, 80, 24, tt.msgs...)
			f := m.view()
			checkFrame(t, f, 80, 24)
			s := text(f)
			for _, w := range tt.want {
				if !strings.Contains(s, w) {
					t.Errorf("screen lacks %q:\n%s", w, s)
				}
			}
			row := -1
			if f.cursor {
				row = f.crow
			}
			if row != tt.crow {
				t.Errorf("cursor row %d, want %d:\n%s", row, tt.crow, s)
			}
		})
	}
}

// TestViewNarrowNamePrompt: at the smallest window the name being typed
// shows, its prompt shortened to make room; "  Your user name: " left two
// columns of 20, so "alice" showed as "e".
func TestViewNarrowNamePrompt(t *testing.T) {
	m := drive(t, 80, 24, keysOf("alice")...)
	for _, w := range []int{minW, 24, 30, 80} {
		m.update(resizeMsg{w: w, h: minH})
		f := m.view()
		checkFrame(t, f, w, minH)
		if got := f.rows[f.crow].text; !strings.Contains(got, "alice") {
			t.Errorf("%d columns: the input row is %q, want the name in it", w, got)
		}
	}
	m.update(resizeMsg{w: 80, h: 24})
	if f := m.view(); !strings.Contains(f.rows[f.crow].text, "Your user name: alice") {
		t.Errorf("80 columns: %q, want the whole prompt", f.rows[f.crow].text)
	}
	// The menu keeps the count of requests waiting.
	m = drive(t, 80, 24, seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}})...)
	for _, w := range []int{minW, 26, 80} {
		m.update(resizeMsg{w: w, h: minH})
		f := m.view()
		checkFrame(t, f, w, minH)
		if !slices.ContainsFunc(f.rows, func(r row) bool { return strings.Contains(r.text, "(1)") }) {
			t.Errorf("%d columns: no request count in the menu:\n%v", w, f.rows)
		}
	}
}

// TestViewAnySize draws every screen at every small size and a few big
// ones: no panic, and the frame invariants hold.
func TestViewAnySize(t *testing.T) {
	states := map[string][]any{
		"name":     nil,
		"menu":     seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}}),
		"begin":    seq(inMenu(), codeKey(keyEnter), keysOf(strings.Repeat("bob,", 30)), codeKey(keyEnter), status("q1", proto.AckConn, "", "")),
		"requests": seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: "carol"}}, codeKey(keyDown), codeKey(keyEnter)),
		"chat":     seq(inChat(), client.Message{Room: "r1", From: "bob", Text: strings.Repeat("日本 ", 50)}, keysOf(strings.Repeat("x", 200))),
	}
	for name, msgs := range states {
		t.Run(name, func(t *testing.T) {
			m := drive(t, 80, 24, msgs...)
			for _, size := range [][2]int{{0, 0}, {1, 1}, {19, 24}, {80, 5}, {200, 60}} {
				m.update(resizeMsg{w: size[0], h: size[1]})
				checkFrame(t, m.view(), size[0], size[1])
			}
			for w := minW; w <= minW+20; w++ {
				for h := minH; h <= minH+4; h++ {
					m.update(resizeMsg{w: w, h: h})
					checkFrame(t, m.view(), w, h)
				}
			}
		})
	}
}

func TestPainter(t *testing.T) {
	var out bytes.Buffer
	p := &painter{w: &out}
	f := frame{w: 10, h: 3, rows: []row{{text: "head", st: stBar}, {text: "body"}, {text: "0123456789"}}, cursor: true, crow: 1, ccol: 4}
	if err := p.paint(f, false); err != nil {
		t.Fatal(err)
	}
	first := out.String()
	for _, want := range []string{escClear, "\x1b[1;1H\x1b[7mhead\x1b[0m\x1b[K", "\x1b[2;1Hbody\x1b[K", "\x1b[3;1H0123456789\x1b[2;5H" + escShowCur} {
		if !strings.Contains(first, want) {
			t.Errorf("first paint %q lacks %q", first, want)
		}
	}
	out.Reset()
	f.rows[1].text = "changed"
	if err := p.paint(f, false); err != nil {
		t.Fatal(err)
	}
	second := out.String()
	if strings.Contains(second, "head") || strings.Contains(second, escClear) || !strings.Contains(second, "\x1b[2;1Hchanged\x1b[K") {
		t.Errorf("second paint should redraw only row 2: %q", second)
	}
	out.Reset()
	f.w = 12
	if err := p.paint(f, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), escClear) || !strings.Contains(out.String(), "head") {
		t.Errorf("a resize must redraw everything: %q", out.String())
	}
}

func TestGuardedRestoresOnPanic(t *testing.T) {
	restored := 0
	defer func() {
		r := recover()
		if r != "boom" {
			t.Errorf("recovered %v, want the original panic", r)
		}
		if restored != 1 {
			t.Errorf("restore ran %d times, want 1", restored)
		}
	}()
	guarded(func() { restored++ }, func() { panic("boom") })
	t.Error("guarded swallowed the panic")
}

// hostile is a name a peer or a server could send: a clear-screen, a
// right-to-left override, and a length no valid name has.
var hostile = "ev\x1b[2Jil\u202e" + strings.Repeat("x", 5000)

// screenSafe fails when s holds a character that must not reach the
// terminal as it is.
func screenSafe(t *testing.T, where, s string) {
	t.Helper()
	for _, r := range s {
		bidi := r == '\u061c' || r == '\u200e' || r == '\u200f' || r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
		if r != '\n' && (r < 0x20 || r >= 0x7f && r < 0xa0 || bidi) {
			t.Errorf("%s: %U reaches the screen:\n%q", where, r, s)
			return
		}
	}
}

// TestViewHostileNames: names, server ids and details from peers and
// servers are drawn without their control characters or bidi overrides,
// and cut short, so what follows them on the row still shows (a member's
// megabyte name used to push the server off the chat header).
func TestViewHostileNames(t *testing.T) {
	assign := func(server string, members ...string) client.RoomReady {
		return client.RoomReady{Room: "r1", Assign: proto.Assign{Room: "r1", Epoch: 1, Server: proto.ServerRef{ID: server}, Members: members, RTT: 62 * time.Millisecond}, Present: members}
	}
	tests := []struct {
		name string
		msgs []any
		want []string
	}{
		{"requests list", seq(inMenu(), client.Incoming{Incoming: proto.Incoming{Req: "q2", From: hostile, Members: []string{hostile, "alice", "dave\u202e"}}},
			codeKey(keyDown), codeKey(keyEnter)), []string{"> ev\uFFFD[2Jil\uFFFDxxx", "…"}},
		{"menu notice and probe line", seq(inMenu(), probeMsg{rtt: map[string]time.Duration{hostile: time.Millisecond, "serv1": 40 * time.Millisecond}},
			client.Incoming{Incoming: proto.Incoming{Req: "q2", From: hostile}}), []string{"… 1 ms · serv1 40 ms", "chat request from ev"}},
		{"chat header and sender", seq(inMenu(), probeMsg{rtt: map[string]time.Duration{"serv3\x1b[31m": time.Millisecond}}, assign("serv3\x1b[31m", "alice", hostile),
			client.Presence{Room: "r1", User: "\u202eeve", Here: true}, client.Message{Room: "r1", From: hostile, Text: "hi\x1b]0;owned\x07"}),
			[]string{"…, \uFFFDeve · on serv3\uFFFD[31m · you 1 ms", "\uFFFDeve joined", ": hi\uFFFD]0;owned\uFFFD"}},
		{"status detail", seq(inMenu(), codeKey(keyEnter), keysOf("bob"), codeKey(keyEnter), status("q1", proto.AckConn, "", ""),
			status("q1", proto.ServerErr, "no server\x1b[2J\u202e"+strings.Repeat("y", 5000), "")), []string{"no server\uFFFD[2J\uFFFDyyy"}},
		{"central error", seq(inMenu(), client.Error{Err: errors.New("bad\x1b[?1049l\u2066" + strings.Repeat("z", 5000))}), []string{"Central:", "bad\uFFFD[?1049l\uFFFDzz", "z…"}},
		{"room closed and moved", seq(inChat(), client.Moved{Room: "r1", To: proto.ServerRef{ID: hostile}, Assign: proto.Assign{Reason: "why\x1b[2J"}},
			client.RoomClosed{RoomClosed: proto.RoomClosed{Room: "r1", Reason: "bye\x1b[2J"}}), []string{"the chat moved to ev\uFFFD[2Jil\uFFFDx", "closed: bye\uFFFD[2J"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := drive(t, 120, 30, tt.msgs...)
			f := m.view()
			checkFrame(t, f, 120, 30)
			s := text(f)
			screenSafe(t, "screen", s)
			for _, w := range tt.want {
				if !strings.Contains(s, w) {
					t.Errorf("screen lacks %q:\n%s", w, s)
				}
			}
		})
	}
}

// TestViewHeaderDropsLeftMembers: a member who left the chat used to stay
// in the header, "(away)", for as long as the chat lasted. Once the chat
// says they left (not a move: they did not turn up again within
// leaveGrace) the header drops them; back, they are listed again.
func TestViewHeaderDropsLeftMembers(t *testing.T) {
	at := time.Date(2026, 11, 30, 4, 5, 0, 0, time.Local) // drive's clock
	later := tickMsg{now: at.Add(leaveGrace)}
	group := client.RoomReady{Room: "r1", Assign: proto.Assign{Room: "r1", Epoch: 1, Server: proto.ServerRef{ID: "serv3"}, Members: []string{"alice", "bob", "carol"}},
		Present: []string{"bob", "carol"}}
	gone := func(u string) client.Presence { return client.Presence{Room: "r1", User: u} }
	back := func(u string) client.Presence { return client.Presence{Room: "r1", User: u, Here: true} }
	tests := []struct {
		name       string
		msgs       []any
		want, lack []string
	}{
		{"one of two left", seq(inMenu(), group, gone("carol"), later), []string{" with bob · on serv3", "carol left the chat"}, []string{"carol (away)", "with bob, carol ·"}},
		{"away until the grace ends", seq(inMenu(), group, gone("carol")), []string{" with bob, carol (away) · on serv3"}, []string{"left the chat"}},
		{"a move is no leave", seq(inMenu(), group, gone("carol"), back("carol"), later), []string{" with bob, carol · on serv3"}, []string{"left the chat", "(away)"}},
		{"everyone left", seq(inChat(), gone("bob"), later, codeKey(keyEsc)), []string{" with nobody else · on serv3", "Leave the chat with nobody else?"}, []string{"bob (away)"}},
		{"back after leaving", seq(inChat(), gone("bob"), later, back("bob")), []string{" with bob · on serv3", "bob left the chat", "bob joined the chat"}, []string{"(away)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := drive(t, 80, 24, tt.msgs...)
			f := m.view()
			checkFrame(t, f, 80, 24)
			s := text(f)
			for _, w := range tt.want {
				if !strings.Contains(s, w) {
					t.Errorf("screen lacks %q:\n%s", w, s)
				}
			}
			for _, w := range tt.lack {
				if strings.Contains(s, w) {
					t.Errorf("screen shows %q:\n%s", w, s)
				}
			}
		})
	}
}

// chatRows is the conversation part of a chat frame: the rows between the
// header and the bottom bar.
func chatRows(f frame) string {
	var b strings.Builder
	for _, r := range f.rows[1 : len(f.rows)-2] {
		b.WriteString(r.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestViewScrollbackStaysPut: scrolled back, the user reads older lines;
// new ones used to push what they read up the screen (the position was
// counted from the bottom). The rows stay put now, whatever arrives, and
// the bottom bar counts the new lines.
func TestViewScrollbackStaysPut(t *testing.T) {
	long := strings.Repeat("wrapped ", 30)
	mine := seq(keysOf(strings.Repeat("x", 67)), codeKey(keyEnter), sentMsg{room: "r1", id: 1, num: 1})
	tests := []struct {
		name   string
		w, h   int
		before []any // up to the scrolled view
		after  []any // what arrives while scrolled back
		hint   string
	}{
		{"messages", 80, 24, seq(inChat(), many(40), codeKey(keyPgUp)), many(5), "5 new below · scrolled back 25 rows"},
		{"wrapped messages", 40, 24, seq(inChat(), many(40), codeKey(keyPgUp)),
			[]any{client.Message{Room: "r1", From: "bob", Text: long}, client.Message{Room: "r1", From: "bob", Text: long}}, "2 new below"},
		{"a second page back", 80, 24, seq(inChat(), many(60), codeKey(keyPgUp), many(3), codeKey(keyPgUp)), many(4), "scrolled back 47 rows"},
		{"system lines and errors", 80, 24, seq(inChat(), many(40), codeKey(keyPgUp)),
			[]any{client.Presence{Room: "r1", User: "carol", Here: true}, client.Missed{Room: "r1", From: "bob", First: 1, Last: 2, Reason: "gone"}}, "2 new below"},
		// "alice: " and the 67 x fill the row: " [sending]" took a second.
		{"an acknowledgement below the view", 80, 24, seq(inChat(), many(40), mine, codeKey(keyPgUp)),
			[]any{ackedMsg{room: "r1", num: 1}}, "scrolled back 19 rows"},
		{"the oldest lines dropped", 80, 24, seq(inChat(), many(maxLines), codeKey(keyPgUp)), many(30), "30 new below · scrolled back 50 rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := drive(t, tt.w, tt.h, tt.before...)
			want := chatRows(m.view())
			for _, msg := range tt.after {
				m.update(msg)
			}
			f := m.view()
			checkFrame(t, f, tt.w, tt.h)
			if got := chatRows(f); got != want {
				t.Errorf("the rows moved:\n%s\nwant\n%s", got, want)
			}
			if s := text(f); !strings.Contains(s, tt.hint) {
				t.Errorf("bottom bar lacks %q:\n%s", tt.hint, s)
			}
		})
	}
}
