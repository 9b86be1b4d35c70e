package main

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"nearchat/client"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
)

// The terminal client is a model (this file: state, and what each key or
// event does to it, with no I/O), a view (tui_view.go: the model drawn as
// rows of text), and a runtime (tui.go: the terminal, the client library,
// and one goroutine that owns both the model and the screen).

type screen uint8

const (
	scrName     screen = iota // asking for the user name
	scrMenu                   // Begin a chat / View chat requests / Quit
	scrBegin                  // typing whom to chat with, and the request's status stream
	scrRequests               // incoming chat requests
	scrChat                   // the conversation
)

// Menu entries, in order.
const (
	menuBegin = iota
	menuRequests
	menuQuit
	menuItems
)

// Messages the runtime feeds the model besides keys and client events.
type (
	resizeMsg struct{ w, h int }
	// registeredMsg is the outcome of registering the typed name.
	registeredMsg struct {
		name string
		err  error
		c    *client.Client // for the runtime; the model ignores it
	}
	// reportedMsg: the first latency vector reached Central, so a chat
	// request can be placed.
	reportedMsg struct{}
	// probeMsg carries a probe round's median RTT per server.
	probeMsg struct{ rtt map[string]time.Duration }
	// failedMsg reports a command that failed.
	failedMsg struct {
		cmd cmd
		err error
	}
	// stoppedMsg: the client library stopped (Run returned).
	stoppedMsg struct{ err error }
	// inputClosedMsg: the terminal's input ended.
	inputClosedMsg struct{ err error }
)

// Commands the model asks the runtime to carry out.
type (
	cmd         interface{ isCmd() }
	cmdRegister struct{ name string }
	cmdRequest  struct{ to []string }
	cmdAnswer   struct {
		req    string
		accept bool
	}
	cmdSend   struct{ room, text string }
	cmdLeave  struct{ room string }
	cmdRedraw struct{}
	cmdQuit   struct{}
)

func (cmdRegister) isCmd() {}
func (cmdRequest) isCmd()  {}
func (cmdAnswer) isCmd()   {}
func (cmdSend) isCmd()     {}
func (cmdLeave) isCmd()    {}
func (cmdRedraw) isCmd()   {}
func (cmdQuit) isCmd()     {}

// outgoing is the chat request this user made, with its status stream.
type outgoing struct {
	to     []string
	req    string // empty until ACK_CONN names it
	queued bool   // waiting for the first latency report before it is sent
	steps  []step
	final  bool
}

// step is one status of a request; repeats of AWAITING_REQ are counted
// rather than listed.
type step struct {
	code   proto.StatusCode
	detail string
	room   string
	n      int
}

func (s step) String() string {
	t := s.code.String()
	if s.n > 1 {
		t += fmt.Sprintf(" x%d", s.n)
	}
	if s.room != "" {
		t += " room " + s.room
	}
	if s.detail != "" {
		t += ": " + s.detail
	}
	return t
}

func (o *outgoing) summary() string {
	parts := make([]string, len(o.steps))
	for i, s := range o.steps {
		parts[i] = s.code.String()
		if s.n > 1 {
			parts[i] += fmt.Sprintf(" x%d", s.n)
		}
	}
	return strings.Join(parts, ", ")
}

type lineKind uint8

const (
	lineMsg  lineKind = iota // someone else's message
	lineSelf                 // this user's message
	lineSys                  // what the client has to say
	lineErr                  // something went wrong
)

type chatLine struct {
	kind lineKind
	from string
	text string
}

// maxLines bounds a room's scrollback.
const maxLines = 2000

// room is the chat the user is in.
type room struct {
	id      string
	server  string
	rtt     time.Duration // the room's worst member RTT, as Central placed it
	epoch   uint64
	members []string // everyone but this user
	present map[string]bool
	lines   []chatLine
	input   lineEdit
	scroll  int // rows scrolled back from the bottom
	broken  bool
	closed  string // why Central closed it; empty while open
}

func (r *room) add(kind lineKind, from, text string) {
	r.lines = append(r.lines, chatLine{kind: kind, from: clean(from), text: clean(text)})
	if len(r.lines) > maxLines {
		r.lines = slices.Delete(r.lines, 0, len(r.lines)-maxLines)
	}
}

