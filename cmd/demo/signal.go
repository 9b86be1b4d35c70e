package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// This file is cmd/chaos's signal.go too: each command is a main package
// of its own, and the two must map signals to statuses alike.

// signalled is the cause of a run cancelled by a signal. It keeps which
// signal came, which signal.NotifyContext does not: the exit status
// says it.
type signalled struct{ sig os.Signal }

func (s signalled) Error() string {
	if n, ok := s.sig.(syscall.Signal); ok && unix.SignalName(n) != "" {
		return "interrupted by " + unix.SignalName(n) // SIGINT, not "interrupt"
	}
	return "interrupted by " + s.sig.String()
}

// interrupts returns a context cancelled by the first SIGINT or SIGTERM,
// its cause a signalled, so the children are stopped in order rather
// than left to the default action's abrupt exit. Later signals are
// ignored until stop, which the cleanup they would cut short needs.
func interrupts(parent context.Context) (ctx context.Context, stop func()) {
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

// interruptStatus is the exit status of a run ctx's signal cut short:
// 128 plus the signal's number (130 for SIGINT, 143 for SIGTERM), as a
// shell reports a program the signal killed, so a caller tells an
// interrupted demo from a failed one (1). It is 0 when no
// signal came.
func interruptStatus(ctx context.Context) int {
	var s signalled
	if !errors.As(context.Cause(ctx), &s) {
		return 0
	}
	if n, ok := s.sig.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}
