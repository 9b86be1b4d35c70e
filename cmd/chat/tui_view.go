package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"nearchat/pkg/proto"
)

// style is how a whole row is drawn.
type style uint8

const (
	stPlain style = iota
	stBar         // header and footer: reverse video across the width
	stSel         // the selected menu entry or request
	stTitle
	stDim
	stSys
	stErr
	stSelf
)

// row is one screen row: its text (already cut to the width) and style.
type row struct {
	text string
	st   style
}

// frame is a whole screen: exactly h rows, and where the cursor goes.
type frame struct {
	w, h       int
	rows       []row
	cursor     bool
	crow, ccol int
}

// minimum size below which only a warning is drawn.
const minW, minH = 20, 6

// view draws the model. It is a pure function of the model.
func (m *model) view() frame {
	f := m.screen()
	if m.leaving != "" && len(f.rows) > 0 && f.h >= minH {
		// Quitting: the bottom bar says what the exit waits for.
		f.rows[len(f.rows)-1] = row{text: pad(" "+fit(m.leaving, f.w-1), f.w), st: stBar}
		f.cursor = false
	}
	return f
}

func (m *model) screen() frame {
	f := frame{w: max(m.w, 0), h: max(m.h, 0)}
	if f.w < minW || f.h < minH {
		f.rows = make([]row, f.h)
		if f.h > 0 {
			f.rows[0] = row{text: fit("window too small", f.w), st: stErr}
		}
		return f
	}
	var body []row
	var hint string
	switch m.scr {
	case scrName:
		body, hint = m.viewName(&f)
	case scrMenu:
		body, hint = m.viewMenu()
	case scrBegin:
		body, hint = m.viewBegin(&f)
	case scrRequests:
		body, hint = m.viewRequests()
	case scrChat:
		return m.viewChat()
	}
	// On a short window, scroll the body up so the input row still shows.
	if last := f.h - 2; f.cursor && f.crow > last {
		shift := f.crow - last
		body, f.crow = body[shift:], last
	}
	f.rows = make([]row, 0, f.h)
	f.rows = append(f.rows, row{text: spread(" nearchat"+m.title(), m.connState()+" ", f.w), st: stBar})
	for _, r := range body {
		if len(f.rows) == f.h-1 {
			break
		}
		r.text = fit(r.text, f.w)
		f.rows = append(f.rows, r)
	}
	for len(f.rows) < f.h-1 {
		f.rows = append(f.rows, row{})
	}
	f.rows = append(f.rows, row{text: pad(" "+hint, f.w), st: stBar})
	return f
}

func (m *model) title() string {
	switch m.scr {
	case scrMenu:
		return " · menu"
	case scrBegin:
		return " · begin a chat"
	case scrRequests:
		return fmt.Sprintf(" · chat requests (%d)", len(m.incoming))
	}
	return ""
}

func (m *model) connState() string {
	switch {
	case m.user == "":
		return ""
	case m.stoppedBy != "":
		return m.user + " · stopped"
	case m.ctrlUp:
		return m.user + " · online"
	case m.ctrlSeen:
		return m.user + " · reconnecting"
	}
	return m.user + " · connecting"
}

func (m *model) viewName(f *frame) ([]row, string) {
	body := []row{
		{},
		{text: "  Welcome to nearchat.", st: stTitle},
		{},
		{text: "  Choose a user name: 1 to 32 letters, digits, '.', '_' or '-'."},
		{},
	}
	line, col := m.name.view(prompt(f.w, "  Your user name: ", "  Name: ", "> "), f.w)
	f.cursor, f.crow, f.ccol = !m.registering, len(body)+1, col
	body = append(body, row{text: line}, row{})
	switch {
	case m.registering:
		body = append(body, row{text: "  Registering " + clean(m.name.String()) + " with Central...", st: stDim})
	case m.nameErr != "":
		for _, l := range wrap(m.nameErr, f.w-4) {
			body = append(body, row{text: "  " + l, st: stErr})
		}
	}
	return body, "Enter: continue · Ctrl-C: quit"
}

// prompt is the first of prompts that leaves an input at least
// promptRoom columns of a w-column row, or the last: at 20 columns "Your
// user name: " left 2, and a typed name showed its last letter alone.
func prompt(w int, prompts ...string) string {
	for _, p := range prompts {
		if w-textWidth(p) >= promptRoom {
			return p
		}
	}
	return prompts[len(prompts)-1]
}

const promptRoom = 12

func (m *model) menuLabel(i int) string {
	switch i {
	case menuBegin:
		return "Begin a chat"
	case menuRequests:
		l := fmt.Sprintf("View chat requests (%d)", len(m.incoming))
		if textWidth(l)+5 > m.w {
			// The count matters most: at 20 columns it was cut away.
			l = fmt.Sprintf("Requests (%d)", len(m.incoming))
		}
		return l
	}
	return "Quit"
}

