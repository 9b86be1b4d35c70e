package main

import (
	"context"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// TestCheckFlags: a value the demo cannot run with is refused before any
// process starts, naming the flag, at once even for a -dashboard address
// Central could not serve on, which used to surface only when the wait for
// Central timed out (seconds). "At once" is checked against a second:
// the checks take well under a millisecond, and the 50 ms this used to
// allow is one scheduling hiccup of a race-instrumented binary on a
// loaded 2-core CI machine.
func TestCheckFlags(t *testing.T) {
	bin := testkit.FakeBin(t)
	if err := checkFlags(bin, 10, 4*time.Second, "", nil); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	if err := checkFlags(bin, 10, 4*time.Second, "127.0.0.1:0", nil); err != nil {
		t.Fatalf("a free loopback dashboard refused: %v", err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notExec := testkit.FakeBin(t)
	if err := os.Chmod(filepath.Join(notExec, "chat"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		bin   string
		rate  float64
		hold  time.Duration
		dash  string
		rest  []string
		wants string
	}{
		{"zero rate", bin, 0, 4 * time.Second, "", nil, "invalid value 0 for -rate"},
		{"negative rate", bin, -3, 4 * time.Second, "", nil, "invalid value -3 for -rate"},
		{"NaN rate", bin, math.NaN(), 4 * time.Second, "", nil, "invalid value NaN for -rate"},
		{"huge rate", bin, 1e6, 4 * time.Second, "", nil, "-rate: want 0.001 to 1000"},
		{"zero hold", bin, 10, 0, "", nil, "invalid value 0s for -hold: want 1s to 1h"},
		{"dashboard without port", bin, 10, 4 * time.Second, "nohost", nil, `invalid value "nohost" for -dashboard`},
		{"dashboard port past 65535", bin, 10, 4 * time.Second, "127.0.0.1:99999", nil, "-dashboard"},
		{"dashboard not loopback", bin, 10, 4 * time.Second, "192.0.2.1:8088", nil, "-dashboard"},
		{"dashboard host name", bin, 10, 4 * time.Second, "example.org:8088", nil, "-dashboard"},
		{"dashboard in use", bin, 10, 4 * time.Second, busy.Addr().String(), nil, "address already in use"},
		{"no binaries", t.TempDir(), 10, 4 * time.Second, "", nil, "no executable central, chatserver, chat there"},
		{"bin missing", filepath.Join(t.TempDir(), "missing"), 10, 4 * time.Second, "", nil, "no such file or directory"},
		{"bin a file", filepath.Join(bin, "chat"), 10, 4 * time.Second, "", nil, "it is not a directory"},
		{"chat not executable", notExec, 10, 4 * time.Second, "", nil, "no executable chat there"},
		{"stray argument", bin, 10, 4 * time.Second, "", []string{"x"}, "unexpected arguments"},
	} {
		start := time.Now()
		err := checkFlags(c.bin, c.rate, c.hold, c.dash, c.rest)
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: took %v, want at once (under 1 s)", c.name, took)
		}
		if err == nil || !strings.Contains(err.Error(), c.wants) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want one line with %q", c.name, err, c.wants)
		}
	}
}

// TestBadDashboardRefused: the real binary exits 2 with one line.
func TestBadDashboardRefused(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	testkit.ExpectRefused(t, testkit.BuildOnce(t, "nearchat/cmd/demo"),
		[]string{"-bin", testkit.FakeBin(t), "-dashboard", busy.Addr().String()},
		"demo: invalid value", "-dashboard", "address already in use")
}

// TestBadBinRefused: a -bin without every program exits 2 with one line
// naming each one missing, before anything starts.
func TestBadBinRefused(t *testing.T) {
	bin := testkit.FakeBin(t)
	for _, p := range []string{"central", "chat"} {
		if err := os.Remove(filepath.Join(bin, p)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.ExpectRefused(t, testkit.BuildOnce(t, "nearchat/cmd/demo"),
		[]string{"-bin", bin}, "demo: invalid value", "for -bin", "no executable central, chat there")
}

// TestRelativeBin: -bin is resolved against the working directory the
// demo was started in, whatever it is. "-bin ." used to make the bare
// name "central", which os/exec looked up in $PATH: the demo failed at
// once (or ran another central) instead of starting the one in ".".
func TestRelativeBin(t *testing.T) {
	demo := testkit.BuildOnce(t, "nearchat/cmd/demo")
	fake, pidFile := testkit.SlowCentralBin(t)
	for _, rel := range []string{".", "./"} {
		t.Run(rel, func(t *testing.T) {
			os.Remove(pidFile)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, demo, "-bin", rel)
			cmd.Dir = fake
			cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			// Central started from -bin writes its pid; a demo that
			// could not start it exits first.
			testkit.WaitFor(t, 30*time.Second, "the demo to start -bin's central, or exit", func() bool {
				_, err := os.Stat(pidFile)
				return err == nil || len(exited) > 0
			})
			if _, err := os.Stat(pidFile); err != nil {
				t.Fatalf("-bin %s: central in %s not started (%v); stderr:\n%s", rel, fake, <-exited, stderr.String())
			}
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			if err := <-exited; err == nil || !strings.Contains(stderr.String(), "interrupted by SIGINT") {
				t.Errorf("after SIGINT: %v; stderr:\n%s", err, stderr.String())
			}
		})
	}
}

// TestMissingEtcdRefused: without etcd, -replicas exits 2 with one line
// before anything starts; it started the cluster demo, which failed on
// its first step. Without -replicas etcd is not needed.
func TestMissingEtcdRefused(t *testing.T) {
	missing := func(string) (string, error) { return "", exec.ErrNotFound }
	if err := checkEtcd(false, missing); err != nil {
		t.Errorf("refused without -replicas: %v", err)
	}
	demo := testkit.BuildOnce(t, "nearchat/cmd/demo")
	t.Setenv("PATH", t.TempDir()) // after the build, which needs go
	testkit.ExpectRefused(t, demo, []string{"-bin", testkit.FakeBin(t), "-replicas"}, "demo: no etcd in $PATH", "-replicas")
}
