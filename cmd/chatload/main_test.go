package main

import (
	"testing"

	"nearchat/pkg/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// TestBadFlagsRefused: out-of-range flags exit 2 with one line naming
// the flag, the value and the range, before any process starts (they
// exited 1 from inside the run, or, for -liveness and -probe-every below
// the client's minimum, failed every member after the cluster was up).
func TestBadFlagsRefused(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chatload")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"rooms", []string{"-rooms", "0"}, []string{"-rooms", "1 to 20000"}},
		{"liveness", []string{"-liveness", "1ms"}, []string{"-liveness", "1ms", "10ms to 1m"}},
		{"probe every", []string{"-probe-every", "1ms"}, []string{"-probe-every", "50ms to 1h"}},
		{"max outage", []string{"-max-outage", "-1s"}, []string{"-max-outage", "at least 0s"}},
		// 0 would collect without pause; -1 is off, not 0.
		{"gogc 0", []string{"-gogc", "0"}, []string{"-gogc", "0", "-1 (off) or 1 to 100000"}},
		{"gogc -2", []string{"-gogc", "-2"}, []string{"-gogc", "-2", "-1 (off) or 1 to 100000"}},
		// Checked after the run, it lost the run's report, exit 0
		// (usability review 7, H3).
		{"json", []string{"-json", "/nonexistent/dir/x.json"}, []string{"-json", "/nonexistent/dir/x.json", "can be written"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.ExpectRefused(t, bin, append([]string{"-bin", t.TempDir(), "-q"}, tc.args...),
				append([]string{"chatload: invalid value"}, tc.want...)...)
		})
	}
}
