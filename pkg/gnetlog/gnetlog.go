// Package gnetlog routes gnet's own log lines into a slog.Logger, tagged
// component=gnet. gnet is chatty at Info about routine engine events, so
// Info is demoted to Debug; its warnings and errors are bounded, since
// clients can cause them. Safe for concurrent use.
package gnetlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Burst and Window bound gnet's Warn and Error lines: Burst in a Window,
// then only a count of the rest, given with the first line of a later
// window (as Central bounds its own routine lines).
const (
	Burst  = 20
	Window = 10 * time.Second
)

// Logger implements gnet's logging.Logger over a slog.Logger.
type Logger struct {
	l   *slog.Logger
	now func() time.Time

	mu     sync.Mutex
	start  time.Time // of the current window
	n      int       // lines written in it
	hushed int       // lines left out since the last one written
}

// New returns a Logger writing to l.
func New(l *slog.Logger) *Logger { return &Logger{l: l, now: time.Now} }

func (g *Logger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !g.l.Enabled(ctx, level) {
		return
	}
	attrs := []any{"component", "gnet"}
	if level >= slog.LevelWarn {
		g.mu.Lock()
		now := g.now()
		if now.Sub(g.start) >= Window {
			g.start, g.n = now, 0
		}
		if g.n >= Burst {
			g.hushed++
			g.mu.Unlock()
			return
		}
		g.n++
		if g.hushed > 0 {
			attrs = append(attrs, "not_logged_before", g.hushed)
			g.hushed = 0
		}
		g.mu.Unlock()
	}
	g.l.Log(ctx, level, fmt.Sprintf(format, args...), attrs...)
}

// stale reports whether format is the line an epoll loop writes for an
// event of a connection it closed earlier in the same batch of events:
// many connections closing at once cause it (800 members of a room that
// close together wrote up to 31 a time: black-box sweep, 2026-12-05), gnet
// drops the event, and nothing is wrong.
func stale(format string) bool {
	return strings.HasPrefix(format, "received event[") && strings.Contains(format, "of a stale connection")
}

func (g *Logger) Debugf(format string, args ...any) { g.logf(slog.LevelDebug, format, args...) }
func (g *Logger) Infof(format string, args ...any)  { g.logf(slog.LevelDebug, format, args...) }
func (g *Logger) Warnf(format string, args ...any) {
	level := slog.LevelWarn
	if stale(format) {
		level = slog.LevelDebug
	}
	g.logf(level, format, args...)
}
func (g *Logger) Errorf(format string, args ...any) { g.logf(slog.LevelError, format, args...) }
func (g *Logger) Fatalf(format string, args ...any) { g.logf(slog.LevelError, format, args...) }