func (m *model) viewMenu() ([]row, string) {
	body := []row{{}}
	for i := range menuItems {
		if i == m.menu {
			body = append(body, row{text: "  > " + m.menuLabel(i) + " ", st: stSel})
		} else {
			body = append(body, row{text: "    " + m.menuLabel(i)})
		}
	}
	body = append(body, row{})
	if o := m.out; o != nil {
		body = append(body, row{text: "  Your request to " + clipNames(o.to) + ": " + o.progress(), st: stDim})
	}
	if m.notice != "" {
		st := stSys
		if m.noticeEr {
			st = stErr
		}
		for _, l := range wrap(m.notice, m.w-4) {
			body = append(body, row{text: "  " + l, st: st})
		}
	}
	body = append(body, row{}, row{text: "  " + m.probeLine(), st: stDim})
	if m.token != "" {
		// On a line of its own: 64 hex digits behind the sentence did
		// not fit 80 or 100 columns, and a cut token is no use.
		body = append(body, row{}, row{text: "  To take your name back after a crash, start with -token", st: stDim},
			row{text: "  " + m.token, st: stDim})
	}
	hint := "Up/Down or k/j: move · Enter: choose · q: quit"
	if m.confirmQuit {
		hint = "Quit nearchat? y: quit · any other key: stay"
	}
	return body, hint
}

func (o *outgoing) progress() string {
	switch {
	case o.queued:
		return "waiting for the first latency measurement"
	case len(o.steps) == 0:
		return "sending"
	}
	return o.summary()
}

