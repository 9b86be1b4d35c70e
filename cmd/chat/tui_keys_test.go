package main

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

func TestDecodeKeys(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		flush bool
		want  []key
		used  int // -1: all of in
	}{
		{"letters", "ab", false, []key{runeKey('a'), runeKey('b')}, -1},
		{"enter CR", "\r", false, []key{codeKey(keyEnter)}, -1},
		{"enter LF", "\n", false, []key{codeKey(keyEnter)}, -1},
		{"backspace DEL", "\x7f", false, []key{codeKey(keyBackspace)}, -1},
		{"backspace BS", "\x08", false, []key{codeKey(keyBackspace)}, -1},
		{"tab", "\t", false, []key{codeKey(keyTab)}, -1},
		{"ctrl-c", "\x03", false, []key{ctrlKey('c')}, -1},
		{"ctrl-d", "\x04", false, []key{ctrlKey('d')}, -1},
		{"ctrl-a", "\x01", false, []key{ctrlKey('a')}, -1},
		{"NUL and FS dropped", "\x00\x1c", false, nil, -1},
		{"up CSI", "\x1b[A", false, []key{codeKey(keyUp)}, -1},
		{"down CSI", "\x1b[B", false, []key{codeKey(keyDown)}, -1},
		{"right CSI", "\x1b[C", false, []key{codeKey(keyRight)}, -1},
		{"left CSI", "\x1b[D", false, []key{codeKey(keyLeft)}, -1},
		{"up SS3", "\x1bOA", false, []key{codeKey(keyUp)}, -1},
		{"down SS3", "\x1bOB", false, []key{codeKey(keyDown)}, -1},
		{"home SS3", "\x1bOH", false, []key{codeKey(keyHome)}, -1},
		{"end SS3", "\x1bOF", false, []key{codeKey(keyEnd)}, -1},
		{"home CSI H", "\x1b[H", false, []key{codeKey(keyHome)}, -1},
		{"end CSI F", "\x1b[F", false, []key{codeKey(keyEnd)}, -1},
		{"home 1~", "\x1b[1~", false, []key{codeKey(keyHome)}, -1},
		{"home 7~", "\x1b[7~", false, []key{codeKey(keyHome)}, -1},
		{"end 4~", "\x1b[4~", false, []key{codeKey(keyEnd)}, -1},
		{"end 8~", "\x1b[8~", false, []key{codeKey(keyEnd)}, -1},
		{"delete", "\x1b[3~", false, []key{codeKey(keyDelete)}, -1},
		{"page up", "\x1b[5~", false, []key{codeKey(keyPgUp)}, -1},
		{"page down", "\x1b[6~", false, []key{codeKey(keyPgDn)}, -1},
		{"ctrl-right with modifier", "\x1b[1;5C", false, []key{codeKey(keyRight)}, -1},
		{"unknown CSI dropped", "\x1b[2~x", false, []key{runeKey('x')}, -1},
		{"F1 SS3 dropped", "\x1bOP", false, nil, -1},
		{"keys in one read", "a\x1b[Ab\r", false, []key{runeKey('a'), codeKey(keyUp), runeKey('b'), codeKey(keyEnter)}, -1},
		{"lone ESC waits", "\x1b", false, nil, 0},
		{"lone ESC flushed", "\x1b", true, []key{codeKey(keyEsc)}, -1},
		{"ESC ESC", "\x1b\x1b", false, []key{codeKey(keyEsc)}, 1},
		{"ESC ESC flushed", "\x1b\x1b", true, []key{codeKey(keyEsc), codeKey(keyEsc)}, -1},
		{"alt-x is Esc then x", "\x1bx", false, []key{codeKey(keyEsc), runeKey('x')}, -1},
		{"cut CSI waits", "a\x1b[", false, []key{runeKey('a')}, 1},
		{"cut CSI params waits", "\x1b[1;5", false, nil, 0},
		{"cut CSI flushed", "\x1b[", true, []key{codeKey(keyEsc), runeKey('[')}, -1},
		{"cut SS3 waits", "\x1bO", false, nil, 0},
		{"ESC [ then control byte", "\x1b[\r", false, []key{codeKey(keyEsc), runeKey('['), codeKey(keyEnter)}, -1},
		{"overlong CSI dropped", "\x1b[" + string(make([]byte, 0)) + "11111111111111111111111111111111111111A", false, []key{runeKey('1'), runeKey('1'), runeKey('1'), runeKey('1'), runeKey('1'), runeKey('1'), runeKey('1'), runeKey('1'), runeKey('A')}, -1},
		{"utf-8", "é日", false, []key{runeKey('é'), runeKey('日')}, -1},
		{"cut utf-8 waits", "x\xe6\x97", false, []key{runeKey('x')}, 1},
		{"invalid utf-8 dropped", "\xff\xfeok", false, []key{runeKey('o'), runeKey('k')}, -1},
		{"C1 control dropped", "\u009bA", false, []key{runeKey('A')}, -1},
		// Bracketed paste: a line break in a paste used to be Enter.
		{"paste", "\x1b[200~hi\r\nyou\tall\x1b[201~\r", false, append(pasted("hi you all"), codeKey(keyEnter)), -1},
		{"paste line breaks", "\x1b[200~a\nb\rc\r\r\x1b[201~", false, pasted("a b c  "), -1},
		{"paste drops keys", "\x1b[200~a\x03\x1b[Ab\x7f\x1b[201~", false, pasted("ab"), -1},
		{"paste end cut waits", "\x1b[200~a\x1b[20", false, pasted("a"), 7},
		{"paste end alone", "\x1b[201~x", false, []key{runeKey('x')}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n := decodeKeys([]byte(tt.in), tt.flush)
			want := tt.used
			if want < 0 {
				want = len(tt.in)
			}
			if !slices.Equal(got, tt.want) || n != want {
				t.Errorf("decodeKeys(%q, %v) = %v, %d; want %v, %d", tt.in, tt.flush, got, n, tt.want, want)
			}
		})
	}
}