func (r *room) sys(format string, args ...any) { r.add(lineSys, "", fmt.Sprintf(format, args...)) }

// model is the whole state of the terminal client. update is its only
// mutator and does no I/O; it runs on the runtime's loop goroutine.
type model struct {
	w, h int
	scr  screen

	name        lineEdit
	nameErr     string
	registering bool
	user        string // registered name

	menu     int
	notice   string // one line under the menu, about the last thing that happened
	noticeEr bool

	ctrlUp    bool
	ctrlSeen  bool // the control connection was up at least once
	reported  bool
	probes    map[string]time.Duration
	stoppedBy string

	peers    lineEdit
	beginErr string
	out      *outgoing

	incoming []proto.Incoming
	sel      int

	chat *room
	quit bool
}

func newModel(name string, w, h int) (*model, []cmd) {
	m := &model{w: w, h: h, scr: scrName}
	m.name.max = proto.MaxUser
	m.peers.max = 1024
	if name == "" {
		return m, nil
	}
	m.name.set(name)
	return m, m.submitName()
}

func (m *model) setNotice(err bool, format string, args ...any) {
	m.notice, m.noticeEr = clean(fmt.Sprintf(format, args...)), err
}

// update applies one key or event and returns the commands to carry out.
func (m *model) update(msg any) []cmd {
	switch msg := msg.(type) {
	case key:
		return m.key(msg)
	case resizeMsg:
		m.w, m.h = msg.w, msg.h
		return nil
	case registeredMsg:
		return m.registered(msg)
	case reportedMsg:
		m.reported = true
		if m.out != nil && m.out.queued {
			m.out.queued = false
			return []cmd{cmdRequest{to: m.out.to}}
		}
	case probeMsg:
		m.probes = msg.rtt
	case failedMsg:
		return m.failed(msg)
	case stoppedMsg:
		m.ctrlUp = false
		m.stoppedBy = fmt.Sprint(msg.err)
		m.setNotice(true, "the client stopped: %v", msg.err)
		if m.chat != nil {
			m.chat.add(lineErr, "", "the client stopped: "+fmt.Sprint(msg.err))
		}
	case inputClosedMsg:
		m.quit = true
		return []cmd{cmdQuit{}}
	case client.Event:
		return m.clientEvent(msg)
	}
	return nil
}

func (m *model) key(k key) []cmd {
	if k.code == keyCtrl {
		switch k.r {
		case 'c':
			m.quit = true
			return []cmd{cmdQuit{}}
		case 'l':
			return []cmd{cmdRedraw{}}
		}
	}
	switch m.scr {
	case scrName:
		return m.keyName(k)
	case scrMenu:
		return m.keyMenu(k)
	case scrBegin:
		return m.keyBegin(k)
	case scrRequests:
		return m.keyRequests(k)
	case scrChat:
		return m.keyChat(k)
	}
	return nil
}

func (m *model) keyName(k key) []cmd {
	if m.registering {
		return nil
	}
	if k.code == keyEnter {
		return m.submitName()
	}
	if m.name.edit(k) {
		m.nameErr = ""
	}
	return nil
}

func (m *model) submitName() []cmd {
	name := strings.TrimSpace(m.name.String())
	if err := proto.CheckUser(name); err != nil {
		m.nameErr = strings.TrimPrefix(err.Error(), "proto: ")
		return nil
	}
	m.registering, m.nameErr = true, ""
	return []cmd{cmdRegister{name: name}}
}

func (m *model) registered(r registeredMsg) []cmd {
	m.registering = false
	if r.err == nil {
		m.user, m.scr = r.name, scrMenu
		return nil
	}
	var ae *centralapi.Error
	switch {
	case errors.As(r.err, &ae) && ae.Code == centralapi.CodeNameTaken:
		m.nameErr = fmt.Sprintf("%q is taken: someone with that name is online. Choose another name.", r.name)
	case errors.As(r.err, &ae):
		m.nameErr = fmt.Sprintf("Central refused %q: %s", r.name, ae.Message)
	default:
		m.nameErr = fmt.Sprintf("cannot register: %v (Enter to try again)", r.err)
	}
	m.nameErr = clean(m.nameErr)
	return nil
}

