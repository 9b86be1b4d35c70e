package main

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
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
		name   string
		err    error
		token  string         // to take the name back after a crash
		online bool           // with a taken name: its holder is online
		c      *client.Client // for the runtime; the model ignores it
	}
	// reportedMsg: the first latency vector reached Central, so a chat
	// request can be placed.
	reportedMsg struct{}
	// probeMsg carries a probe round's median RTT per server.
	probeMsg struct{ rtt map[string]time.Duration }
	// sentMsg: the room's session numbered line id's message num.
	sentMsg struct {
		room string
		id   int
		num  uint64
	}
	// ackedMsg: the server acknowledged the room's messages up to num.
	ackedMsg struct {
		room string
		num  uint64
	}
	// onlineMsg lists the users online now, for picking a peer.
	onlineMsg struct {
		names []string
		more  bool
		err   string // why the list is not known (Central refused, say for its rate)
	}
	// tickMsg comes a few times a second: time-based changes to the screen.
	tickMsg struct{ now time.Time }
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
	cmdSend struct {
		room, text string
		id         int // the line that shows it, for its pending mark
	}
	cmdLeave  struct{ room string }
	cmdRedraw struct{}
	cmdOnline struct{} // fetch the users online now
	cmdQuit   struct{}
)

func (cmdRegister) isCmd() {}
func (cmdRequest) isCmd()  {}
func (cmdAnswer) isCmd()   {}
func (cmdSend) isCmd()     {}
func (cmdLeave) isCmd()    {}
func (cmdRedraw) isCmd()   {}
func (cmdOnline) isCmd()   {}
func (cmdQuit) isCmd()     {}

// outgoing is the chat request this user made, with its status stream.
type outgoing struct {
	to     []string
	req    string // empty until ACK_CONN names it
	queued bool   // waiting for the first latency report before it is sent
	steps  []step
	final  bool
	since  time.Time     // when it was made
	waited time.Duration // how long it has waited for an answer, as of the last tick
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
	t := statusText(s.code)
	if s.detail != "" && s.code.Final() && s.code != proto.ReqAccepted {
		t += ": " + s.detail
	}
	return t
}

func (o *outgoing) summary() string {
	parts := make([]string, len(o.steps))
	for i, s := range o.steps {
		parts[i] = statusText(s.code)
	}
	return strings.Join(parts, ", ")
}

// statusText says what a request status means to the person who made it.
func statusText(c proto.StatusCode) string {
	switch c {
	case proto.AckConn:
		return "Central has the request"
	case proto.ReqSent:
		return "asked"
	case proto.AwaitingReq:
		return "waiting for an answer"
	case proto.ReqAccepted:
		return "accepted"
	case proto.UserNotFound:
		return "not online"
	case proto.ServerErr:
		return "no chat server can host the chat"
	case proto.ReqDeclined:
		return "declined"
	case proto.ReqTimeout:
		return "no answer in time"
	case proto.ReqInvalid:
		return "not a valid request"
	case 0:
		return "not sent"
	}
	return "status " + strconv.Itoa(int(c))
}

type lineKind uint8

const (
	lineMsg  lineKind = iota // someone else's message
	lineSelf                 // this user's message
	lineSys                  // what the client has to say
	lineErr                  // something went wrong
)

type chatLine struct {
	kind    lineKind
	from    string
	text    string
	at      time.Time
	id      int    // own lines: the id cmdSend carries
	num     uint64 // own lines: the session's message number, once known
	pending bool   // own lines: not yet acknowledged by the server
	seq     uint64 // numbers the room's lines from 1, as they were added
}

// leaveGrace is how long a member may be off the room's server before the
// chat says they left: long enough for a move, which they may follow first.
const leaveGrace = 3 * time.Second

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
	gone    map[string]time.Time // members who left the room's server, and when
	lines   []chatLine
	input   lineEdit
	// scroll is how many rows the view was scrolled back from the bottom
	// by the last scrolling key, 0 while it follows the latest. Scrolled
	// back, the view is anchored to a line (its seq) and a row of it, so
	// that what arrives below does not move the rows being read (a view
	// counted from the bottom did): back tells the rows below it now.
	scroll    int
	anchor    uint64
	anchorRow int
	seq       uint64 // the last line's seq
	unread    int    // lines that arrived while scrolled back
	broken    bool
	lostAt    time.Time // when the connection to the room's server broke
	closed    string    // why Central closed it; empty while open
	leaving   bool      // asking whether to leave
	history   []string  // lines this user sent, oldest first
	hist      int       // position in history while browsing it; len(history) when not
	draft     string    // the unsent input, kept while browsing history
	nextID    int
	now       func() time.Time
}

