package main

import (
	"slices"
	"strings"
	"testing"
)

func TestTextHelpers(t *testing.T) {
	t.Run("width", func(t *testing.T) {
		for _, tt := range []struct {
			s string
			w int
		}{{"abc", 3}, {"日本", 4}, {"e\u0301", 1}, {"", 0}, {"😀x", 3}} {
			if got := textWidth(tt.s); got != tt.w {
				t.Errorf("textWidth(%q) = %d, want %d", tt.s, got, tt.w)
			}
		}
	})
	t.Run("fit and pad", func(t *testing.T) {
		for _, tt := range []struct {
			s       string
			w       int
			fit, pd string
		}{
			{"hello", 3, "hel", "hel"},
			{"hi", 4, "hi", "hi  "},
			{"日本語", 5, "日本", "日本 "},
			{"x", 0, "", ""},
		} {
			if got := fit(tt.s, tt.w); got != tt.fit {
				t.Errorf("fit(%q, %d) = %q, want %q", tt.s, tt.w, got, tt.fit)
			}
			if got := pad(tt.s, tt.w); got != tt.pd {
				t.Errorf("pad(%q, %d) = %q, want %q", tt.s, tt.w, got, tt.pd)
			}
		}
	})
	t.Run("spread", func(t *testing.T) {
		if got := spread("ab", "cd", 8); got != "ab    cd" {
			t.Errorf("spread = %q", got)
		}
		if got := spread("abcdef", "cd", 8); got != "abcdef  " {
			t.Errorf("spread without room = %q", got)
		}
	})
	t.Run("clean", func(t *testing.T) {
		if got := clean("a\x1b[2Jb\tc\nd\u009b"); got != "a\uFFFD[2Jb c d\uFFFD" {
			t.Errorf("clean = %q", got)
		}
		if got := clean("plain é"); got != "plain é" {
			t.Errorf("clean changed plain text: %q", got)
		}
		if got := clean("a\u202eb\u2067c\u200fd\u2028e"); got != "a\uFFFDb\uFFFDc\uFFFDd e" {
			t.Errorf("clean kept a bidi control: %q", got)
		}
	})
	t.Run("clip", func(t *testing.T) {
		for _, tt := range []struct {
			s    string
			n    int
			want string
		}{
			{"serv1", 5, "serv1"},
			{"serv12", 5, "serv…"},
			{"a\x1bbcdef", 4, "a\uFFFDb…"},
			{"日本語", 5, "日本…"},
			{"e" + strings.Repeat("\u0301", 100), 5, "e" + strings.Repeat("\u0301", 19) + "…"},
		} {
			if got := clip(tt.s, tt.n); got != tt.want {
				t.Errorf("clip(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
			}
		}
	})
}

func TestWrap(t *testing.T) {
	tests := []struct {
		name string
		s    string
		w    int
		want []string
	}{
		{"fits", "hello", 10, []string{"hello"}},
		{"at a space", "hello big world", 10, []string{"hello big", "world"}},
		{"long word cut", "abcdefghijkl", 5, []string{"abcde", "fghij", "kl"}},
		{"exact", "abcde", 5, []string{"abcde"}},
		{"wide runes", "日本語です", 4, []string{"日本", "語で", "す"}},
		{"empty", "", 5, []string{""}},
		{"wide rune in one column", "日", 1, []string{"日"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := wrap(tt.s, tt.w)
			if !slices.Equal(got, tt.want) {
				t.Errorf("wrap(%q, %d) = %q, want %q", tt.s, tt.w, got, tt.want)
			}
		})
	}
}

func TestLineEdit(t *testing.T) {
	type step struct {
		k    key
		text string
		pos  int
	}
	typeText := func(s string) []key {
		var ks []key
		for _, r := range s {
			ks = append(ks, runeKey(r))
		}
		return ks
	}
	tests := []struct {
		name  string
		start string
		keys  []key
		text  string
		pos   int
	}{
		{"type", "", typeText("héllo"), "héllo", 5},
		{"backspace at end", "abc", []key{codeKey(keyBackspace)}, "ab", 2},
		{"backspace at start does nothing", "abc", []key{codeKey(keyHome), codeKey(keyBackspace)}, "abc", 0},
		{"insert in the middle", "ac", []key{codeKey(keyLeft), runeKey('b')}, "abc", 2},
		{"left stops at 0", "a", []key{codeKey(keyLeft), codeKey(keyLeft)}, "a", 0},
		{"right stops at end", "a", []key{codeKey(keyRight)}, "a", 1},
		{"home and end", "abc", []key{codeKey(keyHome), runeKey('x'), codeKey(keyEnd), runeKey('y')}, "xabcy", 5},
		{"delete", "abc", []key{codeKey(keyHome), codeKey(keyDelete)}, "bc", 0},
		{"delete at end", "abc", []key{codeKey(keyDelete)}, "abc", 3},
		{"ctrl-a ctrl-e", "abc", []key{ctrlKey('a'), runeKey('1'), ctrlKey('e'), runeKey('2')}, "1abc2", 5},
		{"ctrl-u", "abc def", []key{codeKey(keyLeft), ctrlKey('u')}, "f", 0},
		{"ctrl-k", "abc def", []key{codeKey(keyHome), codeKey(keyRight), ctrlKey('k')}, "a", 1},
		{"ctrl-w", "abc def  ", []key{ctrlKey('w')}, "abc ", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e lineEdit
			e.set(tt.start)
			for _, k := range tt.keys {
				if !e.edit(k) {
					t.Fatalf("key %v not taken as an edit", k)
				}
			}
			if e.String() != tt.text || e.pos != tt.pos {
				t.Errorf("got %q at %d, want %q at %d", e.String(), e.pos, tt.text, tt.pos)
			}
		})
	}
	t.Run("limit in bytes", func(t *testing.T) {
		e := lineEdit{max: 3}
		for _, k := range typeText("aéb") {
			e.edit(k)
		}
		if e.String() != "aé" {
			t.Errorf("limited editor holds %q, want %q", e.String(), "aé")
		}
	})
	t.Run("not an edit", func(t *testing.T) {
		var e lineEdit
		for _, k := range []key{codeKey(keyEnter), codeKey(keyEsc), codeKey(keyUp), ctrlKey('c')} {
			if e.edit(k) {
				t.Errorf("key %v taken as an edit", k)
			}
		}
	})
	t.Run("view scrolls to the cursor", func(t *testing.T) {
		var e lineEdit
		e.set(strings.Repeat("abcdefghij", 3))
		line, col := e.view("> ", 12)
		if line != "> bcdefghij" || col != 11 {
			t.Errorf("view at end = %q, cursor %d", line, col)
		}
		e.edit(codeKey(keyHome))
		line, col = e.view("> ", 12)
		if line != "> abcdefghij" || col != 2 {
			t.Errorf("view at start = %q, cursor %d", line, col)
		}
	})
}
