package chatserver

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
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
// streams, and a room of two streaming on the same loop: every reader
// gets its room's messages exactly once and in order, from its join to
// the end.
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
	// A room of two on the same loop streams alongside: its messages go
	// out during the big room's pauses (drainBeside), and must arrive
	// exactly once and in order too.
	alice, _ := joinAs(t, s, "small", "alice")
	bob, jb := joinAs(t, s, "small", "bob")
	read("bob", bob, jb.Seq, 0)

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
		alice.raw(b)
		awaitAcks(t, sender, chunk, 30*time.Second)
		awaitAcks(t, alice, chunk, 30*time.Second)
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
	t.Logf("%d messages to %d readers (one in a room of two beside the big room), one slow, 4 joining and 1 leaving mid-stream; last pause %v", n, readers, paced)
}

// TestSmallRoomNotHeldByPacedRound: while a big room's rounds are paced
// (here a pause of 3 s, Config.pace), a room of two on the same loop is
// served at once, and the big room's message waits for the pause. The
// pause used to gate the loop's whole queue, so alice's message to bob
// waited for the big room's pause (up to 10 ms by default: a small room's
// median latency beside a busy big room went from 0.9 to 2 ms,
// BenchmarkSmallRoomBesideBigRoom).
func TestSmallRoomNotHeldByPacedRound(t *testing.T) {
	const pace = 3 * time.Second
	s := startServer(t, func(c *Config) { c.Loops, c.pace = 1, pace })
	sender, _ := joinAs(t, s, "big", "sender")
	readers := make([]*peer, paceShard)
	for i := range readers {
		readers[i], _ = joinAs(t, s, "big", fmt.Sprintf("reader%02d", i))
	}
	alice, _ := joinAs(t, s, "small", "alice")
	bob, _ := joinAs(t, s, "small", "bob")
	chat(sender, 1, 1) // a round to the big room: the pause begins when it ends
	for _, r := range readers {
		awaitDelivers(t, r, 1, 1, 10*time.Second)
	}
	paused := time.Now()
	chat(sender, 2, 2) // queued until the pause ends
	chat(alice, 1, 1)
	awaitDelivers(t, bob, 1, 1, 10*time.Second)
	took := time.Since(paused)
	t.Logf("bob got alice's message %v into the big room's %v pause", took.Round(time.Microsecond), pace)
	if took >= pace/2 {
		t.Errorf("bob got alice's message %v after she sent it: it waited for the big room's pause (%v)", took, pace)
	}
	for _, r := range readers {
		awaitDelivers(t, r, 2, 2, 10*time.Second)
	}
	if waited := time.Since(paused); waited < pace/2 {
		t.Errorf("the big room's second message came %v after the first round, within its %v pause: the round was not paced", waited, pace)
	}
}

// TestSmallRoomAcrossLoopsNotHeldByPacedRound: the same with two loops,
// alice on one and bob on the other, each loop pausing for its shard of
// the big room: alice's message reaches bob's loop from hers, and wakes it
// though the loop's queue waits for the pause. It waited for the pause
// before (a push from another loop woke the loop only when its queue had
// been empty).
func TestSmallRoomAcrossLoopsNotHeldByPacedRound(t *testing.T) {
	const pace = 3 * time.Second
	s := startServer(t, func(c *Config) { c.Loops, c.pace = 2, pace })
	sender, _ := joinAs(t, s, "big", "sender")
	readers := make([]*peer, 2*paceShard+8) // a shard of 64 or more on each loop
	for i := range readers {
		readers[i], _ = joinAs(t, s, "big", fmt.Sprintf("reader%03d", i))
	}
	alice, _ := joinAs(t, s, "small", "alice")
	la := roomMembers(t, s, "small", "alice")[0].loop
	var bob *peer
	var lb *loop
	for i := 0; lb == nil || lb == la; i++ {
		if i == 4 {
			t.Fatal("every bob landed on alice's loop")
		}
		if i > 0 {
			hello(t, s) // one more connection on bob's last loop
		}
		name := fmt.Sprintf("bob%d", i)
		bob, _ = joinAs(t, s, "small", name)
		lb = roomMembers(t, s, "small", name)[0].loop
	}
	s.mu.Lock()
	big := s.rooms["big"]
	s.mu.Unlock()
	big.mu.Lock()
	shards := slices.Clone(big.shards)
	big.mu.Unlock()
	for _, sh := range shards {
		var n int
		onLoop(t, sh.loop, func() { n = len(sh.members) })
		if n < paceShard {
			t.Fatalf("the big room has %d members on a loop, want %d or more", n, paceShard)
		}
	}
	chat(sender, 1, 1)
	for _, r := range readers {
		awaitDelivers(t, r, 1, 1, 10*time.Second)
	}
	paused := time.Now()
	chat(sender, 2, 2) // queued on both loops until their pauses end
	testkit.WaitFor(t, pace/2, "bob's loop pausing", func() bool {
		var waits bool
		onLoop(t, lb, func() { waits = !lb.drainAt.IsZero() })
		return waits
	})
	sent := time.Now()
	chat(alice, 1, 1)
	awaitDelivers(t, bob, 1, 1, 10*time.Second)
	took := time.Since(sent)
	t.Logf("bob got alice's message from the other loop %v after she sent it, in the big room's %v pause", took.Round(time.Microsecond), pace)
	if time.Since(paused) >= pace/2 {
		t.Errorf("bob got alice's message %v after she sent it: it waited for his loop's pause (%v)", took, pace)
	}
}

