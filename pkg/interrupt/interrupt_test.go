package interrupt

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"
)

// TestNotify sends each signal to the test's own process: it cancels the
// context instead of killing the process, the cause names it, and the
// status is a shell's for a program it killed.
func TestNotify(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		name string
		want int
	}{{syscall.SIGINT, "SIGINT", 130}, {syscall.SIGTERM, "SIGTERM", 143}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, stop := Notify(context.Background())
			defer stop()
			if err := syscall.Kill(syscall.Getpid(), tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("%s did not cancel the context", tc.name)
			}
			if got := context.Cause(ctx).Error(); got != "interrupted by "+tc.name {
				t.Errorf("cause %q, want %q", got, "interrupted by "+tc.name)
			}
			if got := Status(ctx); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
}

// TestNoSignal: a context stop or its parent ended is no interruption,
// status 0, so a run that finished is not taken for one cut short.
func TestNoSignal(t *testing.T) {
	ctx, stop := Notify(context.Background())
	stop()
	if ctx.Err() == nil || !errors.Is(context.Cause(ctx), context.Canceled) {
		t.Errorf("after stop: err %v, cause %v; want canceled", ctx.Err(), context.Cause(ctx))
	}
	if got := Status(ctx); got != 0 {
		t.Errorf("after stop: status %d, want 0", got)
	}
	parent, cancel := context.WithCancel(context.Background())
	ctx, stop = Notify(parent)
	defer stop()
	cancel()
	<-ctx.Done()
	if got := Status(ctx); got != 0 {
		t.Errorf("parent cancelled: status %d, want 0", got)
	}
}

// otherSignal is an os.Signal that is not a syscall.Signal: it has no
// number to add to 128.
type otherSignal struct{}

func (otherSignal) String() string { return "other" }
func (otherSignal) Signal()        {}

// TestStatus: the status is 128 plus the signal's number, 1 for a signal
// without one, and 0 for a context no signal cut short.
func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  int
	}{
		{signalled{syscall.SIGINT}, 130},
		{signalled{syscall.SIGTERM}, 143},
		{signalled{otherSignal{}}, 1},
		{context.Canceled, 0},
		{nil, 0},
	} {
		ctx, cancel := context.WithCancelCause(context.Background())
		if tc.cause != nil {
			cancel(tc.cause)
		}
		if got := Status(ctx); got != tc.want {
			t.Errorf("cause %v: status %d, want %d", tc.cause, got, tc.want)
		}
		cancel(nil)
	}
	if got := (signalled{otherSignal{}}).Error(); got != "interrupted by other" {
		t.Errorf("a signal without a name: %q", got)
	}
}