func (r *room) add(kind lineKind, from, text string) *chatLine {
	if kind == lineSys || kind == lineErr {
		// Built from names, ids and error texts of the network: each
		// part is clipped where it is put in, and the whole line bounded.
		text = clip(text, 4*maxDetailCols)
	}
	r.seq++
	r.lines = append(r.lines, chatLine{kind: kind, from: clipName(from), text: clean(text), at: r.now(), seq: r.seq})
	if len(r.lines) > maxLines {
		r.lines = slices.Delete(r.lines, 0, len(r.lines)-maxLines)
	}
	if r.scroll > 0 {
		r.unread++
	}
	return &r.lines[len(r.lines)-1]
}

// withWhom names the other members for a sentence; all may have left.
func (r *room) withWhom() string {
	if len(r.members) == 0 {
		return "nobody else"
	}
	return clipNames(r.members)
}

func (r *room) sys(format string, args ...any) { r.add(lineSys, "", fmt.Sprintf(format, args...)) }

// pending reports whether any of this user's lines awaits acknowledgement.
func (r *room) pending() bool {
	return slices.ContainsFunc(r.lines, func(l chatLine) bool { return l.pending })
}

// model is the whole state of the terminal client. update is its only
// mutator and does no I/O; it runs on the runtime's loop goroutine.
type model struct {
	w, h int
	scr  screen

	name        lineEdit
	nameErr     string
	registering bool
	user        string // registered name
	token       string // the session's token, shown to take the name back

	menu     int
	notice   string // one line under the menu, about the last thing that happened
	noticeEr bool

	ctrlUp    bool
	ctrlSeen  bool // the control connection was up at least once
	reported  bool
	probes    map[string]time.Duration
	stoppedBy string

	peers      lineEdit
	beginErr   string
	online     []string // users online now, this one excepted
	completing string   // the prefix Tab completes from
	more       bool     // more are online than listed
	onlineErr  string   // why the last listing failed; "" once one came
	out        *outgoing

	incoming []proto.Incoming
	sel      int
	// accepted are the requests this user accepted whose outcome has not
	// come yet: placing the room can still fail, and the user must hear
	// it rather than wait for a chat that never opens.
	accepted []proto.Incoming

	chat *room
	quit bool

	confirmQuit bool             // asking whether to quit
	leaving     string           // quitting: what the exit waits for, shown in the bottom bar
	tls         bool             // Central and the chat servers are reached over TLS
	now         func() time.Time // the clock for timestamps; tests fix it
}

func newModel(name string, w, h int) (*model, []cmd) {
	m := &model{w: w, h: h, scr: scrName, now: time.Now}
	m.name.max = 256 // a memory bound: longer names are refused with the limit, not cut
	m.peers.max = 1024
	if name == "" {
		return m, nil
	}
	m.name.set(name)
	return m, m.submitName()
}

func (m *model) setNotice(err bool, format string, args ...any) {
	m.notice, m.noticeEr = clip(fmt.Sprintf(format, args...), 4*maxDetailCols), err
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
	case tickMsg:
		if o := m.out; o != nil && !o.final {
			o.waited = msg.now.Sub(o.since)
		}
		if r := m.chat; r != nil {
			var left []string
			for u, at := range r.gone {
				if msg.now.Sub(at) >= leaveGrace {
					left = append(left, u)
					delete(r.gone, u)
				}
			}
			sort.Strings(left)
			for _, u := range left {
				r.sys("%s left the chat", clipName(u))
				// Gone for good, not moving: off the header, which
				// listed them as away until the chat closed. Should
				// they come back, their presence adds them again.
				r.members = slices.DeleteFunc(r.members, func(v string) bool { return v == u })
				delete(r.present, u)
			}
		}
	case onlineMsg:
		m.onlineErr = clipDetail(msg.err)
		if msg.err != "" {
			break // keep the last list, if any
		}
		m.online = slices.DeleteFunc(msg.names, func(u string) bool { return u == m.user })
		m.more = msg.more
	case sentMsg:
		if r := m.chat; r != nil && r.id == msg.room {
			for i := range r.lines {
				if r.lines[i].id == msg.id && r.lines[i].kind == lineSelf {
					r.lines[i].num = msg.num
				}
			}
		}
	case ackedMsg:
		if r := m.chat; r != nil && r.id == msg.room {
			for i := range r.lines {
				if l := &r.lines[i]; l.pending && l.num > 0 && l.num <= msg.num {
					l.pending = false
				}
			}
		}
	case stoppedMsg:
		m.ctrlUp = false
		m.stoppedBy = clipDetail(fmt.Sprint(msg.err))
		m.setNotice(true, "the client stopped: %s", m.stoppedBy)
		if m.chat != nil {
			m.chat.add(lineErr, "", "the client stopped: "+m.stoppedBy)
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
		m.nameErr = nameProblem(name)
		return nil
	}
	m.registering, m.nameErr = true, ""
	return []cmd{cmdRegister{name: name}}
}

