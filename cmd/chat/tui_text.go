package main

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// runeWidth is the number of terminal columns r takes: 0 for combining
// marks and format characters, 2 for East Asian wide characters and most
// emoji, 1 otherwise. A small table instead of a dependency: a character it
// gets wrong costs a column of alignment, never a garbled screen, because
// every row is repositioned absolutely.
func runeWidth(r rune) int {
	switch {
	case r == 0:
		return 0
	case r < 0x300:
		return 1
	case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) || unicode.Is(unicode.Cf, r):
		return 0
	case r >= 0x1100 && r <= 0x115f,
		r >= 0x2e80 && r <= 0x303e,
		r >= 0x3041 && r <= 0x33ff,
		r >= 0x3400 && r <= 0x4dbf,
		r >= 0x4e00 && r <= 0x9fff,
		r >= 0xa000 && r <= 0xa4cf,
		r >= 0xac00 && r <= 0xd7a3,
		r >= 0xf900 && r <= 0xfaff,
		r >= 0xfe30 && r <= 0xfe4f,
		r >= 0xff00 && r <= 0xff60,
		r >= 0xffe0 && r <= 0xffe6,
		r >= 0x1f300 && r <= 0x1f64f,
		r >= 0x1f900 && r <= 0x1f9ff,
		r >= 0x20000 && r <= 0x3fffd:
		return 2
	}
	return 1
}

// textWidth is the number of columns s takes.
func textWidth(s string) int {
	n := 0
	for _, r := range s {
		n += runeWidth(r)
	}
	return n
}

// clean makes text from the network safe to print: control characters
// (which could move the cursor or recolour the screen) and bidirectional
// controls (which could make text read other than it is, or reorder the
// rest of the row) become U+FFFD, and tabs and line breaks become spaces.
func clean(s string) string {
	ok := true
	for _, r := range s {
		if unsafeRune(r) || r == '\uFFFD' {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r' || r == '\u2028' || r == '\u2029':
			return ' '
		case unsafeRune(r):
			return '\uFFFD'
		}
		return r
	}, s)
}

// unsafeRune reports whether r must not reach the terminal as it is.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
		return true
	case r == '\u061c', r == '\u200e', r == '\u200f', // arabic letter mark, LRM, RLM
		r >= '\u202a' && r <= '\u202e', // embeddings and overrides
		r >= '\u2066' && r <= '\u2069', // isolates
		r == '\u2028' || r == '\u2029': // line and paragraph separators
		return true
	}
	return false
}

// Bounds on what one name or one detail from the network may take on the
// screen. A valid user name or server id has at most 32 characters; the
// rest is a peer's or a server's to choose, and a megabyte "name" must not
// fill the screen or the row it sits in.
const (
	maxNameCols   = 40
	maxDetailCols = 300
)

// clip cleans s and cuts it to at most n columns, ending with "…" when it
// was longer. Zero-width runes count too (at most 4n runes), so a string
// of combining marks cannot stack without bound on one cell.
func clip(s string, n int) string {
	cols, runes := 0, 0
	for i, r := range s {
		cols += runeWidth(r)
		runes++
		if cols > n || runes > 4*n {
			return clean(fit(s[:i], n-1)) + "…"
		}
	}
	return clean(s)
}

// clipName is a user name, server id or room id from the network, safe to print.
func clipName(s string) string { return clip(s, maxNameCols) }

// clipDetail is an error or detail text from the network, safe to print.
func clipDetail(s string) string { return clip(s, maxDetailCols) }

// clipNames joins names from the network for printing.
func clipNames(names []string) string {
	out := make([]string, len(names))
	for i, u := range names {
		out[i] = clipName(u)
	}
	return strings.Join(out, ", ")
}

// fit cuts s to at most w columns.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	n := 0
	for i, r := range s {
		rw := runeWidth(r)
		if n+rw > w {
			return s[:i]
		}
		n += rw
	}
	return s
}

// pad cuts or fills s with spaces to exactly w columns.
func pad(s string, w int) string {
	s = fit(s, w)
	if n := textWidth(s); n < w {
		s += strings.Repeat(" ", w-n)
	}
	return s
}

