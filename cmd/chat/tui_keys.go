package main

import (
	"io"
	"time"
	"unicode/utf8"
)

// keyCode names a decoded key press.
type keyCode uint8

const (
	keyNone keyCode = iota // bytes that mean nothing to the client
	keyRune                // a printable character, in key.r
	keyCtrl                // Ctrl plus a letter, lowercase in key.r
	keyEnter
	keyTab
	keyBackspace
	keyDelete
	keyEsc
	keyUp
	keyDown
	keyLeft
	keyRight
	keyHome
	keyEnd
	keyPgUp
	keyPgDn
	// The bracketed paste markers, ESC [200~ and ESC [201~: the decoder
	// acts on them, and they never reach the model.
	keyPasteStart
	keyPasteEnd
)

// key is one key press as the model sees it.
type key struct {
	code keyCode
	r    rune
	// paste marks a character pasted rather than typed: text for the
	// field being edited, never a command (a pasted "d" must not decline
	// a request, a pasted "y" confirm quitting).
	paste bool
}

func runeKey(r rune) key    { return key{code: keyRune, r: r} }
func ctrlKey(c rune) key    { return key{code: keyCtrl, r: c} }
func codeKey(c keyCode) key { return key{code: c} }

// escWait is how long a lone ESC byte waits for the rest of an escape
// sequence before it counts as the Esc key. Terminals send a sequence in one
// write, so only a slow link splits it.
const escWait = 40 * time.Millisecond

// decodeKeys decodes b with a new decoder: see keyDecoder.decode.
func decodeKeys(b []byte, flush bool) ([]key, int) {
	var d keyDecoder
	return d.decode(b, flush)
}

// keyDecoder decodes the terminal's input, keeping what it must across
// reads: whether a bracketed paste is under way. The terminal client turns
// bracketed paste on, so a pasted line break is not the Enter key: it
// used to send the first line of a paste on its own, the rest going
// into the input line.
type keyDecoder struct {
	pasting bool      // between ESC [200~ and ESC [201~
	cr      bool      // pasting, and the last byte was CR (CR LF is one break)
	last    time.Time // when the last input came
}

// pasteIdle ends a bracketed paste whose end marker never came (lost, or a
// terminal that sent only the start): input after a pause this long is
// typed again, or Enter would never send and Ctrl-C never quit. A paste
// comes in a burst.
const pasteIdle = time.Second

// arrived notes that input came at now, before it is decoded.
func (d *keyDecoder) arrived(now time.Time) {
	if d.pasting && now.Sub(d.last) >= pasteIdle {
		d.pasting = false
	}
	d.last = now
}

// decode decodes as many whole key presses from b as it can and returns
// them with the number of bytes used. The rest (part of an escape sequence
// or of a UTF-8 character) waits for more input, unless flush is set: then
// everything is decoded, a dangling ESC being the Esc key. Pasted text
// comes as characters marked paste, a line break or a tab as a space; the
// other keys in a paste (control characters, escape sequences) are
// dropped, so a paste neither sends nor edits nor quits.
func (d *keyDecoder) decode(b []byte, flush bool) ([]key, int) {
	var keys []key
	i := 0
	for i < len(b) {
		k, n := decodeKey(b[i:], flush)
		if n == 0 {
			break
		}
		c := b[i]
		i += n
		switch {
		case k.code == keyPasteStart:
			d.pasting, d.cr = true, false
			continue
		case k.code == keyPasteEnd:
			d.pasting = false
			continue
		case !d.pasting:
			if k.code != keyNone {
				keys = append(keys, k)
			}
			continue
		}
		afterCR := d.cr
		d.cr = c == '\r'
		switch {
		case k.code == keyRune:
			k.paste = true
		case c == '\n' && afterCR:
			continue
		case c == '\r' || c == '\n' || c == '\t':
			k = key{code: keyRune, r: ' ', paste: true}
		default:
			continue
		}
		keys = append(keys, k)
	}
	return keys, i
}

// decodeKey decodes the key press at the start of b (not empty); n is 0
// when b holds only its beginning and flush is not set.
func decodeKey(b []byte, flush bool) (k key, n int) {
	c := b[0]
	switch {
	case c == 0x1b:
		return decodeEsc(b, flush)
	case c == '\r' || c == '\n':
		return codeKey(keyEnter), 1
	case c == '\t':
		return codeKey(keyTab), 1
	case c == 0x7f || c == 0x08:
		return codeKey(keyBackspace), 1
	case c == 0:
		return key{}, 1
	case c <= 0x1a:
		return ctrlKey(rune('a' + c - 1)), 1
	case c < 0x20:
		return key{}, 1
	case c < 0x80:
		return runeKey(rune(c)), 1
	}
	if !utf8.FullRune(b) && !flush {
		return key{}, 0
	}
	r, size := utf8.DecodeRune(b)
	if r == utf8.RuneError || (r >= 0x80 && r < 0xa0) {
		return key{}, size
	}
	return runeKey(r), size
}