func (m *model) registered(r registeredMsg) []cmd {
	m.registering = false
	if r.err == nil {
		m.user, m.token, m.scr = r.name, r.token, scrMenu
		return nil
	}
	var ae *centralapi.Error
	switch {
	case errors.As(r.err, &ae) && ae.Code == centralapi.CodeNameTaken && r.online:
		m.nameErr = fmt.Sprintf("%q is taken: someone with that name is online. Choose another name.", r.name)
	case errors.As(r.err, &ae) && ae.Code == centralapi.CodeNameTaken:
		m.nameErr = fmt.Sprintf("%q is not free yet: %s. Choose another name, or wait.", r.name, clipDetail(ae.Message))
	case errors.As(r.err, &ae):
		m.nameErr = fmt.Sprintf("Central refused %q: %s", r.name, clipDetail(ae.Message))
	default:
		m.nameErr = fmt.Sprintf("%s (Enter to try again)", clipDetail(r.err.Error()))
	}
	m.nameErr = clean(m.nameErr)
	return nil
}

func (m *model) keyMenu(k key) []cmd {
	if m.confirmQuit {
		m.confirmQuit = false
		if k == runeKey('y') || k.code == keyEnter {
			m.quit = true
			return []cmd{cmdQuit{}}
		}
		return nil
	}
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
		m.confirmQuit = true
	case k.code == keyEnter:
		switch m.menu {
		case menuBegin:
			m.scr, m.beginErr = scrBegin, ""
			return []cmd{cmdOnline{}}
		case menuRequests:
			m.scr = scrRequests
			m.sel = min(m.sel, max(len(m.incoming)-1, 0))
		case menuQuit:
			m.confirmQuit = true
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
	case keyTab:
		m.complete()
		return nil
	}
	if m.peers.edit(k) {
		m.beginErr = ""
	}
	return nil
}