// spread puts left and right on one row of w columns, right-aligned; when
// both do not fit, right gives way.
func spread(left, right string, w int) string {
	lw, rw := textWidth(left), textWidth(right)
	if lw+1+rw > w {
		return pad(left, w)
	}
	return left + strings.Repeat(" ", w-lw-rw) + right
}

// wrap breaks s into rows of at most w columns, at spaces where it can.
func wrap(s string, w int) []string {
	if w <= 0 {
		return nil
	}
	var rows []string
	for textWidth(s) > w {
		cut := len(fit(s, w))
		if cut == 0 { // one character wider than the row
			_, cut = utf8.DecodeRuneInString(s)
		}
		if sp := strings.LastIndexByte(s[:cut], ' '); sp > 0 && cut < len(s) && s[cut] != ' ' {
			cut = sp
		}
		rows = append(rows, strings.TrimRight(s[:cut], " "))
		s = strings.TrimLeft(s[cut:], " ")
	}
	if s == "" && len(rows) > 0 {
		return rows
	}
	return append(rows, s)
}

// lineEdit is a one-line text editor: runes and a cursor position.
type lineEdit struct {
	buf []rune
	pos int
	max int // limit in bytes of UTF-8; 0 means none
}

func (e *lineEdit) String() string { return string(e.buf) }

func (e *lineEdit) set(s string) {
	e.buf = []rune(s)
	e.pos = len(e.buf)
}

func (e *lineEdit) clear() { e.buf, e.pos = e.buf[:0], 0 }

// edit applies an editing key and reports whether it was one.
func (e *lineEdit) edit(k key) bool {
	switch k.code {
	case keyRune:
		if e.max > 0 && len(string(e.buf))+len(string(k.r)) > e.max {
			return true
		}
		e.buf = append(e.buf, 0)
		copy(e.buf[e.pos+1:], e.buf[e.pos:])
		e.buf[e.pos] = k.r
		e.pos++
	case keyBackspace:
		if e.pos > 0 {
			e.buf = append(e.buf[:e.pos-1], e.buf[e.pos:]...)
			e.pos--
		}
	case keyDelete:
		if e.pos < len(e.buf) {
			e.buf = append(e.buf[:e.pos], e.buf[e.pos+1:]...)
		}
	case keyLeft:
		e.pos = max(e.pos-1, 0)
	case keyRight:
		e.pos = min(e.pos+1, len(e.buf))
	case keyHome:
		e.pos = 0
	case keyEnd:
		e.pos = len(e.buf)
	case keyCtrl:
		switch k.r {
		case 'a':
			e.pos = 0
		case 'e':
			e.pos = len(e.buf)
		case 'u': // erase to the start, as in a shell
			e.buf = append(e.buf[:0], e.buf[e.pos:]...)
			e.pos = 0
		case 'k':
			e.buf = e.buf[:e.pos]
		case 'w':
			i := e.pos
			for i > 0 && e.buf[i-1] == ' ' {
				i--
			}
			for i > 0 && e.buf[i-1] != ' ' {
				i--
			}
			e.buf = append(e.buf[:i], e.buf[e.pos:]...)
			e.pos = i
		default:
			return false
		}
	default:
		return false
	}
	return true
}

// view renders the editor into w columns after prefix, scrolled so the
// cursor shows; it returns the row and the cursor's column.
func (e *lineEdit) view(prefix string, w int) (string, int) {
	avail := w - textWidth(prefix)
	if avail < 2 {
		return fit(prefix, w), min(textWidth(prefix), max(w-1, 0))
	}
	// Start far enough right that the cursor, plus one column for it,
	// fits in avail.
	start, used := e.pos, 1
	for start > 0 {
		rw := runeWidth(e.buf[start-1])
		if used+rw > avail {
			break
		}
		used += rw
		start--
	}
	col := textWidth(prefix) + textWidth(string(e.buf[start:e.pos]))
	return prefix + fit(clean(string(e.buf[start:])), avail), col
}
