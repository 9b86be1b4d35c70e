package chatserver

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
)

// memberLoops returns the fan-out loops of room's members, by user.
func memberLoops(t *testing.T, s *Server, room string, users ...string) []*loop {
	t.Helper()
	s.mu.Lock()
	r := s.rooms[room]
	s.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*loop
	for _, u := range users {
		out = append(out, r.members[u].loop)
	}
	return out
}

// blockLoop keeps l's event loop busy until the returned function is
// called: a loop that lags behind the others, as one does on a loaded
// machine.
func blockLoop(t *testing.T, l *loop) (unblock func()) {
	t.Helper()
	running, release := make(chan struct{}), make(chan struct{})
	err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		close(running)
		<-release
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	<-running
	var once atomic.Bool
	unblock = func() {
		if once.CompareAndSwap(false, true) {
			close(release)
		}
	}
	t.Cleanup(unblock)
	return unblock
}

// TestLaggingLoopHoldsSenders: fan-out queued for a member on an event
// loop that has not run yet counts in the member's backlog. The slow
// member's loop is held busy while the sender sends as a session does
// (a bounded window of unacknowledged messages): the sender's Acks stop
// once what is queued there passes HighWater, so when the loop runs again
// the member is not cut off and gets everything. Before, the Acks came
// back at once, the sender sent on, and the loop then wrote the whole
// queue into the member's backlog, past MaxOutbound: cut off.
func TestLaggingLoopHoldsSenders(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Loops = 2; c.MaxOutbound = 256 << 10 })
	sender, _ := joinAs(t, s, "r", "sender")
	slow := dialSlow(t, s, "r", "slow")
	loops := memberLoops(t, s, "r", "sender", "slow")
	if loops[0] == loops[1] {
		t.Fatal("sender and slow member share a loop; the balancer gives each connection the least loaded one")
	}
	unblock := blockLoop(t, loops[1])

	text := strings.Repeat("z", 4000)
	const n = 2000 // 8 MB, 32 times MaxOutbound
	const window = 16
	var sent atomic.Int64
	errc := make(chan error, 1)
	go func() {
		var b []byte
		for i := uint64(1); i <= n; i++ {
			b, _ = wire.AppendFrame(b[:0], &proto.Chat{Num: i, Text: text})
			if _, err := sender.conn.Write(b); err != nil {
				errc <- err
				return
			}
			sent.Store(int64(i))
			if i%window != 0 {
				continue
			}
			for acked := 0; acked < window; {
				m, err := sender.next(30 * time.Second)
				if err != nil {
					errc <- fmt.Errorf("sender waiting for acks at %d: %w", i, err)
					return
				}
				if _, ok := m.(*proto.Ack); ok {
					acked++
				}
			}
		}
		errc <- nil
	}()

	s.mu.Lock()
	r := s.rooms["r"]
	s.mu.Unlock()
	held := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.acks) > 0
	}
	testkit.WaitFor(t, 30*time.Second, "the sender held, or done", func() bool { return held() || sent.Load() == n })
	r.mu.Lock()
	queued := r.shardFor(loops[1]).queued.Load()
	r.mu.Unlock()
	t.Logf("while the reader's loop was stopped: sender sent %d of %d (%d bytes), %d bytes queued for the reader", sent.Load(), n, sent.Load()*int64(len(text)), queued)
	if sent.Load() == n {
		t.Errorf("the sender got Acks for all %d messages while none was written to the reader", n)
	}
	unblock()

	for i := uint64(1); i <= n; i++ {
		m, err := slow.next(30 * time.Second)
		if err != nil {
			t.Fatalf("slow member lost the stream at %d: %v", i, err)
		}
		switch m := m.(type) {
		case *proto.Deliver:
			if m.Num != i {
				t.Fatalf("slow member got %d, want %d", m.Num, i)
			}
		case *proto.Presence:
			i--
		default:
			t.Fatalf("slow member got %+v at %d", m, i)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("sender: %v", err)
	}
}