// complete replaces the name being typed (after the last comma) with the
// next online user it is a prefix of, cycling on each Tab.
func (m *model) complete() {
	text := m.peers.String()
	head, word := "", text
	if i := strings.LastIndex(text, ","); i >= 0 {
		head, word = text[:i+1]+" ", strings.TrimSpace(text[i+1:])
	}
	var match []string
	for _, u := range m.online {
		if strings.HasPrefix(u, m.completing) {
			match = append(match, u)
		}
	}
	if len(match) == 0 || !slices.Contains(match, word) {
		m.completing = word
		match = match[:0]
		for _, u := range m.online {
			if strings.HasPrefix(u, word) {
				match = append(match, u)
			}
		}
		if len(match) == 0 {
			m.beginErr = "nobody online starts with " + strconv.Quote(word)
			return
		}
		m.peers.set(head + match[0])
		return
	}
	i := slices.Index(match, word)
	m.peers.set(head + match[(i+1)%len(match)])
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
	m.out = &outgoing{to: names, queued: !m.reported, since: m.now()}
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
			m.accepted = append(m.accepted, in)
			if len(m.accepted) > maxIncoming {
				m.accepted = slices.Delete(m.accepted, 0, len(m.accepted)-maxIncoming)
			}
			m.setNotice(false, "accepted %s's request; waiting for the room...", clipName(in.From))
			m.scr = scrMenu
		} else {
			m.setNotice(false, "declined %s's request", clipName(in.From))
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
	if r.leaving {
		r.leaving = false
		if k == runeKey('y') || k.code == keyEnter {
			return m.leave()
		}
		return nil
	}
	switch {
	case k.code == keyEsc && r.scroll > 0:
		r.scroll, r.unread = 0, 0
	case k.code == keyEsc || k == ctrlKey('d'):
		if r.closed != "" {
			return m.leave()
		}
		r.leaving = true
	case k.code == keyEnter:
		text := r.input.String()
		if strings.TrimSpace(text) == "" {
			return nil
		}
		if r.closed != "" {
			r.add(lineErr, "", "not sent: the chat is closed (Esc to go back)")
			return nil
		}
		if n := len(text); n > proto.MaxText {
			r.add(lineErr, "", fmt.Sprintf("not sent: the message is %d bytes, the limit is %d; shorten it (it is still in the input line)", n, proto.MaxText))
			return nil
		}
		r.input.clear()
		r.scroll, r.unread = 0, 0
		r.history = append(r.history, text)
		r.hist, r.draft = len(r.history), ""
		r.nextID++
		l := r.add(lineSelf, m.user, text)
		l.id, l.pending = r.nextID, true
		return []cmd{cmdSend{room: r.id, text: text, id: r.nextID}}
	case k.code == keyPgUp || k.code == keyPgDn:
		if k.code == keyPgDn {
			page = -page
		}
		height := m.h - 3 // as viewChat draws it
		all, first := r.layout(m.w)
		r.scrollTo(r.back(all, first, height)+page, m.w, height)
	case k.code == keyEnd && r.scroll > 0:
		r.scroll, r.unread = 0, 0
	case k.code == keyUp:
		if r.hist > 0 {
			if r.hist == len(r.history) {
				r.draft = r.input.String()
			}
			r.hist--
			r.input.set(r.history[r.hist])
		}
	case k.code == keyDown:
		if r.hist < len(r.history) {
			r.hist++
			if r.hist == len(r.history) {
				r.input.set(r.draft)
			} else {
				r.input.set(r.history[r.hist])
			}
		}
	default:
		r.input.edit(k)
	}
	return nil
}

// leave closes the chat and goes back to the menu.
func (m *model) leave() []cmd {
	r := m.chat
	m.chat, m.scr = nil, scrMenu
	m.setNotice(false, "left the chat with %s", r.withWhom())
	if r.closed != "" {
		return nil
	}
	return []cmd{cmdLeave{room: r.id}}
}

func (m *model) failed(f failedMsg) []cmd {
	switch c := f.cmd.(type) {
	case cmdRequest:
		if m.out != nil && slices.Equal(m.out.to, c.to) && !m.out.final {
			m.out.final = true
			m.out.steps = append(m.out.steps, step{detail: "not sent: " + clipDetail(f.err.Error())})
			m.beginErr = "the request was not sent: " + clipDetail(f.err.Error())
		}
	case cmdAnswer:
		m.setNotice(true, "answer not sent: %v", f.err)
	case cmdSend:
		if m.chat != nil && m.chat.id == c.room {
			for i := range m.chat.lines {
				if l := &m.chat.lines[i]; l.kind == lineSelf && l.id == c.id {
					l.pending = false
				}
			}
			m.chat.add(lineErr, "", fmt.Sprintf("not sent (%q): %v", c.text, f.err))
		}
	case cmdLeave:
		m.setNotice(true, "leaving the chat: %v", f.err)
	default:
		m.setNotice(true, "%v", f.err)
	}
	return nil
}

// maxIncoming bounds the chat requests listed: Central lets at most 32
// wait on a user, and a list without bound, scanned at every request,
// took a terminal past a core after 200,000 (abuse probe, 2026-12-03).
const maxIncoming = 256

