package chatserver

import (
	"strings"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
)

// ackLog records the Acks a peer receives, read by a goroutine of its own.
type ackLog struct {
	mu   sync.Mutex
	acks []proto.Ack
}

func logAcks(t *testing.T, p *peer) *ackLog {
	a := new(ackLog)
	go func() {
		for {
			m, err := p.next(time.Minute)
			if err != nil {
				return // the connection closed as the test ended
			}
			if ack, ok := m.(*proto.Ack); ok {
				a.mu.Lock()
				a.acks = append(a.acks, *ack)
				a.mu.Unlock()
			}
		}
	}()
	return a
}

func (a *ackLog) n() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.acks)
}

// TestReleasedAcksKeepTheirOrder: the Acks a room withheld while a member
// was behind are sent, once it has caught up, ahead of any the sender's
// later messages earn. A sender streams as a session does (a window of
// unacknowledged messages), live messages and resends to the reader
// (Ack.Seq 0, which a session pairs with its resends' sizes in order),
// while a slow reader goes behind and catches up again many times. The
// sender must get every Ack in the order of its messages. Before, the
// released Acks went through the sender's loop's queue, and the Ack of a
// message that loop read meanwhile was written ahead of them.
func TestReleasedAcksKeepTheirOrder(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Loops, c.HighWater = 2, 16<<10 })
	sender, _ := joinAs(t, s, "r", "sender")
	slow := dialSlow(t, s, "r", "slow")
	loops := memberLoops(t, s, "r", "sender", "slow")
	if loops[0] == loops[1] {
		t.Fatal("sender and slow member share a loop; the balancer gives each connection the least loaded one")
	}
	acks := logAcks(t, sender)
	go func() {
		b := make([]byte, 2<<10)
		for {
			if _, err := slow.conn.Read(b); err != nil {
				return
			}
			time.Sleep(50 * time.Microsecond) // a slow reader's pace, not a wait for a condition
		}
	}()
	r, _ := acksHeld(s, "r")
	var cycles int
	wasHeld := false
	text := strings.Repeat("z", 1000)
	const n, window = 4000, 24
	want := make([]proto.Ack, 0, n) // Num, and Seq 0 for a resend, in the order sent
	var b []byte
	num := uint64(0)
	for i := 0; i < n; i++ {
		c := &proto.Chat{Text: text}
		if i%3 == 2 {
			c.Num, c.To = num, "slow" // the last live message, again
			want = append(want, proto.Ack{Num: num})
		} else {
			num++
			c.Num = num
			want = append(want, proto.Ack{Num: num, Seq: 1})
		}
		b, _ = wire.AppendFrame(b[:0], c)
		sender.raw(b)
		testkit.WaitFor(t, 30*time.Second, "room in the window", func() bool { return len(want)-acks.n() < window })
		h := r.nbehind.Load() > 0
		if h && !wasHeld {
			cycles++
		}
		wasHeld = h
	}
	testkit.WaitFor(t, 30*time.Second, "every Ack", func() bool { return acks.n() >= len(want) })
	t.Logf("%d messages, the reader behind at least %d times", n, cycles)

	acks.mu.Lock()
	defer acks.mu.Unlock()
	for i, a := range acks.acks {
		if a.Num != want[i].Num || (a.Seq == 0) != (want[i].Seq == 0) {
			lo, hi := max(i-5, 0), min(i+5, len(want))
			t.Fatalf("Ack %d of %d is %d (resend %v), want %d (resend %v)\ngot  %v\nwant %v", i, len(want), a.Num, a.Seq == 0, want[i].Num, want[i].Seq == 0, acks.acks[lo:hi], want[lo:hi])
		}
	}
}
