package chatserver

import (
	"fmt"
	"testing"
	"time"
)

// TestBigRoomRoundsPaced: after a round of fan-out to a shard of
// paceShard members, the loop waits before the next (here a fixed second,
// Config.pace), and the messages sent meanwhile leave together: one write
// to each reader for the lot, not one per message. The sender sends each
// message only once the last is acknowledged, so each is a read of its
// own; Acks are not paced. Writes are counted, not timed.
func TestBigRoomRoundsPaced(t *testing.T) {
	const n, pace = 16, time.Second
	s := startServer(t, func(c *Config) {
		// A hold of a nanosecond holds nothing across callbacks, so every
		// round is a write to every reader.
		c.Metrics, c.Loops, c.holdDelay, c.pace = true, 1, time.Nanosecond, pace
	})
	sender, _ := joinAs(t, s, "big", "sender")
	readers := make([]*peer, paceShard)
	for i := range readers {
		readers[i], _ = joinAs(t, s, "big", fmt.Sprintf("reader%02d", i))
	}
	chat(sender, 1, 1)
	for _, r := range readers {
		awaitDelivers(t, r, 1, 1, 10*time.Second)
	}
	awaitAcks(t, sender, 1, 10*time.Second)
	before := writesSoFar(t, s, sender)
	start := time.Now()
	for i := 2; i < 2+n; i++ {
		chat(sender, i, i)
		awaitAcks(t, sender, 1, 10*time.Second)
	}
	took := time.Since(start)
	for _, r := range readers {
		awaitDelivers(t, r, 2, 1+n, 10*time.Second)
	}
	writes := writesSoFar(t, s, sender) - before
	// n writes of Acks, a round per pause, and up to 4 Pongs.
	t.Logf("%d messages to %d readers, each message its own read, sent in %v: %d writes, Acks and Pongs included (%d unpaced)",
		n, paceShard, took, writes, n+n*paceShard+4)
	if took >= pace {
		t.Logf("sending outlasted the %v pause here: not checked", pace)
		return
	}
	if max := uint64(n + 2*paceShard + 4); writes > max {
		t.Errorf("%d writes (over %d): the paced messages were not gathered into one round", writes, max)
	}
}