func (m *model) clientEvent(ev client.Event) []cmd {
	switch e := ev.(type) {
	case client.Status:
		m.status(e.Status)
	case client.Incoming:
		if !slices.ContainsFunc(m.incoming, func(in proto.Incoming) bool { return in.Req == e.Req }) {
			m.incoming = append(m.incoming, e.Incoming)
			if len(m.incoming) > maxIncoming {
				m.incoming = slices.Delete(m.incoming, 0, len(m.incoming)-maxIncoming) // the oldest go
				m.sel = min(m.sel, len(m.incoming)-1)
			}
		}
		if m.chat != nil {
			m.chat.sys("chat request from %s: leave this chat (Esc) and View chat requests to answer", clipName(e.From))
		} else {
			m.setNotice(false, "chat request from %s: View chat requests to answer", clipName(e.From))
		}
	case client.RoomReady:
		return m.roomReady(e)
	case client.Moved:
		if m.chat != nil && m.chat.id == e.Room {
			r := m.chat
			line := moveLine(r.server, e, r.lostAt, m.now())
			r.server, r.rtt, r.epoch, r.broken, r.lostAt = e.To.ID, e.Assign.RTT, e.Epoch, false, time.Time{}
			for _, u := range e.Members {
				r.present[u] = true
				delete(r.gone, u)
			}
			r.sys("%s", line)
		}
	case client.Message, client.Presence, client.Missed, client.Broken, client.Resumed, client.Drained:
		m.roomEvent(e)
	case client.RoomClosed:
		if m.chat != nil && m.chat.id == e.Room {
			m.chat.closed = "closed"
			if e.Reason != "" {
				m.chat.closed = clipDetail(e.Reason)
			}
			m.chat.add(lineErr, "", "the room was closed: "+m.chat.closed+" (Esc to go back)")
		}
	case client.Connected:
		if m.ctrlSeen && !m.ctrlUp {
			m.say(false, "control connection to Central restored")
		}
		m.ctrlUp, m.ctrlSeen = true, true
	case client.Disconnected:
		switch {
		case m.ctrlUp:
			m.say(true, fmt.Sprintf("control connection to Central lost (%s); reconnecting", clipDetail(e.Err.Error())))
		case !m.ctrlSeen:
			// Never connected: say why, rather than "connecting" forever.
			m.say(true, fmt.Sprintf("cannot reach Central's control port (%s); retrying", clipDetail(e.Err.Error())))
		}
		m.ctrlUp = false
	case client.Error:
		if e.Room != "" {
			m.roomEvent(e)
		} else {
			m.say(true, "Central: "+clipDetail(e.Err.Error()))
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

// moveLine says what a move means to the person in the chat, who was on
// server from: why the chat moved, and what it changed for them.
func moveLine(from string, e client.Moved, lostAt, now time.Time) string {
	a := e.Assign
	from, to := clipName(from), clipName(e.To.ID)
	var s string
	switch {
	case strings.HasPrefix(a.Reason, "better server"):
		s = fmt.Sprintf("the chat moved to %s, a closer server", to)
		if a.PrevRTT > 0 && a.RTT > 0 {
			s += fmt.Sprintf(": the slowest member's round trip went from %s to %s", fmtMS(a.PrevRTT), fmtMS(a.RTT))
		}
	case strings.Contains(a.Reason, "draining"):
		s = fmt.Sprintf("%s is shutting down; the chat moved to %s", from, to)
	case strings.Contains(a.Reason, "down") || !lostAt.IsZero():
		s = fmt.Sprintf("%s stopped answering; the chat moved to %s", from, to)
		if !lostAt.IsZero() {
			s += fmt.Sprintf(" after %s without a server", fmtDur(now.Sub(lostAt)))
		}
	default:
		s = "the chat moved to " + to
		if a.Reason != "" {
			s += " (" + clipDetail(a.Reason) + ")"
		}
	}
	if e.Took > 0 {
		s += fmt.Sprintf("; nothing lost (switched in %s)", fmtMS(e.Took))
	}
	return s
}

// fmtDur rounds d for a person: "850 ms", "10.2 s".
func fmtDur(d time.Duration) string {
	if d < time.Second {
		return fmtMS(d)
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// fmtMS rounds d to whole milliseconds.
func fmtMS(d time.Duration) string {
	if d > 0 && d < time.Millisecond {
		return "<1 ms"
	}
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}

func (m *model) status(st proto.Status) {
	if st.Code.Final() {
		if in, ok := m.removeIncoming(st.Req); ok {
			switch st.Code {
			case proto.ReqAccepted:
			case proto.ReqTimeout:
				m.say(false, fmt.Sprintf("%s's chat request expired: you did not answer in time", clipName(in.From)))
			default:
				m.say(false, fmt.Sprintf("%s's chat request ended: %s", clipName(in.From), step{code: st.Code, detail: statusDetail(st)}))
			}
			return
		}
		if i := slices.IndexFunc(m.accepted, func(in proto.Incoming) bool { return in.Req == st.Req }); i >= 0 {
			in := m.accepted[i]
			m.accepted = slices.Delete(m.accepted, i, i+1)
			if st.Code != proto.ReqAccepted { // accepted: the room's arrival says it
				m.say(true, fmt.Sprintf("you accepted %s's chat request, but the chat could not start: %s", clipName(in.From), step{code: st.Code, detail: statusDetail(st)}))
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
		o.steps = append(o.steps, step{code: st.Code, detail: statusDetail(st), room: st.Room, n: 1})
	}
	if !st.Code.Final() {
		return
	}
	o.final = true
	if st.Code != proto.ReqAccepted {
		m.say(true, fmt.Sprintf("request to %s: %s", clipNames(o.to), o.steps[len(o.steps)-1]))
	}
}

// statusDetail is a request status's detail as the person is shown it.
func statusDetail(st proto.Status) string {
	if st.Code == proto.ServerErr {
		return placementProblem(st.Detail)
	}
	return clipDetail(st.Detail)
}

// placementProblem is what the person is told of why Central could not
// place a room. Central words it for people ("no chat server can host this
// room: all 2 chat servers are full"), its error chain going to its log,
// and the part after its prefix is what is new to the person, who asked
// for a chat. A detail in other words shows its first part only.
func placementProblem(detail string) string {
	d, ok := strings.CutPrefix(detail, "no chat server can host this room")
	if ok {
		d, ok = strings.CutPrefix(d, ": ")
		if !ok {
			return "" // Central's own fault: the status's text says enough
		}
	}
	if i := strings.Index(d, ": "); i > 0 {
		d = d[:i] // any causes behind are for a log
	}
	return clipDetail(d)
}

func (m *model) roomReady(e client.RoomReady) []cmd {
	if m.chat != nil && m.chat.id != e.Room {
		m.chat.sys("left room %s at once: you are already in a chat", clipName(e.Room))
		return []cmd{cmdLeave{room: e.Room}}
	}
	a := e.Assign
	r := &room{id: e.Room, server: a.Server.ID, rtt: a.RTT, epoch: a.Epoch, present: map[string]bool{}, gone: map[string]time.Time{}, now: m.now}
	// A memory bound only: a longer message is refused with the limit on
	// Enter, never cut.
	r.input.max = 1 << 20
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
		m.out = nil
	}
	r.sys("chat with %s on %s; Esc or Ctrl-D leaves", clipNames(r.members), clipName(a.Server.ID))
	var away []string
	for _, u := range r.members {
		if !r.present[u] {
			away = append(away, u)
		}
	}
	if len(away) > 0 {
		r.sys("waiting for %s to join", clipNames(away))
	}
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
		if !slices.Contains(r.members, e.User) && e.Here {
			r.members = append(r.members, e.User)
			sort.Strings(r.members)
		}
		if e.Here {
			if _, moving := r.gone[e.User]; moving {
				delete(r.gone, e.User) // it was a move, not a leave
				return
			}
			r.sys("%s joined the chat", clipName(e.User))
		} else {
			// A member who follows a move leaves this server a moment
			// before we do: say "left" only if they do not turn up.
			r.gone[e.User] = m.now()
		}
	case client.Missed:
		r.add(lineErr, "", fmt.Sprintf("missed messages %d-%d of %s: %s", e.First, e.Last, clipName(e.From), clipDetail(e.Reason)))
	case client.Broken:
		if !r.broken {
			r.lostAt = m.now()
		}
		r.broken = true
		r.add(lineErr, "", fmt.Sprintf("lost the connection to %s (%v); your messages wait and go out once Central moves the chat to a working server", clipName(e.Server.ID), clipDetail(e.Err.Error())))
	case client.Resumed:
		r.broken, r.lostAt = false, time.Time{}
		r.sys("%s answers again after %s", clipName(e.Server.ID), fmtDur(e.After))
	case client.Error:
		r.add(lineErr, "", clipDetail(e.Err.Error()))
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
	case client.Resumed:
		return e.Room
	case client.Drained:
		return e.Room
	case client.Error:
		return e.Room
	}
	return ""
}
