package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

// unavailableCentral returns the REST and control addresses of a Central
// that answers every request 503: the members' registration is a failure
// that may pass, so they try it again until chatload is signalled, and
// the run is held in forming its rooms without a real cluster. asked
// reports whether a member has called yet.
func unavailableCentral(t *testing.T) (rest, control string, asked func() bool) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	// Never dialled: no member gets past registering.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return srv.Listener.Addr().String(), ln.Addr().String(), func() bool { return calls.Load() > 0 }
}

// TestSignalExitStatus: chatload interrupted by SIGINT or SIGTERM exits
// 128 plus the signal's number, as chaos and the demo do, even when the
// -json report then cannot be written. It exited 130 for SIGTERM too, so
// a caller could not tell the two apart, and 1 when the write failed, the
// status of a run that lost messages.
func TestSignalExitStatus(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chatload")
	for _, tc := range []struct {
		sig       syscall.Signal
		name      string
		jsonFails bool
		want      int
	}{
		{syscall.SIGINT, "SIGINT", false, 130},
		{syscall.SIGTERM, "SIGTERM", false, 143},
		{syscall.SIGINT, "SIGINT", true, 130},
		{syscall.SIGTERM, "SIGTERM", true, 143},
	} {
		sub := tc.name
		if tc.jsonFails {
			sub += " report not written"
		}
		t.Run(sub, func(t *testing.T) {
			rest, control, asked := unavailableCentral(t)
			report := filepath.Join(t.TempDir(), "report.json")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-bin", t.TempDir(), "-logs", t.TempDir(), "-q",
				"-central", rest, "-control", control, "-servers", "0",
				"-rooms", "1", "-members", "2", "-setup-timeout", "10m", "-json", report)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			testkit.WaitFor(t, 30*time.Second, "a member to register, or chatload to exit", func() bool {
				return asked() || len(exited) > 0
			})
			if !asked() {
				t.Fatalf("chatload exited before any member registered: %v; stderr:\n%s", <-exited, stderr.String())
			}
			if tc.jsonFails {
				// The check before the run created the file; a
				// directory in its place fails the write at the end.
				if err := os.Remove(report); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(report, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := <-exited
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.want {
				t.Fatalf("exit: %v, want status %d; stderr:\n%s", err, tc.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), "chatload: interrupted by "+tc.name) {
				t.Errorf("stderr does not say it was interrupted by %s:\n%s", tc.name, stderr.String())
			}
			if tc.jsonFails {
				if !strings.Contains(stderr.String(), "chatload: the JSON report:") {
					t.Errorf("stderr does not say the report was not written:\n%s", stderr.String())
				}
				return
			}
			if b, err := os.ReadFile(report); err != nil || !strings.Contains(string(b), `"interrupted": true`) {
				t.Errorf("report: %v; want one marked interrupted:\n%s", err, b)
			}
		})
	}
}
