//go:build linux && !poll_opt

package netpoll

// nearchat's tests of its change to Polling (NEARCHAT.md): after a batch
// that took everything ready, the loop parks without polling once more, so
// whatever may leave a level-triggered descriptor ready must say so.

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	errorx "github.com/panjf2000/gnet/v2/pkg/errors"
)

// pair returns the two ends of a non-blocking stream socket pair.
func pair(t *testing.T) (r, w int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

// poll runs p.Polling(cb) until cb ends it with ErrEngineShutdown, and
// fails the test if that takes longer than 10 s (the loop stalled).
func poll(t *testing.T, p *Poller, cb PollEventHandler, stalled func() string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Polling(cb) }()
	select {
	case err := <-done:
		if !errors.Is(err, errorx.ErrEngineShutdown) {
			t.Fatalf("Polling: %v", err)
		}
	case <-time.After(10 * time.Second):
		p.Close() // ends Polling
		<-done
		t.Fatalf("the loop stalled: %s", stalled())
	}
}

func openPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := OpenPoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// A callback that leaves its descriptor ready and says so (MoreReady) is
// called again with nothing new arriving. Without MoreReady the loop
// parks with the 9 bytes unread: the descriptor is level-triggered, and
// the epoll descriptor signals the runtime only when something new turns
// ready.
func TestPollingPollsAgainAfterMoreReady(t *testing.T) {
	p := openPoller(t)
	r, w := pair(t)
	if err := p.AddRead(&PollAttachment{FD: r}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(w, []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // as in the next test
	got := 0
	poll(t, p, func(fd int, _ IOEvent, _ IOFlags) error {
		var b [1]byte // one byte a call, as a read that fills its buffer
		n, _ := unix.Read(fd, b[:])
		if got += n; got == 10 {
			return errorx.ErrEngineShutdown
		}
		p.MoreReady()
		return nil
	}, func() string { return "read " + strconv.Itoa(got) + " of 10 bytes" })
}

// A full event list is not a drained one: with more descriptors ready
// than the list holds, the loop polls again for the rest.
func TestPollingPollsAgainAfterFullEventList(t *testing.T) {
	p := openPoller(t)
	const n = 3 * InitPollEventsCap
	for i := 0; i < n; i++ {
		r, w := pair(t)
		if err := p.AddRead(&PollAttachment{FD: r}, false); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(w, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	// Let the runtime's epoll take the epoll descriptor's signal first,
	// so no later one is pending when the loop parks.
	time.Sleep(20 * time.Millisecond)
	served := 0
	poll(t, p, func(fd int, _ IOEvent, _ IOFlags) error {
		var b [8]byte
		unix.Read(fd, b[:])
		if served++; served == n {
			return errorx.ErrEngineShutdown
		}
		return nil
	}, func() string { return "served " + strconv.Itoa(served) + " of " + strconv.Itoa(n) + " descriptors" })
}

// A loop that parked after a drained batch wakes for what arrives later.
func TestPollingWakesAfterParking(t *testing.T) {
	p := openPoller(t)
	r, w := pair(t)
	if err := p.AddRead(&PollAttachment{FD: r}, false); err != nil {
		t.Fatal(err)
	}
	got := 0
	next := make(chan struct{}, 1)
	go func() {
		for i := 0; i < 5; i++ {
			unix.Write(w, []byte{byte(i)})
			select {
			case <-next:
			case <-time.After(10 * time.Second):
				return
			}
			time.Sleep(time.Millisecond) // let the loop park
		}
	}()
	poll(t, p, func(fd int, _ IOEvent, _ IOFlags) error {
		var b [8]byte
		n, _ := unix.Read(fd, b[:])
		if got += n; got == 5 {
			return errorx.ErrEngineShutdown
		}
		next <- struct{}{}
		return nil
	}, func() string { return "read " + strconv.Itoa(got) + " of 5 bytes" })
}