func (m *model) keyMenu(k key) []cmd {
	switch {
	case k.code == keyUp || k == runeKey('k'):
		m.menu = (m.menu + menuItems - 1) % menuItems
	case k.code == keyDown || k == runeKey('j') || k.code == keyTab:
		m.menu = (m.menu + 1) % menuItems
	case k.code == keyHome:
		m.menu = 0
	case k.code == keyEnd:
		m.menu = menuItems - 1
	case k == runeKey('q'):
		m.quit = true
		return []cmd{cmdQuit{}}
	case k.code == keyEnter:
		switch m.menu {
		case menuBegin:
			m.scr, m.beginErr = scrBegin, ""
		case menuRequests:
			m.scr = scrRequests
			m.sel = min(m.sel, max(len(m.incoming)-1, 0))
		case menuQuit:
			m.quit = true
			return []cmd{cmdQuit{}}
		}
	}
	return nil
}

func (m *model) keyBegin(k key) []cmd {
	switch k.code {
	case keyEsc:
		m.scr = scrMenu
		return nil
	case keyEnter:
		return m.submitRequest()
	}
	if m.peers.edit(k) {
		m.beginErr = ""
	}
	return nil
}

// parsePeers reads "bob, carol" into names, checking each.
func parsePeers(s, self string) ([]string, error) {
	var names []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if err := proto.CheckUser(p); err != nil {
			return nil, errors.New(strings.TrimPrefix(err.Error(), "proto: "))
		}
		if p == self {
			return nil, errors.New("that is you: type someone else's name")
		}
		if slices.Contains(names, p) {
			return nil, fmt.Errorf("%s is listed twice", p)
		}
		names = append(names, p)
	}
	if len(names) == 0 {
		return nil, errors.New("type one or more user names, separated by commas")
	}
	return names, nil
}

func (m *model) submitRequest() []cmd {
	if m.out != nil && !m.out.final {
		m.beginErr = "a request is under way: wait for its outcome (or Esc)"
		return nil
	}
	names, err := parsePeers(m.peers.String(), m.user)
	if err != nil {
		m.beginErr = err.Error()
		return nil
	}
	m.beginErr = ""
	m.out = &outgoing{to: names, queued: !m.reported}
	if m.out.queued {
		return nil
	}
	return []cmd{cmdRequest{to: names}}
}

func (m *model) keyRequests(k key) []cmd {
	switch {
	case k.code == keyEsc:
		m.scr = scrMenu
	case k.code == keyUp || k == runeKey('k'):
		m.sel = max(m.sel-1, 0)
	case k.code == keyDown || k == runeKey('j'):
		m.sel = max(min(m.sel+1, len(m.incoming)-1), 0)
	case k.code == keyEnter || k == runeKey('a') || k == runeKey('d'):
		if len(m.incoming) == 0 {
			return nil
		}
		in := m.incoming[m.sel]
		m.removeIncoming(in.Req)
		accept := k != runeKey('d')
		if accept {
			m.setNotice(false, "accepted %s's request; waiting for the room...", in.From)
			m.scr = scrMenu
		} else {
			m.setNotice(false, "declined %s's request", in.From)
		}
		return []cmd{cmdAnswer{req: in.Req, accept: accept}}
	}
	return nil
}

func (m *model) removeIncoming(req string) (proto.Incoming, bool) {
	i := slices.IndexFunc(m.incoming, func(in proto.Incoming) bool { return in.Req == req })
	if i < 0 {
		return proto.Incoming{}, false
	}
	in := m.incoming[i]
	m.incoming = slices.Delete(m.incoming, i, i+1)
	m.sel = max(min(m.sel, len(m.incoming)-1), 0)
	return in, true
}

