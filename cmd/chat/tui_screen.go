package main

import (
	"io"
	"strconv"
)

// Escape sequences the client uses; every terminal emulator in use today
// (xterm and its descendants, tmux, the Linux console) understands them.
const (
	escAltScreen = "\x1b[?1049h" // save the screen and switch to a blank one
	escMainScr   = "\x1b[?1049l" // back to the saved screen
	escPasteOn   = "\x1b[?2004h" // bracketed paste: a paste comes between ESC [200~ and ESC [201~
	escPasteOff  = "\x1b[?2004l"
	escHideCur   = "\x1b[?25l"
	escShowCur   = "\x1b[?25h"
	escClear     = "\x1b[2J"
	escReset     = "\x1b[0m"
	escEraseEOL  = "\x1b[K"
)

func (s style) sgr() string {
	switch s {
	case stBar:
		return "\x1b[7m"
	case stSel:
		return "\x1b[1;7m"
	case stTitle, stSelf:
		return "\x1b[1m"
	case stDim:
		return "\x1b[2m"
	case stSys:
		return "\x1b[36m"
	case stErr:
		return "\x1b[31m"
	}
	return ""
}

// painter turns frames into terminal output, rewriting only the rows that
// changed since the last frame. Not safe for concurrent use: the runtime's
// loop goroutine owns it.
type painter struct {
	w    io.Writer
	prev []string
	pw   int
	ph   int
	buf  []byte
}

// encodeRow is the bytes that draw r on a row of width w, from column 1.
func encodeRow(r row, w int) string {
	text := fit(r.text, w)
	out := r.st.sgr() + text
	if r.st != stPlain {
		out += escReset
	}
	// Erasing from a cursor that sits past the last column would erase
	// that column in some terminals, so only a short row erases its rest.
	if textWidth(text) < w {
		out += escEraseEOL
	}
	return out
}

// paint draws f; full forgets what is on the screen and draws everything.
func (p *painter) paint(f frame, full bool) error {
	b := append(p.buf[:0], escHideCur...)
	if full || f.w != p.pw || f.h != p.ph {
		b = append(b, escReset+escClear...)
		p.prev = p.prev[:0]
		p.pw, p.ph = f.w, f.h
	}
	for i, r := range f.rows {
		enc := encodeRow(r, f.w)
		if i < len(p.prev) && p.prev[i] == enc {
			continue
		}
		b = appendMove(b, i, 0)
		b = append(b, enc...)
		if i < len(p.prev) {
			p.prev[i] = enc
		} else {
			p.prev = append(p.prev, enc)
		}
	}
	if f.cursor {
		b = appendMove(b, f.crow, f.ccol)
		b = append(b, escShowCur...)
	}
	p.buf = b
	_, err := p.w.Write(b)
	return err
}

// appendMove positions the cursor at 0-based row and column.
func appendMove(b []byte, row, col int) []byte {
	b = append(b, "\x1b["...)
	b = strconv.AppendInt(b, int64(row+1), 10)
	b = append(b, ';')
	b = strconv.AppendInt(b, int64(col+1), 10)
	return append(b, 'H')
}
