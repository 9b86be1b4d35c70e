package chatserver

import (
	"fmt"
	"net"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
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
	took := sendEachAcked(t, sender, 2, 1+n)
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

// TestPacedBigRoomLosesNothing: a room big enough for paced rounds, with
// a slow reader (a small receive buffer and a pause per message, against
// a 16 KiB HighWater), members joining and one leaving while a sender
// streams: every reader gets the room's messages exactly once and in
// order, from its join to the end.
func TestPacedBigRoomLosesNothing(t *testing.T) {
	const n, chunk = 1500, 50
	s := startServer(t, func(c *Config) { c.Loops, c.HighWater = 1, 16<<10 })
	sender, _ := joinAs(t, s, "big", "sender")
	type result struct {
		user string
		err  error
	}
	results := make(chan result, 2*paceShard)
	readers := 0
	// read takes p's Delivers until message n, and checks each follows
	// the last by one room sequence number, from the one after its join.
	read := func(user string, p *peer, after uint64, pause time.Duration) {
		readers++
		go func() {
			want := after + 1
			for want <= n {
				m, err := p.next(30 * time.Second)
				if err != nil {
					results <- result{user, fmt.Errorf("waiting for seq %d: %w", want, err)}
					return
				}
				d, ok := m.(*proto.Deliver)
				if !ok {
					continue
				}
				if d.Seq != want {
					results <- result{user, fmt.Errorf("got seq %d, want %d", d.Seq, want)}
					return
				}
				want++
				time.Sleep(pause)
			}
			results <- result{user, nil}
		}()
	}
	var leaver *peer
	for i := range paceShard + 4 {
		user := fmt.Sprintf("reader%02d", i)
		p, j := joinAs(t, s, "big", user)
		if i == 0 {
			leaver = p // it leaves mid-stream, unread
			continue
		}
		read(user, p, j.Seq, 0)
	}
	// A slow reader with a small receive buffer.
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	slow := newPeer(t, nc)
	slow.Hello(&proto.Hello{Agent: "test"})
	slow.send(&proto.Join{Room: "big", User: "slow"})
	j := slow.expect(proto.TJoined).(*proto.Joined)
	read("slow", slow, j.Seq, 200*time.Microsecond)

	for sent := 0; sent < n; sent += chunk {
		switch sent {
		case 10 * chunk:
			for i := range 4 {
				user := fmt.Sprintf("late%d", i)
				p, j := joinAs(t, s, "big", user)
				read(user, p, j.Seq, 0)
			}
		case 20 * chunk:
			leaver.send(&proto.Leave{})
		}
		var b []byte
		for i := sent + 1; i <= sent+chunk; i++ {
			b, _ = wire.AppendFrame(b, &proto.Chat{Num: uint64(i), Text: "paced"})
		}
		sender.raw(b)
		awaitAcks(t, sender, chunk, 30*time.Second)
	}
	for range readers {
		if r := <-results; r.err != nil {
			t.Errorf("%s: %v", r.user, r.err)
		}
	}
	l := roomMembers(t, s, "big", "sender")[0].loop
	var paced time.Duration
	onLoop(t, l, func() { paced = l.paceFor })
	if paced == 0 {
		t.Errorf("no round to the room was paced: the test did not test pacing")
	}
	t.Logf("%d messages to %d readers, one slow, 4 joining and 1 leaving mid-stream; last pause %v", n, readers, paced)
}