func (m *model) keyChat(k key) []cmd {
	r := m.chat
	page := max(m.h-4, 1)
	switch {
	case k.code == keyEsc || k == ctrlKey('d'):
		m.chat, m.scr = nil, scrMenu
		m.setNotice(false, "left room %s", r.id)
		if r.closed != "" {
			return nil
		}
		return []cmd{cmdLeave{room: r.id}}
	case k.code == keyEnter:
		text := r.input.String()
		if strings.TrimSpace(text) == "" {
			return nil
		}
		if r.closed != "" {
			r.add(lineErr, "", "not sent: the room is closed (Esc to go back)")
			return nil
		}
		r.input.clear()
		r.scroll = 0
		r.add(lineSelf, m.user, text)
		return []cmd{cmdSend{room: r.id, text: text}}
	case k.code == keyPgUp:
		r.scroll += page
	case k.code == keyPgDn:
		r.scroll = max(r.scroll-page, 0)
	case k.code == keyUp:
		r.scroll++
	case k.code == keyDown:
		r.scroll = max(r.scroll-1, 0)
	default:
		r.input.edit(k)
	}
	return nil
}

func (m *model) failed(f failedMsg) []cmd {
	switch c := f.cmd.(type) {
	case cmdRequest:
		if m.out != nil && slices.Equal(m.out.to, c.to) && !m.out.final {
			m.out.final = true
			m.out.steps = append(m.out.steps, step{detail: "not sent: " + f.err.Error()})
			m.beginErr = clean("the request was not sent: " + f.err.Error())
		}
	case cmdAnswer:
		m.setNotice(true, "answer not sent: %v", f.err)
	case cmdSend:
		if m.chat != nil && m.chat.id == c.room {
			m.chat.add(lineErr, "", fmt.Sprintf("not sent (%q): %v", c.text, f.err))
		}
	case cmdLeave:
		m.setNotice(true, "leaving room %s: %v", c.room, f.err)
	default:
		m.setNotice(true, "%v", f.err)
	}
	return nil
}

func (m *model) clientEvent(ev client.Event) []cmd {
	switch e := ev.(type) {
	case client.Status:
		m.status(e.Status)
	case client.Incoming:
		if !slices.ContainsFunc(m.incoming, func(in proto.Incoming) bool { return in.Req == e.Req }) {
			m.incoming = append(m.incoming, e.Incoming)
		}
		if m.chat != nil {
			m.chat.sys("chat request from %s: leave this chat (Esc) and View chat requests to answer", e.From)
		} else {
			m.setNotice(false, "chat request from %s: View chat requests to answer", e.From)
		}
	case client.RoomReady:
		return m.roomReady(e)
	case client.Moved:
		if m.chat != nil && m.chat.id == e.Room {
			a := e.Assign
			m.chat.server, m.chat.rtt, m.chat.epoch, m.chat.broken = e.To.ID, a.RTT, e.Epoch, false
			for _, u := range e.Members {
				m.chat.present[u] = true
			}
			m.chat.sys("%s", moveLine(a, e.Took))
		}
	case client.Message, client.Presence, client.Missed, client.Broken, client.Drained:
		m.roomEvent(e)
	case client.RoomClosed:
		if m.chat != nil && m.chat.id == e.Room {
			m.chat.closed = "closed"
			if e.Reason != "" {
				m.chat.closed = e.Reason
			}
			m.chat.add(lineErr, "", "the room was closed: "+m.chat.closed+" (Esc to go back)")
		}
	case client.Connected:
		if m.ctrlSeen && !m.ctrlUp {
			m.say(false, "control connection to Central restored")
		}
		m.ctrlUp, m.ctrlSeen = true, true
	case client.Disconnected:
		if m.ctrlUp {
			m.say(true, fmt.Sprintf("control connection to Central lost (%v); reconnecting", e.Err))
		}
		m.ctrlUp = false
	case client.Error:
		if e.Room != "" {
			m.roomEvent(e)
		} else {
			m.say(true, "Central: "+e.Err.Error())
		}
	}
	return nil
}

// say reports something in the chat if one is open, else as the notice.
func (m *model) say(isErr bool, text string) {
	if m.chat != nil {
		kind := lineSys
		if isErr {
			kind = lineErr
		}
		m.chat.add(kind, "", text)
		return
	}
	m.setNotice(isErr, "%s", text)
}

