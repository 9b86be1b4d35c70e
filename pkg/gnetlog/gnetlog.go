// Package gnetlog routes gnet's own log lines into a slog.Logger, tagged
// component=gnet. gnet is chatty at Info about routine engine events, so
// Info is demoted to Debug. Safe for concurrent use.
package gnetlog

import (
	"context"
	"fmt"
	"log/slog"
)

// Logger implements gnet's logging.Logger over L.
type Logger struct{ L *slog.Logger }

func (g Logger) logf(level slog.Level, format string, args ...any) {
	if g.L.Enabled(context.Background(), level) {
		g.L.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "gnet")
	}
}

func (g Logger) Debugf(format string, args ...any) { g.logf(slog.LevelDebug, format, args...) }
func (g Logger) Infof(format string, args ...any)  { g.logf(slog.LevelDebug, format, args...) }
func (g Logger) Warnf(format string, args ...any)  { g.logf(slog.LevelWarn, format, args...) }
func (g Logger) Errorf(format string, args ...any) { g.logf(slog.LevelError, format, args...) }
func (g Logger) Fatalf(format string, args ...any) { g.logf(slog.LevelError, format, args...) }
