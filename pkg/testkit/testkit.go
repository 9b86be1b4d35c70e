// Package testkit holds the helpers every nearchat test package shares: a
// logger that writes through t.Log, a poll with a deadline, a listener
// that serves each connection until the test ends, the one
// goroutine-leak check run by every package's TestMain, a once-per-run
// build of the programs a test starts as processes, and the check that
// such a program refuses a bad flag (status 2, one line); its own
// test keeps "every package has a package doc" true repo-wide. It uses
// the standard library and goleak only, and only tests import it.
package testkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"nearchat/pkg/bounds"
)

// Logger returns a logger that writes every record through t.Log, and goes
// silent once the test's cleanup runs (a server goroutine that logs after
// its test has ended would otherwise panic the test binary).
func Logger(t testing.TB) *slog.Logger { return LoggerAt(t, slog.LevelDebug) }

// LoggerAt is Logger for records at level and above.
func LoggerAt(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{} // t.Log is timestamped enough with -v
			}
			return a
		},
	}))
}

// Writer returns a writer that passes each write to t.Log as one line, and
// drops writes once the test's cleanup runs.
func Writer(t testing.TB) io.Writer {
	w := &tlog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

type tlog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tlog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// WaitFor polls cond until it holds, failing the test with what after
// timeout. Tests wait on conditions this way, never on sleeps. It polls
// every 5 ms at first and backs off to every 20 ms, so a cond that is
// costly (a tmux capture, say) does not load the machine.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	every := 5 * time.Millisecond
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-time.After(every):
		}
		every = min(every*5/4, 20*time.Millisecond)
	}
}

// Serve accepts on ln until the test ends and runs handle on each
// connection in a goroutine of its own, closing the connection when handle
// returns. A nil handle holds every connection open and unread, as a
// process that has stopped running would. When the test ends, ln and every
// connection still open are closed, which ends a handle blocked reading.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	done := false
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		done = true
		for c := range open {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if done {
				mu.Unlock()
				c.Close()
				return
			}
			open[c] = true
			mu.Unlock()
			if handle == nil {
				continue
			}
			go func() {
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
}

// ignored are the goroutines that outlive every test by design: gnet's
// shared worker pool (ants) keeps its purge and clock goroutines for the
// life of the process. This is the one list; a package that needs more
// passes them to VerifyNoLeaks and says why.
var ignored = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*Pool).purgeStaleWorkers"),
	goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*Pool).ticktock"),
	goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
	goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	// Idle workers of that pool, which ran work gnet handed it (the
	// enrolment of TLS connections on their event loops).
	goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"),
}

// VerifyNone fails t if a goroutine other than the ignored ones and extra
// is running, for a test that checks its own leaks (with
// goleak.IgnoreCurrent(), say) rather than the whole package's.
func VerifyNone(t testing.TB, extra ...goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, append(append([]goleak.Option{}, ignored...), extra...)...)
}

// VerifyNoLeaks runs the package's tests and then fails the run if any
// goroutine is left behind, other than the ignored ones and extra. It also
// removes the binaries BuildOnce built. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }
func VerifyNoLeaks(m *testing.M, extra ...goleak.Option) {
	opts := append([]goleak.Option{goleak.Cleanup(func(code int) {
		removeBuilds()
		os.Exit(code)
	})}, ignored...)
	goleak.VerifyTestMain(m, append(opts, extra...)...)
}

var builds struct {
	sync.Mutex
	dir  string
	bins map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// BuildOnce builds the main package pkg ("nearchat/cmd/chatserver") once
// per test binary and returns the path of the executable, for tests that
// run a program as a process (to kill it with SIGKILL, say). The binaries
// go in one temporary directory that VerifyNoLeaks removes.
func BuildOnce(t testing.TB, pkg string) string {
	t.Helper()
	builds.Lock()
	if builds.bins == nil {
		builds.bins = map[string]*build{}
	}
	b := builds.bins[pkg]
	if b == nil {
		b = &build{}
		builds.bins[pkg] = b
	}
	builds.Unlock()
	b.once.Do(func() {
		builds.Lock()
		if builds.dir == "" {
			builds.dir, b.err = os.MkdirTemp("", "nearchat-test-bin-")
		}
		dir := builds.dir
		builds.Unlock()
		if b.err != nil {
			return
		}
		bin := filepath.Join(dir, path.Base(pkg))
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
			return
		}
		b.path = bin
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func removeBuilds() {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
		builds.dir = ""
	}
}

// ExpectRefused runs the program bin (from BuildOnce) with args and fails
// t unless it exits with status 2 within 10 s, as a program does for a bad
// flag, having printed exactly one line on stderr that contains every
// string of want. A program that starts instead of refusing is killed at
// the deadline.
func ExpectRefused(t testing.TB, bin string, args []string, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %q still running after 10 s, killed; stderr:\n%s", path.Base(bin), args, stderr.String())
	}
	if code != 2 {
		t.Fatalf("%s %q: %v (status %d), want status 2; stderr:\n%s", path.Base(bin), args, err, code, stderr.String())
	}
	out := strings.TrimSuffix(stderr.String(), "\n")
	if strings.Contains(out, "\n") {
		t.Errorf("%s %q: stderr has more than one line:\n%s", path.Base(bin), args, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s %q: stderr %q does not say %q", path.Base(bin), args, out, w)
		}
	}
}

// ExpectFlagError fails t unless err, from a program's check of its
// settings, is nil when flag is "" and otherwise a one-line *bounds.Error
// naming flag, the error its program exits 2 on.
func ExpectFlagError(t testing.TB, err error, flag string) {
	t.Helper()
	if flag == "" {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	var be *bounds.Error
	if !errors.As(err, &be) || be.Name != flag {
		t.Fatalf("got %v, want a *bounds.Error for -%s", err, flag)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%q: want one line", err)
	}
}

// FakeBin returns a new directory of empty executables named like
// nearchat's programs, for a tool's -bin: enough for its checks of the
// directory, and whatever it starts exits at once.
func FakeBin(t testing.TB) string {
	t.Helper()
	bin := t.TempDir()
	for _, p := range []string{"central", "chatserver", "chat"} {
		if err := os.WriteFile(filepath.Join(bin, p), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// SlowCentralBin is FakeBin whose central only writes its pid to
// central.pid there and sleeps, never answering: a tool waits for it for
// seconds, long enough to be signalled at a known point, and no real
// cluster starts.
func SlowCentralBin(t testing.TB) (bin, pidFile string) {
	t.Helper()
	bin = FakeBin(t)
	pidFile = filepath.Join(bin, "central.pid")
	tmp := fmt.Sprintf("%q", pidFile+".tmp")
	script := "#!/bin/sh\necho $$ > " + tmp + " && mv " + tmp + " " + fmt.Sprintf("%q", pidFile) + "\nexec sleep 600\n"
	if err := os.WriteFile(filepath.Join(bin, "central"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, pidFile
}

// LogBuffer collects log output written from any goroutine, for a test to
// search (String).
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