// pasted is s as a bracketed paste decodes it.
func pasted(s string) []key {
	var keys []key
	for _, r := range s {
		keys = append(keys, key{code: keyRune, r: r, paste: true})
	}
	return keys
}

// FuzzDecodeKeys checks that decoding never panics, always makes progress
// when flushing, and that feeding the input split in two gives the same keys
// as feeding it whole.
func FuzzDecodeKeys(f *testing.F) {
	for _, s := range []string{"a\x1b[A", "\x1b[1;5C", "\x1bOA\x1b", "é\x1b[3~", "\x1b[5~x", "\x1b[200~a\r\nb\x1b[201~\r"} {
		f.Add([]byte(s), 1)
	}
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		whole, n := decodeKeys(b, true)
		if n != len(b) {
			t.Fatalf("flush used %d of %d bytes", n, len(b))
		}
		if len(b) == 0 {
			return
		}
		cut = (cut%len(b) + len(b)) % len(b)
		var d keyDecoder // one decoder for both reads, as readKeys has
		first, used := d.decode(b[:cut], false)
		rest, _ := d.decode(append(append([]byte(nil), b[used:cut]...), b[cut:]...), true)
		split := append(first, rest...)
		if !slices.Equal(whole, split) {
			t.Fatalf("%q cut at %d: whole %v, split %v", b, cut, whole, split)
		}
	})
}

// chunkReader returns one chunk per Read, waiting on gate before each.
type chunkReader struct {
	chunks []string
	gate   chan struct{}
}

func (r *chunkReader) Read(p []byte) (int, error) {
	<-r.gate
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks = r.chunks[1:]
	return n, nil
}

func TestReadKeys(t *testing.T) {
	gate := make(chan struct{})
	r := &chunkReader{chunks: []string{"a\x1b", "[A", "\x1b"}, gate: gate}
	keys := make(chan key, 16)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go readKeys(r, func(k key) { keys <- k }, func(err error) { errc <- err }, done)
	next := func() key {
		t.Helper()
		select {
		case k := <-keys:
			return k
		case <-time.After(5 * time.Second):
			t.Fatal("no key within 5s")
			return key{}
		}
	}
	gate <- struct{}{}
	if k := next(); k != runeKey('a') {
		t.Fatalf("first key %v, want a", k)
	}
	// The sequence split across reads is still one key when its rest comes
	// before escWait.
	gate <- struct{}{}
	if k := next(); k != codeKey(keyUp) {
		t.Fatalf("split sequence gave %v, want Up", k)
	}
	// A lone ESC becomes Esc after escWait.
	start := time.Now()
	gate <- struct{}{}
	if k := next(); k != codeKey(keyEsc) {
		t.Fatalf("lone ESC gave %v, want Esc", k)
	}
	t.Logf("lone ESC decoded after %v (escWait %v)", time.Since(start), escWait)
	if d := time.Since(start); d < escWait/2 {
		t.Errorf("lone ESC decoded after %v, before escWait %v", d, escWait)
	}
	close(gate)
	select {
	case err := <-errc:
		if !errors.Is(err, io.EOF) {
			t.Errorf("end of input: %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("end of input not reported")
	}
}

// TestPasteAcrossReads: a paste split across reads stays a paste, its CR
// LF split too; one whose end marker never comes ends when input comes
// after a pause of pasteIdle, so Enter works again.
func TestPasteAcrossReads(t *testing.T) {
	var d keyDecoder
	t0 := time.Date(2026, 12, 4, 14, 0, 0, 0, time.UTC)
	var got []key
	read := func(at time.Duration, s string) {
		d.arrived(t0.Add(at))
		keys, n := d.decode([]byte(s), false)
		if n != len(s) {
			t.Fatalf("%q: used %d bytes", s, n)
		}
		got = append(got, keys...)
	}
	read(0, "\x1b[200~one\r")
	read(10*time.Millisecond, "\ntwo\r")
	read(20*time.Millisecond, "three") // no end marker
	read(20*time.Millisecond+pasteIdle, "\r")
	want := append(pasted("one two three"), codeKey(keyEnter))
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