// BenchmarkSmallRoomBesideBigRoom: what paced rounds cost a room of two
// that shares a loop with a big room under load. A sender floods a room
// of 2 x paceShard readers at about 4,000 messages a second; alice and bob,
// on the same loop, take turns: alice sends, and the time until bob reads
// the Deliver is one sample. Run with the big room's rounds paced (the
// default) and unpaced (a pause of a nanosecond); reports the samples'
// p50 and p99 in microseconds.
func BenchmarkSmallRoomBesideBigRoom(b *testing.B) {
	for _, tc := range []struct {
		name string
		pace time.Duration
	}{{"paced", 0}, {"unpaced", time.Nanosecond}} {
		b.Run(tc.name, func(b *testing.B) {
			s := startServer(b, func(c *Config) {
				c.Loops, c.pace = 1, tc.pace
				// Closing 130 connections at once logs gnet's stale events.
				c.Logger = testkit.LoggerAt(b, slog.LevelError)
			})
			var readers sync.WaitGroup
			b.Cleanup(readers.Wait) // after every connection has closed
			discard := func(p *peer) {
				readers.Add(1)
				go func() {
					defer readers.Done()
					_, _ = io.Copy(io.Discard, p.conn)
				}()
			}
			for i := range 2 * paceShard {
				p, _ := joinAs(b, s, "big", fmt.Sprintf("reader%03d", i))
				discard(p)
			}
			flooder, _ := joinAs(b, s, "big", "flooder")
			discard(flooder) // its Acks
			alice, _ := joinAs(b, s, "small", "alice")
			bob, _ := joinAs(b, s, "small", "bob")
			discard(alice) // her Acks
			stop := make(chan struct{})
			readers.Add(1)
			go func() {
				defer readers.Done()
				var buf []byte
				for num := uint64(1); ; num += 4 {
					select {
					case <-stop:
						return
					default:
					}
					buf = buf[:0]
					for i := range uint64(4) {
						buf, _ = wire.AppendFrame(buf, &proto.Chat{Num: num + i, Text: "flood"})
					}
					if _, err := flooder.conn.Write(buf); err != nil {
						return
					}
					time.Sleep(time.Millisecond) // the flood's rate, not synchronisation
				}
			}()
			b.Cleanup(func() { close(stop) })
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				frame, _ := wire.AppendFrame(nil, &proto.Chat{Num: uint64(i + 1), Text: "hi"})
				if _, err := alice.conn.Write(frame); err != nil {
					b.Fatal(err)
				}
				for {
					m, err := bob.next(10 * time.Second)
					if err != nil {
						b.Fatalf("bob waiting for message %d: %v", i+1, err)
					}
					if d, ok := m.(*proto.Deliver); ok && d.Num == uint64(i+1) {
						break
					}
				}
				took = append(took, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}