// probeLine lists the measured servers, best first.
func (m *model) probeLine() string {
	if len(m.probes) == 0 {
		if m.reported {
			return "No chat server measured."
		}
		return "Measuring the round-trip time to the chat servers..."
	}
	ids := make([]string, 0, len(m.probes))
	for id := range m.probes {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		if d := m.probes[a] - m.probes[b]; d != 0 {
			return int(d / max(d.Abs(), 1))
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = clipName(id) + " " + fmtMS(m.probes[id])
	}
	return "RTT: " + strings.Join(parts, " · ")
}

func (m *model) viewBegin(f *frame) ([]row, string) {
	body := []row{
		{},
		{text: "  Chat with (one or more user names, separated by commas):"},
	}
	line, col := m.peers.view("  > ", f.w)
	f.cursor, f.crow, f.ccol = true, len(body)+1, col
	body = append(body, row{text: line})
	if m.beginErr != "" {
		for _, l := range wrap(m.beginErr, f.w-4) {
			body = append(body, row{text: "  " + l, st: stErr})
		}
	}
	if len(m.online) > 0 {
		list := "  Online now: " + clipNames(m.online)
		if m.more {
			list += ", ..."
		}
		for _, l := range wrap(list+" (Tab completes a name)", f.w-2) {
			body = append(body, row{text: l, st: stDim})
		}
	} else if m.onlineErr != "" {
		for _, l := range wrap("  Who is online is not known right now ("+clipDetail(m.onlineErr)+"); type the name.", f.w-2) {
			body = append(body, row{text: l, st: stDim})
		}
	} else if m.online != nil {
		body = append(body, row{text: "  Nobody else is online right now.", st: stDim})
	}
	body = append(body, row{})
	if o := m.out; o != nil {
		body = append(body, row{text: "  Request to " + clipNames(o.to) + ":", st: stTitle})
		if o.queued {
			body = append(body, row{text: "    waiting for the first latency measurement...", st: stDim})
		}
		// Keep the newest steps when they do not all fit.
		room := max(f.h-len(body)-3, 1)
		steps := o.steps
		if len(steps) > room {
			steps = steps[len(steps)-room:]
		}
		for _, s := range steps {
			st := stPlain
			if s.code.Final() {
				st = stSys
				if s.code != proto.ReqAccepted {
					st = stErr
				}
			}
			text := "    " + s.String()
			if s.code == proto.AwaitingReq && !o.final && o.waited >= time.Second {
				text += fmt.Sprintf(" (%d s so far)", int(o.waited.Seconds()))
			}
			body = append(body, row{text: text, st: st})
		}
	}
	return body, "Enter: send the request · Tab: complete a name · Esc: back"
}

func (m *model) viewRequests() ([]row, string) {
	body := []row{{}}
	if len(m.incoming) == 0 {
		body = append(body, row{text: "  No pending chat requests.", st: stDim})
	}
	for i, in := range m.incoming {
		text := "  " + clipName(in.From)
		var others []string
		for _, u := range in.Members {
			if u != in.From && u != m.user {
				others = append(others, clipName(u))
			}
		}
		if len(others) > 0 {
			text += " (with " + strings.Join(others, ", ") + ")"
		}
		if i == m.sel {
			body = append(body, row{text: "> " + text[2:] + " ", st: stSel})
		} else {
			body = append(body, row{text: text})
		}
	}
	if m.notice != "" {
		body = append(body, row{}, row{text: "  " + m.notice, st: stSys})
	}
	return body, "Up/Down: choose · Enter/a: accept · d: decline · Esc: back"
}

func (m *model) viewChat() frame {
	r := m.chat
	f := frame{w: m.w, h: m.h, rows: make([]row, 0, m.h)}

	// Header: who is in the chat, where it runs, how fast, how safe.
	who := make([]string, len(r.members))
	for i, u := range r.members {
		who[i] = clipName(u)
		if !r.present[u] {
			who[i] += " (away)"
		}
	}
	where := clipName(r.server)
	switch {
	case r.closed != "":
		where += " (closed)"
	case r.broken:
		where += " (connection lost)"
	}
	speed := ""
	if d, ok := m.probes[r.server]; ok {
		speed = " · you " + fmtMS(d)
		if r.rtt > 0 {
			speed += ", slowest " + fmtMS(r.rtt)
		}
	} else if r.rtt > 0 {
		speed = " · slowest member " + fmtMS(r.rtt)
	}
	if m.tls {
		speed += " · TLS"
	}
	with := strings.Join(who, ", ")
	if len(who) == 0 {
		with = r.withWhom()
	}
	left := fmt.Sprintf(" with %s · on %s%s", with, where, speed)
	f.rows = append(f.rows, row{text: spread(fit(left, m.w-1), m.connState()+" ", m.w), st: stBar})

	// The conversation, bottom-aligned, scrolled back to the line the user
	// was reading.
	height := m.h - 3
	all, first := r.layout(m.w)
	scroll := r.back(all, first, height)
	end := len(all) - scroll
	start := max(end-height, 0)
	for range height - (end - start) {
		f.rows = append(f.rows, row{})
	}
	f.rows = append(f.rows, all[start:end]...)

	hint := " Enter: send · Up: history · PgUp: scroll · Esc: leave"
	switch {
	case r.leaving:
		hint = fmt.Sprintf(" Leave the chat with %s? y: leave · any other key: stay", r.withWhom())
	case scroll > 0 && r.unread > 0:
		hint = fmt.Sprintf(" %d new below · scrolled back %d rows · End or Esc: jump to the latest", r.unread, scroll)
	case scroll > 0:
		hint = fmt.Sprintf(" scrolled back %d rows · PgDn: newer · End or Esc: jump to the latest", scroll)
	}
	right := ""
	if n := len(m.incoming); n > 0 {
		right = fmt.Sprintf("requests: %d ", n)
	}
	st := stBar
	if r.leaving {
		st = stSel
	}
	f.rows = append(f.rows, row{text: spread(hint, right, m.w), st: st})
	prompt := "> "
	if n := len(r.input.String()); n > proto.MaxText {
		prompt = fmt.Sprintf("(too long: %d/%d bytes) > ", n, proto.MaxText)
	}
	line, col := r.input.view(prompt, m.w)
	f.rows = append(f.rows, row{text: line})
	f.cursor, f.crow, f.ccol = true, m.h-1, col
	return f
}

// layout wraps the room's lines into rows of w columns, with a hanging
// indent under the time; first[i] is the row line i starts on.
func (r *room) layout(w int) (all []row, first []int) {
	first = make([]int, len(r.lines))
	for i, l := range r.lines {
		first[i] = len(all)
		var text string
		st := stPlain
		switch l.kind {
		case lineMsg:
			text = l.from + ": " + l.text
		case lineSelf:
			text, st = l.from+": "+l.text, stSelf
			if l.pending {
				text += " [sending]"
			}
		case lineSys:
			text, st = "* "+l.text, stSys
		case lineErr:
			text, st = "! "+l.text, stErr
		}
		stamp := l.at.Format("15:04") + " "
		for j, t := range wrap(text, w-len(stamp)) {
			if j > 0 {
				stamp = strings.Repeat(" ", len(stamp))
			}
			all = append(all, row{text: stamp + t, st: st})
		}
	}
	return all, first
}

// back returns how many of the rows all (laid out by layout) lie below a
// view of height rows: 0 when it follows the latest; when scrolled back,
// those under the anchored row, so lines that arrive, lines whose
// "[sending]" goes, a new width, leave the rows read where they were.
func (r *room) back(all []row, first []int, height int) int {
	if r.scroll == 0 || len(all) == 0 {
		return 0
	}
	at := 0 // the anchored line was dropped from the scrollback: its top
	i := sort.Search(len(r.lines), func(i int) bool { return r.lines[i].seq >= r.anchor })
	if i < len(r.lines) && r.lines[i].seq == r.anchor {
		last := len(all) - 1
		if i+1 < len(first) {
			last = first[i+1] - 1
		}
		at = min(first[i]+r.anchorRow, last)
	}
	return min(len(all)-1-at, max(len(all)-height, 0))
}

// scrollTo scrolls the chat view of width w and height rows to n rows back
// from the bottom (within the lines there are), anchored to the row then
// at the view's bottom.
func (r *room) scrollTo(n, w, height int) {
	all, first := r.layout(w)
	n = min(max(n, 0), max(len(all)-height, 0))
	r.scroll = n
	if n == 0 {
		r.unread = 0
		return
	}
	at := len(all) - 1 - n
	i := sort.Search(len(first), func(i int) bool { return first[i] > at }) - 1
	r.anchor, r.anchorRow = r.lines[i].seq, at-first[i]
}
