package main

import (
	"testing"

	"nearchat/pkg/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// TestBadFlagsRefused runs the real binary with flags out of range: each
// exits 2 at once with one line naming the flag, the value and the range,
// instead of starting (thousands of event loops, an id Central would
// refuse at registration) or failing later at bind.
func TestBadFlagsRefused(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chatserver")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"loops", []string{"-loops", "5000"}, []string{"-loops", "5000", "0 to 1024"}},
		{"id", []string{"-id", "serv 1"}, []string{"-id", `"serv 1"`, "1 to 32"}},
		{"id of Central's", []string{"-id", "Central"}, []string{"-id", `"Central"`, `not "central"`}},
		{"port", []string{"-listen", "127.0.0.1:99999"}, []string{"-listen", "99999", "0 to 65535"}},
		{"drain timeout", []string{"-drain-timeout", "-1s"}, []string{"-drain-timeout", "-1s", "0s to 24h"}},
		{"max conns per source", []string{"-max-conns-per-source", "-1"}, []string{"-max-conns-per-source", "-1", "at least 0"}},
		{"metrics", []string{"-metrics", "nowhere"}, []string{"-metrics", `"nowhere"`, "host:port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-insecure", "-listen", "127.0.0.1:0"}, tc.args...)
			testkit.ExpectRefused(t, bin, args, append([]string{"chatserver: invalid value"}, tc.want...)...)
		})
	}
}

// TestConflictingFlagsRefused: flags that do not go together are refused
// with one line saying what is wrong. -ticket-key with -insecure was
// told to give one of them (usability review 7, M6), and -plain-listen
// without TLS was ignored (L5).
func TestConflictingFlagsRefused(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chatserver")
	testkit.ExpectRefused(t, bin, []string{"-listen", "127.0.0.1:0", "-insecure", "-ticket-key", "x.pub"}, "exclude each other")
	testkit.ExpectRefused(t, bin, []string{"-listen", "127.0.0.1:0", "-insecure", "-plain-listen", "127.0.0.1:0"}, "-plain-listen", "needs -tls-cert")
	testkit.ExpectRefused(t, bin, []string{"-listen", "127.0.0.1:0", "-insecure", "-token-file", "/etc/passwd"}, "-token-file", "something other than a server token")
}
