// Package interrupt turns SIGINT and SIGTERM into the cancellation of a
// context whose cause names the signal, and into the exit status a shell
// reports for a program that signal killed: 128 plus its number. The
// commands that start processes (chaos, demo, chatload) stop them in
// order on a signal, then exit with that status, so a caller tells an
// interrupted run from a failed one (1) and SIGINT from SIGTERM alike.
package interrupt

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// signalled is the cause of a context cancelled by a signal. It keeps
// which signal came, which signal.NotifyContext does not: the exit
// status says it.
type signalled struct{ sig os.Signal }

func (s signalled) Error() string {
	if n, ok := s.sig.(syscall.Signal); ok && unix.SignalName(n) != "" {
		return "interrupted by " + unix.SignalName(n) // SIGINT, not "interrupt"
	}
	return "interrupted by " + s.sig.String()
}

// Notify returns a context cancelled by the first SIGINT or SIGTERM, its
// cause naming the signal ("interrupted by SIGTERM"), so a command stops
// its children in order rather than dying by the default action. Later
// signals are ignored until stop, which the cleanup they would cut short
// needs. stop cancels the context with context.Canceled.
func Notify(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			cancel(signalled{sig})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(context.Canceled)
	}
}

// Status is the exit status of a run whose context from Notify a signal
// cancelled: 128 plus the signal's number (130 for SIGINT, 143 for
// SIGTERM). It is 0 when no signal came, whatever else ended ctx.
func Status(ctx context.Context) int {
	var s signalled
	if !errors.As(context.Cause(ctx), &s) {
		return 0
	}
	if n, ok := s.sig.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}
