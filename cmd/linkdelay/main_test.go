package main

import (
	"testing"

	"nearchat/pkg/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// TestBadFlagsRefused: the binary refuses them with one line and status
// 2 before it opens anything (no root needed to see it).
func TestBadFlagsRefused(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/linkdelay")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"negative queue", []string{"-queue-bytes", "-1"}, "linkdelay: invalid value -1 for -queue-bytes: want 0 to 1073741824"},
		{"delay past the max", []string{"-delay", "1h"}, "invalid value 1h for -delay: want 0s to 10s"},
		{"rtprio", []string{"-rtprio", "100"}, "invalid value 100 for -rtprio: want 0 to 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.ExpectRefused(t, bin, append([]string{"-a", "nosuch-a", "-b", "nosuch-b", "-parent-pid", "0"}, tc.args...), tc.want)
		})
	}
}
