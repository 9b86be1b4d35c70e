package client

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"nearchat/chatserver"
	"nearchat/pkg/testkit"
)

// TestNoHistoryMove: on chat servers that keep no history (-history 0) a
// room moved to another server and back, its members moving at different
// times, still delivers every message exactly once and in order: what a
// member misses between servers comes from the senders' windows (Resend),
// since no server replays anything.
func TestNoHistoryMove(t *testing.T) {
	none := func(c *chatserver.Config) { c.History = 0 }
	s1, s2 := startChatWith(t, "serv1", none), startChatWith(t, "serv2", none)
	const members, n = 3, 300
	var ms []*member
	for i := range members {
		ms = append(ms, join(t, testConfig(t), ref(s1), "room-nohist", fmt.Sprintf("u%d", i)))
	}
	var wg sync.WaitGroup
	out, back := make(chan struct{}), make(chan struct{})
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := stream(m, n, time.Millisecond, func(k int) {
				if i == 0 && k == n/3 {
					close(out)
				}
				if i == 0 && k == 2*n/3 {
					close(back)
				}
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	for _, step := range []struct {
		when  chan struct{}
		to    *chatserver.Server
		epoch uint64
	}{{out, s2, 2}, {back, s1, 3}} {
		<-step.when
		for _, m := range ms {
			m.move(t, ref(step.to), step.epoch)
			time.Sleep(15 * time.Millisecond) // members apart, so each misses some
		}
	}
	wg.Wait()
	sent := map[string]uint64{}
	for _, m := range ms {
		sent[m.s.User()] = n
	}
	for _, m := range ms {
		testkit.WaitFor(t, settle, m.s.User()+" receives all", func() bool {
			return m.check.Report().Received == (members-1)*n
		})
		if mv := m.movesSoFar(); len(mv) != 3 || mv[2].To != ref(s1) {
			t.Errorf("%s: moves %+v", m.s.User(), mv)
		}
	}
	verify(t, ms, sent)
	if h := s1.Metrics().HistoryFrames + s2.Metrics().HistoryFrames; h != 0 {
		t.Errorf("servers hold %d history frames, want none", h)
	}
}
