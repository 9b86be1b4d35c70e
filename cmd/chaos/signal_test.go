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

// TestSignalExitStatus: chaos interrupted by SIGINT or SIGTERM stops the
// processes it started and exits 128 plus the signal's number, as
// chatload does; it exited 1, the status of a violation, so a caller
// could not tell an interrupted run from a failed one.
func TestSignalExitStatus(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chaos")
	for _, tc := range []struct {
		sig  syscall.Signal
		name string
		want int
	}{{syscall.SIGINT, "SIGINT", 130}, {syscall.SIGTERM, "SIGTERM", 143}} {
		t.Run(tc.name, func(t *testing.T) {
			fake, pidFile := testkit.SlowCentralBin(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-bin", fake, "-dir", t.TempDir(), "-run", "^resend-storm$", "-runs", "1", "-seed", "1")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var central int
			testkit.WaitFor(t, 30*time.Second, "the run to start central", func() bool {
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
			if !strings.Contains(stderr.String(), "chaos: interrupted by "+tc.name) {
				t.Errorf("stderr does not say it was interrupted by %s:\n%s", tc.name, stderr.String())
			}
			if strings.Contains(stderr.String(), "violated an invariant") {
				t.Errorf("the interrupted run counted as a violation:\n%s", stderr.String())
			}
			// chaos waits for its children before it exits: the central
			// it started is gone, or at most a zombie left to init.
			if b, err := os.ReadFile("/proc/" + strconv.Itoa(central) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
				syscall.Kill(central, syscall.SIGKILL)
				t.Errorf("central (pid %d) still running after chaos exited: %s", central, b)
			}
		})
	}
}

// TestRelativeBin: -bin is resolved against the working directory chaos
// was started in. "-bin ." used to make the bare name "central", which
// os/exec looked up in $PATH: the scenario failed at once (or ran another
// central) instead of starting the one in ".".
func TestRelativeBin(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chaos")
	fake, pidFile := testkit.SlowCentralBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-bin", ".", "-dir", t.TempDir(), "-run", "^resend-storm$", "-runs", "1", "-seed", "1")
	cmd.Dir = fake
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Central started from -bin writes its pid; a run that could not
	// start it exits first.
	testkit.WaitFor(t, 30*time.Second, "the run to start -bin's central, or exit", func() bool {
		_, err := os.Stat(pidFile)
		return err == nil || len(exited) > 0
	})
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("-bin .: central in %s not started (%v); stderr:\n%s", fake, <-exited, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil || !strings.Contains(stderr.String(), "interrupted by SIGINT") {
		t.Errorf("after SIGINT: %v; stderr:\n%s", err, stderr.String())
	}
}
