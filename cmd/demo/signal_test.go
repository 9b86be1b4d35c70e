package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

// TestSignalExitStatus: the demo interrupted by SIGINT or SIGTERM stops
// the processes it started and exits 128 plus the signal's number; it
// exited 1 and printed "demo failed" with a diagnosis of a cluster
// nothing was wrong with.
func TestSignalExitStatus(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/demo")
	for _, tc := range []struct {
		sig  syscall.Signal
		name string
		want int
	}{{syscall.SIGINT, "SIGINT", 130}, {syscall.SIGTERM, "SIGTERM", 143}} {
		t.Run(tc.name, func(t *testing.T) {
			fake, pidFile := testkit.SlowCentralBin(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-bin", fake)
			cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir()) // the demo's log directory
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var central int
			testkit.WaitFor(t, 30*time.Second, "the demo to start central", func() bool {
				b, err := os.ReadFile(pidFile)
				central, _ = strconv.Atoi(strings.TrimSpace(string(b)))
				return err == nil && central > 0
			})
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.want {
				t.Fatalf("exit: %v, want status %d; stderr:\n%s", err, tc.want, stderr.String())
			}
			if out := stderr.String(); !strings.Contains(out, "demo: interrupted by "+tc.name) || strings.Contains(out, "demo failed") {
				t.Errorf("stderr does not say only that %s interrupted it:\n%s", tc.name, out)
			}
			// The demo waits for its children before it exits: the
			// central it started is gone, or at most a zombie left to
			// init.
			if b, err := os.ReadFile("/proc/" + strconv.Itoa(central) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
				syscall.Kill(central, syscall.SIGKILL)
				t.Errorf("central (pid %d) still running after the demo exited: %s", central, b)
			}
		})
	}
}
