package proto_test

import (
	"errors"
	"strings"
	"testing"

	"nearchat/pkg/proto"
)

// TestCheckServer pins the server id rule Central applies at registration
// and bin/chatserver at startup: the two call the same function, so an id
// the server starts with is one Central accepts.
func TestCheckServer(t *testing.T) {
	for _, tc := range []struct {
		name, id string
		ok       bool
	}{
		{"default id", "chat-3002", true},
		{"letters digits dot underscore", "serv_1.eu-west", true},
		{"longest", strings.Repeat("s", proto.MaxServer), true},
		{"empty", "", false},
		{"too long", strings.Repeat("s", proto.MaxServer+1), false},
		{"space", "serv 1", false},
		{"slash", "serv/1", false},
		{"colon, allowed in room ids only", "serv:1", false},
		{"dot", ".", false},
		{"dot dot", "..", false},
		{"non-ASCII", "sérv", false},
		{"Central's name", proto.CentralName, false},
		{"Central's name in capitals", "CENTRAL", false},
		{"longer than Central's name", "central-1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := proto.CheckServer(tc.id)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckServer(%q) = %v, want ok %v", tc.id, err, tc.ok)
			}
			if err != nil && (!errors.Is(err, proto.ErrName) || !strings.Contains(err.Error(), "server id")) {
				t.Errorf("CheckServer(%q) = %v: want ErrName naming a server id", tc.id, err)
			}
		})
	}
}

// TestCheckNameSaysWhichCharacter: an invalid name's error quotes the
// character, not its first byte: U+202E (a right-to-left override) read
// as 'â' (black-box sweep, 2026-12-04), invalid UTF-8 as 'ï'.
func TestCheckNameSaysWhichCharacter(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"\u202eevil", `'\u202e' at byte 0`},
		{"bob\U0001F600", `'😀' at byte 3`},
		{"al\xefce", "is not UTF-8 at byte 2 (0xef)"},
		{"a\ufffd", `'�' at byte 1`},
	} {
		err := proto.CheckUser(tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckUser(%q) = %v, want it to say %s", tc.name, err, tc.want)
		}
	}
}
