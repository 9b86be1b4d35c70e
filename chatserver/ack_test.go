package chatserver

import (
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// awaitAcks reads from p until n Acks have come, within timeout, and
// returns how long that took.
func awaitAcks(t *testing.T, p *peer, n int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for got := 0; got < n; {
		m, err := p.next(timeout - time.Since(start))
		if err != nil {
			t.Fatalf("%d of %d Acks after %v: %v", got, n, time.Since(start), err)
		}
		if _, ok := m.(*proto.Ack); ok {
			got++
		}
	}
	return time.Since(start)
}

// chat writes the Chats numbered from..to to p, in one write.
func chat(p *peer, from, to int) {
	var b []byte
	for i := from; i <= to; i++ {
		b, _ = wire.AppendFrame(b, &proto.Chat{Num: uint64(i), Text: "hi"})
	}
	p.raw(b)
}

// TestHeldAcksNeverStallAWindow: a streaming sender's Acks are held for up
// to ackDelay to be written together, so a sender whose window is full
// must still get them all, from the loop's timer, when it stops to wait
// for them. Each message is its own write (its own callback); the window
// is refilled only once every Ack has come.
func TestHeldAcksNeverStallAWindow(t *testing.T) {
	s := startServer(t, nil)
	const window, rounds = 8, 20
	t.Run("full window", func(t *testing.T) {
		sender, _ := joinAs(t, s, "w", "sender")
		var worst time.Duration
		for r := range rounds {
			for i := 1; i <= window; i++ {
				chat(sender, r*window+i, r*window+i)
			}
			worst = max(worst, awaitAcks(t, sender, window, 10*time.Second))
		}
		t.Logf("%d windows of %d: the slowest was acknowledged %v after its last message", rounds, window, worst)
		if worst > 5*time.Second {
			t.Errorf("a full window waited %v for its Acks (held for %v)", worst, ackDelay)
		}
	})
	t.Run("one per interval", func(t *testing.T) {
		sender, _ := joinAs(t, s, "i", "sender")
		var worst time.Duration
		for i := 1; i <= window+1; i++ {
			chat(sender, i, i)
			worst = max(worst, awaitAcks(t, sender, 1, 10*time.Second))
			time.Sleep(5 * ackDelay) // the sender's pace, not a wait for a condition
		}
		t.Logf("%d messages %v apart: the slowest Ack took %v", window+1, 5*ackDelay, worst)
	})
}

// TestStreamingSenderAcksCoalesce: a sender that streams gets its Acks in
// fewer writes than it has reads. In a room of two, one read of the
// sender's messages cost a write to the reader and another of Acks to the
// sender; NATS makes only the first. The sender writes bursts of 4, each
// after the reader has the last burst (so each is a read of its own).
func TestStreamingSenderAcksCoalesce(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Metrics = true; c.Loops = 1 })
	sender, _ := joinAs(t, s, "c", "sender")
	reader, _ := joinAs(t, s, "c", "reader")
	const bursts, size = 300, 4
	before := s.Metrics().Writes
	start := time.Now()
	for b := range bursts {
		chat(sender, b*size+1, b*size+size)
		for got := 0; got < size; {
			m, err := reader.next(10 * time.Second)
			if err != nil {
				t.Fatalf("reader, burst %d: %v", b, err)
			}
			if _, ok := m.(*proto.Deliver); ok {
				got++
			}
		}
	}
	took := time.Since(start)
	writes := s.Metrics().Writes - before
	awaitAcks(t, sender, bursts*size, 10*time.Second)
	per := took / bursts
	t.Logf("%d bursts of %d messages, one every %v: %d writes (%.2f a burst; one to the reader, and the sender's Acks)",
		bursts, size, per, writes, float64(writes)/bursts)
	if per > ackDelay/4 {
		t.Logf("bursts %v apart are too slow here to show Acks held for %v", per, ackDelay)
		return
	}
	if writes > bursts*3/2 {
		t.Errorf("%d writes for %d bursts: the sender's Acks were not held across reads", writes, bursts)
	}
}