func decodeEsc(b []byte, flush bool) (key, int) {
	if len(b) == 1 {
		if flush {
			return codeKey(keyEsc), 1
		}
		return key{}, 0
	}
	switch b[1] {
	case '[':
		return decodeCSI(b, flush)
	case 'O': // SS3: cursor keys in application mode, as tmux sends them
		if len(b) < 3 {
			if flush {
				return codeKey(keyEsc), 1
			}
			return key{}, 0
		}
		switch b[2] {
		case 'A':
			return codeKey(keyUp), 3
		case 'B':
			return codeKey(keyDown), 3
		case 'C':
			return codeKey(keyRight), 3
		case 'D':
			return codeKey(keyLeft), 3
		case 'H':
			return codeKey(keyHome), 3
		case 'F':
			return codeKey(keyEnd), 3
		case 'M':
			return codeKey(keyEnter), 3
		}
		return key{}, 3
	}
	// ESC then anything else: the Esc key, and the next byte decodes on its
	// own (Alt+x arrives as ESC x).
	return codeKey(keyEsc), 1
}

// maxCSI bounds a control sequence; longer runs are garbage, dropped.
const maxCSI = 32

// decodeCSI decodes ESC [ parameters intermediates final.
func decodeCSI(b []byte, flush bool) (key, int) {
	j := 2
	for ; j < len(b); j++ {
		c := b[j]
		switch {
		case c >= 0x20 && c <= 0x3f:
			if j >= maxCSI {
				return key{}, j
			}
			continue
		case c >= 0x40 && c <= 0x7e:
			return csiKey(b[2:j], c), j + 1
		}
		// Not a control sequence after all: the user pressed Esc, then [.
		return codeKey(keyEsc), 1
	}
	if flush {
		return codeKey(keyEsc), 1
	}
	return key{}, 0
}

func csiKey(params []byte, final byte) key {
	switch final {
	case 'A':
		return codeKey(keyUp)
	case 'B':
		return codeKey(keyDown)
	case 'C':
		return codeKey(keyRight)
	case 'D':
		return codeKey(keyLeft)
	case 'H':
		return codeKey(keyHome)
	case 'F':
		return codeKey(keyEnd)
	case '~':
		// The first parameter names the key; a modifier may follow ";5".
		n := 0
		for _, c := range params {
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int(c-'0')
		}
		switch n {
		case 1, 7:
			return codeKey(keyHome)
		case 4, 8:
			return codeKey(keyEnd)
		case 3:
			return codeKey(keyDelete)
		case 5:
			return codeKey(keyPgUp)
		case 6:
			return codeKey(keyPgDn)
		case 200:
			return codeKey(keyPasteStart)
		case 201:
			return codeKey(keyPasteEnd)
		}
	}
	return key{}
}

// readKeys reads r until it fails or done is closed, decoding key presses
// and handing each to emit; a sequence cut short waits escWait for its
// rest. It returns after r fails (the error is passed to emitErr) or done
// closes. The read itself cannot be interrupted: the goroutine that reads r
// ends with r.
func readKeys(r io.Reader, emit func(key), emitErr func(error), done <-chan struct{}) {
	type chunk struct {
		b   []byte
		err error
	}
	chunks := make(chan chunk)
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := r.Read(buf)
			c := chunk{b: append([]byte(nil), buf[:n]...), err: err}
			select {
			case chunks <- c:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var pend []byte
	var dec keyDecoder
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	decode := func(flush bool) {
		keys, n := dec.decode(pend, flush)
		pend = append(pend[:0], pend[n:]...)
		for _, k := range keys {
			emit(k)
		}
		timer.Stop()
		if len(pend) > 0 {
			timer.Reset(escWait)
		}
	}
	for {
		select {
		case <-done:
			return
		case c := <-chunks:
			dec.arrived(time.Now())
			pend = append(pend, c.b...)
			decode(c.err != nil)
			if c.err != nil {
				emitErr(c.err)
				return
			}
		case <-timer.C:
			decode(true)
		}
	}
}
