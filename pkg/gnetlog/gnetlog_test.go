package gnetlog

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStaleEventIsDebug: gnet's line for an event of a connection closed
// earlier in the same epoll batch was written at Warn, up to 31 a time
// when many members closed at once (black-box sweep, 2026-12-05); it is
// routine, so it is Debug now.
func TestStaleEventIsDebug(t *testing.T) {
	var buf bytes.Buffer
	g := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	g.Warnf("received event[fd=%d|ev=%d|flags=%d] of a stale connection from event-loop(%d)", 9, 25, 0, 0)
	if buf.Len() != 0 {
		t.Fatalf("logged at Info: %s", buf.String())
	}
	g.Warnf("something else: %v", "odd")
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "component=gnet") {
		t.Fatalf("another warning lost: %q", buf.String())
	}
}

// TestWarningsBounded: gnet's warnings and errors are at most Burst a
// Window, and the first line of a later window counts those left out.
func TestWarningsBounded(t *testing.T) {
	var buf bytes.Buffer
	g := New(slog.New(slog.NewTextHandler(&buf, nil)))
	now := time.Unix(1000, 0)
	g.now = func() time.Time { return now }
	for i := range 3 * Burst {
		g.Errorf("accept: %d", i)
	}
	if n := strings.Count(buf.String(), "\n"); n != Burst {
		t.Fatalf("%d lines in one window, want %d", n, Burst)
	}
	buf.Reset()
	now = now.Add(Window)
	g.Warnf("later")
	if got := buf.String(); !strings.Contains(got, "not_logged_before="+strconv.Itoa(2*Burst)) {
		t.Fatalf("first line of the next window %q, want not_logged_before=%d", got, 2*Burst)
	}
	g.Infof("routine") // Debug, below the handler's Info: not written, not counted
	buf.Reset()
	g.Warnf("again")
	if strings.Contains(buf.String(), "not_logged_before") {
		t.Fatalf("count given twice: %q", buf.String())
	}
}
