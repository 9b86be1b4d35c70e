package client

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// blockedIn reports whether some goroutine is waiting on a mutex with fn
// on its stack.
func blockedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "sync.Mutex.Lock") && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}

// TestCloseRoomWhileItsConnectionBreaks: a room is closed (RoomClosed,
// or Run returning) just as its connection breaks, so the session's
// goroutine reports the break to the controller (OnBroken, which takes
// the room's lock) while closeRoom closes the session. closeRoom held the
// room's lock across Session.Close, which waits for that goroutine: both
// waited for ever (a 1,000-room chatload hung at its end this way).
func TestCloseRoomWhileItsConnectionBreaks(t *testing.T) {
	srv := startChat(t, "serv1")
	p := startProxy(t, srv.Addr())
	cfg := DefaultConfig()
	cfg.User = "alice"
	cfg.Logger = testkit.Logger(t)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.runDone = ctx.Done() // as Run does, so that events flow until the end
	close(c.running)
	c.assign(ctx, proto.Assign{Room: "r1", Epoch: 1, Server: p.ref("serv1")})
	var r *roomState
	testkit.WaitFor(t, 10*time.Second, "the room's session", func() bool {
		c.mu.Lock()
		r = c.rooms["r1"]
		c.mu.Unlock()
		if r == nil {
			return false
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.sess != nil
	})

	// Line both up on the room's lock, closeRoom first: it closes the
	// session with the lock held (before the fix) while OnBroken waits.
	r.mu.Lock()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		c.closeRoom("r1")
	}()
	testkit.WaitFor(t, 10*time.Second, "closeRoom to wait for the room's lock", func() bool { return blockedIn("closeRoom") })
	p.kill()
	testkit.WaitFor(t, 10*time.Second, "the break to be reported (OnBroken waits for the room's lock)", func() bool { return blockedIn("roomWorker.func1") })
	r.mu.Unlock()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("closeRoom still waiting 10s later: it holds the room's lock while the session's goroutine waits for it")
	}
}