// moveLine describes a move, as "moved to serv1: 62 ms -> 41 ms (reason)".
func moveLine(a proto.Assign, took time.Duration) string {
	s := "moved to " + a.Server.ID
	switch {
	case a.PrevRTT > 0 && a.RTT > 0:
		s += fmt.Sprintf(": %s -> %s", fmtMS(a.PrevRTT), fmtMS(a.RTT))
	case a.RTT > 0:
		s += ": " + fmtMS(a.RTT)
	}
	var why []string
	if a.Reason != "" {
		why = append(why, a.Reason)
	}
	if a.Prev != "" {
		why = append(why, "from "+a.Prev)
	}
	if took > 0 {
		why = append(why, "switched in "+fmtMS(took))
	}
	if len(why) > 0 {
		s += " (" + strings.Join(why, ", ") + ")"
	}
	return s
}

// fmtMS rounds d to whole milliseconds.
func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}

func (m *model) status(st proto.Status) {
	if st.Code.Final() {
		if in, ok := m.removeIncoming(st.Req); ok {
			if st.Code != proto.ReqAccepted {
				m.say(false, fmt.Sprintf("%s's request ended: %s %s", in.From, st.Code, st.Detail))
			}
			return
		}
	}
	o := m.out
	if o == nil || o.final || !(o.req == st.Req || (o.req == "" && st.Code == proto.AckConn)) {
		return
	}
	o.req = st.Req
	if n := len(o.steps); n > 0 && st.Code == proto.AwaitingReq && o.steps[n-1].code == proto.AwaitingReq {
		o.steps[n-1].n++
	} else {
		o.steps = append(o.steps, step{code: st.Code, detail: clean(st.Detail), room: clean(st.Room), n: 1})
	}
	if !st.Code.Final() {
		return
	}
	o.final = true
	if st.Code != proto.ReqAccepted {
		m.say(true, fmt.Sprintf("request to %s: %s", strings.Join(o.to, ", "), o.steps[len(o.steps)-1]))
	}
}

func (m *model) roomReady(e client.RoomReady) []cmd {
	if m.chat != nil && m.chat.id != e.Room {
		m.chat.sys("left room %s at once: you are already in a chat", e.Room)
		return []cmd{cmdLeave{room: e.Room}}
	}
	a := e.Assign
	r := &room{id: e.Room, server: a.Server.ID, rtt: a.RTT, epoch: a.Epoch, present: map[string]bool{}}
	r.input.max = proto.MaxText
	for _, u := range a.Members {
		if u != m.user {
			r.members = append(r.members, u)
		}
	}
	sort.Strings(r.members)
	for _, u := range e.Present {
		r.present[u] = true
	}
	if o := m.out; o != nil && o.req != "" && len(o.steps) > 0 && o.steps[len(o.steps)-1].room == e.Room {
		r.sys("request %s: %s", o.req, o.summary())
		m.out = nil
	}
	r.sys("chat with %s on %s (RTT %s); Esc or Ctrl-D leaves", strings.Join(r.members, ", "), a.Server.ID, fmtMS(a.RTT))
	m.chat, m.scr, m.notice = r, scrChat, ""
	return nil
}

// roomEvent applies an event of the open chat's room; those of rooms
// already left are dropped.
func (m *model) roomEvent(ev client.Event) {
	r := m.chat
	if r == nil || r.id != roomOf(ev) {
		return
	}
	switch e := ev.(type) {
	case client.Message:
		r.add(lineMsg, e.From, e.Text)
	case client.Presence:
		if r.present[e.User] == e.Here {
			return
		}
		r.present[e.User] = e.Here
		if e.Here {
			r.sys("%s is here (on %s)", e.User, e.Server)
		} else {
			r.sys("%s left %s", e.User, e.Server)
		}
	case client.Missed:
		r.add(lineErr, "", fmt.Sprintf("missed messages %d-%d of %s: %s", e.First, e.Last, e.From, e.Reason))
	case client.Broken:
		r.broken = true
		r.add(lineErr, "", fmt.Sprintf("connection to %s lost (%v); waiting for Central to move the room", e.Server.ID, e.Err))
	case client.Error:
		r.add(lineErr, "", e.Err.Error())
	}
}

// roomOf returns the room of a room event.
func roomOf(ev client.Event) string {
	switch e := ev.(type) {
	case client.Message:
		return e.Room
	case client.Presence:
		return e.Room
	case client.Missed:
		return e.Room
	case client.Broken:
		return e.Room
	case client.Drained:
		return e.Room
	case client.Error:
		return e.Room
	}
	return ""
}
