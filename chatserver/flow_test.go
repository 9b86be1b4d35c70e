package chatserver

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/time/rate"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
)

// memberLoops returns the fan-out loops of room's members, by user.
func memberLoops(t *testing.T, s *Server, room string, users ...string) []*loop {
	t.Helper()
	var out []*loop
	for _, m := range roomMembers(t, s, room, users...) {
		out = append(out, m.loop)
	}
	return out
}

// roomMembers returns room's members, by user.
func roomMembers(t *testing.T, s *Server, room string, users ...string) []*member {
	t.Helper()
	s.mu.Lock()
	r := s.rooms[room]
	s.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*member
	for _, u := range users {
		m := r.members[u]
		if m == nil {
			t.Fatalf("no member %q in room %q", u, room)
		}
		out = append(out, m)
	}
	return out
}

// shrinkSendBuffer gives the server's side of user's connection a small,
// fixed kernel send buffer (no autotuning, which grows it to 16 MiB on
// loopback here), so that the server's own outbound buffer holds what
// the member has not read within a few kilobytes.
func shrinkSendBuffer(t *testing.T, s *Server, room, user string) {
	t.Helper()
	s.mu.Lock()
	r := s.rooms[room]
	s.mu.Unlock()
	r.mu.Lock()
	fd := r.members[user].c.Fd()
	r.mu.Unlock()
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4<<10); err != nil {
		t.Fatal(err)
	}
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

// windowed is a sender that sends as a session does: at most window
// messages unacknowledged, waiting for their Acks before the next window.
type windowed struct {
	sent atomic.Int64 // messages written
	held atomic.Int64 // time spent waiting for Acks, in ns
	done chan error   // the outcome, once all are sent and acknowledged
}

// sendWindowed sends n messages of text from p, window at a time.
func sendWindowed(p *peer, n, window int, text string) *windowed {
	return sendWindowedTo(p, n, window, text, "")
}

// sendWindowedTo is sendWindowed for resends addressed to one member
// (Chat.To), as a session answers a Resend; to "" sends to the room.
func sendWindowedTo(p *peer, n, window int, text, to string) *windowed {
	w := &windowed{done: make(chan error, 1)}
	go func() {
		var b []byte
		for i := 1; i <= n; i++ {
			b, _ = wire.AppendFrame(b[:0], &proto.Chat{Num: uint64(i), Text: text, To: to})
			if _, err := p.conn.Write(b); err != nil {
				w.done <- err
				return
			}
			w.sent.Store(int64(i))
			if i%window != 0 {
				continue
			}
			start := time.Now()
			for acked := 0; acked < window; {
				m, err := p.next(time.Minute)
				if err != nil {
					w.done <- fmt.Errorf("sender waiting for acks at %d: %w", i, err)
					return
				}
				if _, ok := m.(*proto.Ack); ok {
					acked++
				}
			}
			w.held.Add(int64(time.Since(start)))
		}
		w.done <- nil
	}()
	return w
}

// acksHeld returns room id and a function reporting whether it holds
// Acks (a member is behind).
func acksHeld(s *Server, id string) (*room, func() bool) {
	s.mu.Lock()
	r := s.rooms[id]
	s.mu.Unlock()
	return r, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.acks) > 0
	}
}

// readAll reads n Deliver frames, numbered 1 to n, from p at one per pace,
// skipping Presence and Pong; anything else fails the test.
func readAll(t *testing.T, p *peer, n int, pace time.Duration) {
	t.Helper()
	for i := 1; i <= n; {
		m, err := p.next(30 * time.Second)
		if err != nil {
			t.Fatalf("slow member lost the stream at %d: %v", i, err)
		}
		switch m := m.(type) {
		case *proto.Deliver:
			if m.Num != uint64(i) {
				t.Fatalf("slow member got %d, want %d", m.Num, i)
			}
			i++
			if pace > 0 {
				time.Sleep(pace) // the pace of a slow reader, not a wait for a condition
			}
		case *proto.Presence, *proto.Presences, *proto.Pong:
		default:
			t.Fatalf("slow member got %+v at %d", m, i)
		}
	}
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

	const n = 2000 // 8 MB, 32 times MaxOutbound
	w := sendWindowed(sender, n, 16, strings.Repeat("z", 4000))
	r, held := acksHeld(s, "r")
	testkit.WaitFor(t, 30*time.Second, "the sender held, or done", func() bool { return held() || w.sent.Load() == n })
	r.mu.Lock()
	queued := r.shardFor(loops[1]).queued.Load()
	r.mu.Unlock()
	t.Logf("while the reader's loop was stopped: sender sent %d of %d, %d bytes queued for the reader", w.sent.Load(), n, queued)
	if w.sent.Load() == n {
		t.Errorf("the sender got Acks for all %d messages while none was written to the reader", n)
	}
	unblock()
	readAll(t, slow, n, 0)
	if err := <-w.done; err != nil {
		t.Fatalf("sender: %v", err)
	}
}

// TestBehindMemberOutlastsPause: a member that stops reading while it
// goes on pinging, as a client whose user stopped taking events does, is
// behind (the room's senders are held) and its input is paused. Flow
// control bounds its backlog, and SlowTimeout bounds how long it may
// stay so: it is not cut off after the guard's shorter maxPause, which is
// for a member that nobody holds back for. Before, it was cut off at
// maxPause with its backlog under HighWater plus the sender's window.
func TestBehindMemberOutlastsPause(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.MaxOutbound = 256 << 10
		c.HighWater = 140 << 10 // past MaxOutbound/2, where its input pauses
		c.SlowTimeout = time.Minute
	})
	sender, _ := joinAs(t, s, "r", "sender")
	slow := dialSlow(t, s, "r", "slow")
	shrinkSendBuffer(t, s, "r", "slow")
	const n = 500
	w := sendWindowed(sender, n, 16, strings.Repeat("z", 4000))

	s.mu.Lock()
	r := s.rooms["r"]
	s.mu.Unlock()
	ping, _ := wire.AppendFrame(nil, &proto.Ping{ID: 1})
	stall := maxPause + 4*guardTick
	start := time.Now()
	behind := false
	for time.Since(start) < stall {
		if _, err := slow.conn.Write(ping); err != nil {
			t.Fatalf("slow member's ping: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // a client's ping pace, not a wait for a condition
		behind = behind || r.nbehind.Load() > 0
	}
	t.Logf("after a %v stall: %d bytes unsent (input paused past %d)", stall, s.outBytes.Load(), s.cfg.MaxOutbound/2)
	if !behind {
		t.Errorf("the room never had a member behind while one stopped reading")
	}
	readAll(t, slow, n, 0)
	if err := <-w.done; err != nil {
		t.Fatalf("sender: %v", err)
	}
}

// TestFloodingSenderIsSlowed: a member sending past SendRate has its
// input left unread until its rate allows more, so a sender that keeps a
// window of unacknowledged messages, as a session does, is slowed to the
// rate and loses nothing; before, it was cut off (rate_limited) at the
// end of its burst. One that goes on sending regardless is cut off once
// maxPausedInbound bytes wait.
func TestFloodingSenderIsSlowed(t *testing.T) {
	const sendRate, burst = 200, 20
	s := startServer(t, func(c *Config) { c.SendRate = sendRate; c.SendBurst = burst })
	t.Run("windowed", func(t *testing.T) {
		sender, _ := joinAs(t, s, "slowed", "sender")
		reader, _ := joinAs(t, s, "slowed", "reader")
		const n = 300
		start := time.Now()
		w := sendWindowed(sender, n, 16, "flood")
		readAll(t, reader, n, 0)
		if err := <-w.done; err != nil {
			t.Fatalf("sender: %v", err)
		}
		took, least := time.Since(start), time.Duration(n-burst)*time.Second/sendRate
		t.Logf("%d messages at most %d/s (burst %d) took %v; the rate allows them in %v", n, sendRate, burst, took, least)
		if took < least/2 {
			t.Errorf("%d messages took %v: the rate of %d/s did not slow them", n, took, sendRate)
		}
	})
	t.Run("flooding", func(t *testing.T) {
		flooder, _ := joinAs(t, s, "flooded", "flooder")
		var b []byte
		for i := uint64(1); len(b) < 4*maxPausedInbound; i++ {
			b, _ = wire.AppendFrame(b, &proto.Chat{Num: i, Text: strings.Repeat("f", 1000)})
		}
		go flooder.conn.Write(b) //nolint:errcheck // the close below tells
		flooder.ExpectClosed(proto.CodeRateLimited)
	})
}

// TestResendsPacedByAcks: a long answer to a Resend, sent as a session
// sends it (a window of unacknowledged resends, the next once their Acks
// return), to a member that reads nothing. The server acknowledges each
// resend (Ack.Seq 0) and holds the Acks while the asker is behind, so the
// answer stops at about the asker's HighWater plus a window or two, under
// MaxOutbound, and the asker then gets it all, in order, without being
// cut off. Before, resends were not acknowledged at all: a sender had to
// write its whole answer at once, past the asker's MaxOutbound.
func TestResendsPacedByAcks(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxOutbound = 256 << 10 })
	sender, _ := joinAs(t, s, "r", "sender")
	slow := dialSlow(t, s, "r", "slow")
	shrinkSendBuffer(t, s, "r", "slow")
	const n, window, size = 2000, 16, 4000 // 8 MB, 32 times MaxOutbound
	w := sendWindowedTo(sender, n, window, strings.Repeat("z", size), "slow")
	r, held := acksHeld(s, "r")
	testkit.WaitFor(t, 30*time.Second, "the answer held, or all sent", func() bool { return held() || w.sent.Load() == n })
	// The asker's backlog, sampled for a while: what the sender had in
	// flight when its Acks stopped still arrives.
	var backlog int64
	for start := time.Now(); time.Since(start) < 500*time.Millisecond; {
		b := s.outBytes.Load()
		r.mu.Lock()
		for _, sh := range r.shards {
			b += sh.queued.Load()
		}
		r.mu.Unlock()
		backlog = max(backlog, b)
		time.Sleep(10 * time.Millisecond) // sampling pace, not a wait for a condition
	}
	t.Logf("asker reading nothing: %d of %d resends written, asker's backlog %d bytes (HighWater %d, MaxOutbound %d)",
		w.sent.Load(), n, backlog, s.cfg.HighWater, s.cfg.MaxOutbound)
	if w.sent.Load() == n {
		t.Fatalf("the sender got Acks for all %d resends while the asker read nothing", n)
	}
	if backlog >= int64(s.cfg.MaxOutbound) {
		t.Errorf("asker's backlog %d bytes, want under MaxOutbound %d", backlog, s.cfg.MaxOutbound)
	}
	readAll(t, slow, n, 0)
	if err := <-w.done; err != nil {
		t.Fatalf("sender: %v", err)
	}
}

// TestResendsUnacknowledgedBeforeV4: a member that speaks a protocol
// version before 4 gets no Ack for a resend, as before; its next live
// message's Ack is the first it gets.
func TestResendsUnacknowledgedBeforeV4(t *testing.T) {
	s := startServer(t, nil)
	_, _ = joinAs(t, s, "r", "asker")
	p := dial(t, s)
	p.send(&proto.Hello{V: 3, Agent: "v3"})
	if w := p.expect(proto.TWelcome).(*proto.Welcome); w.V != 3 {
		t.Fatalf("welcome %+v, want version 3", w)
	}
	p.send(&proto.Join{Room: "r", User: "old"})
	p.expect(proto.TJoined)
	p.send(&proto.Chat{Num: 1, Text: "again", To: "asker"})
	p.send(&proto.Chat{Num: 2, Text: "live"})
	if a := p.expect(proto.TAck).(*proto.Ack); a.Num != 2 || a.Seq == 0 {
		t.Fatalf("first Ack %+v, want the live message's", a)
	}
}

// A sender that ignores its window while the room withholds its Acks
// (a member is behind) has its input left unread once more than HighWater
// of its messages wait for Acks, and is cut off (rate_limited) when it
// sends maxPausedInbound more: the slow member is not the one cut off.
// Before, the flooder was read on, the slow member's backlog passed
// MaxOutbound and it was cut off (slow_consumer), the flooder never
// (abuse probe, 2026-12-01).
func TestWindowIgnoringSenderIsCutNotTheReader(t *testing.T) {
	t.Run("live messages", func(t *testing.T) { windowIgnoringSender(t, wire.Version, "") })
	// A member of a version before 4 gets no Ack for a resend, so its
	// resends were never withheld: flooding Chat{To: slow} it was never
	// paused, and the slow member was cut off (slow_consumer) again each
	// time it came back (abuse probe, 2026-12-05). They count against
	// its window now, released unacknowledged.
	t.Run("resends, version 3", func(t *testing.T) { windowIgnoringSender(t, 3, "slow") })
}

func windowIgnoringSender(t *testing.T, v int, to string) {
	s := startServer(t, func(c *Config) { c.MaxOutbound = 256 << 10 })
	slow := dialSlow(t, s, "w", "slow")
	shrinkSendBuffer(t, s, "w", "slow")
	flooder := dial(t, s)
	flooder.send(&proto.Hello{V: v, Agent: "flooder"})
	flooder.expect(proto.TWelcome)
	flooder.send(&proto.Join{Room: "w", User: "flooder"})
	flooder.expect(proto.TJoined)
	slow.expect(proto.TPresence)
	var b []byte
	for i := uint64(1); len(b) < 8<<20; i++ {
		b, _ = wire.AppendFrame(b, &proto.Chat{Num: i, Text: strings.Repeat("f", 4000), To: to})
	}
	go flooder.conn.Write(b) //nolint:errcheck // the close below tells
	flooder.ExpectClosed(proto.CodeRateLimited)
	// The slow member is still in: it reads what reached it, in order,
	// with no error among it, and its connection stays open.
	for i := uint64(1); ; i++ {
		m, err := slow.next(5 * time.Second)
		if err != nil {
			if i < 2 {
				t.Fatalf("slow member read nothing: %v", err)
			}
			t.Logf("slow member read %d messages, then nothing more (%v): not cut off", i-1, err)
			break
		}
		switch m := m.(type) {
		case *proto.Deliver:
			if m.Num != i {
				t.Fatalf("slow member got %d, want %d", m.Num, i)
			}
		case *proto.Presence:
			i--
		default:
			t.Fatalf("slow member got %T %+v after %d messages", m, m, i-1)
		}
	}
	s.mu.Lock()
	r := s.rooms["w"]
	s.mu.Unlock()
	r.mu.Lock()
	_, in := r.members["slow"]
	r.mu.Unlock()
	if !in {
		t.Fatal("the slow member is no longer in the room")
	}
}

// TestSendBucketMatchesLimiter: sendBucket lets through exactly the Chat
// frames rate.Limiter.AllowN(now, 1) did, the pacing it replaced on the
// loops, for bursts, steady streams and pauses at several rates.
func TestSendBucketMatchesLimiter(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		gaps  []time.Duration // between successive Chat frames, cycled
	}{
		{"default rate, back to back", 1_000_000, 100_000, []time.Duration{0}},
		{"default rate, 300 ns apart", 1_000_000, 100_000, []time.Duration{300}},
		{"200/s burst 20, a flood", 200, 20, []time.Duration{100 * time.Microsecond}},
		{"200/s burst 20, bursts and pauses", 200, 20, []time.Duration{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200 * time.Millisecond}},
		{"3/s burst 1", 3, 1, []time.Duration{100 * time.Millisecond, 250 * time.Millisecond}},
		{"burst 1 at a steady 1000/s", 1000, 1, []time.Duration{999 * time.Microsecond, 1001 * time.Microsecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := rate.NewLimiter(rate.Limit(tt.rate), tt.burst)
			var b sendBucket
			every, span := sendPace(tt.rate, tt.burst)
			now := time.Unix(1_700_000_000, 0)
			allowed := 0
			for i := range 300_000 {
				now = now.Add(tt.gaps[i%len(tt.gaps)])
				want := lim.AllowN(now, 1)
				if got := b.allow(now.UnixNano(), every, span); got != want {
					t.Fatalf("frame %d (%d let through): bucket says %v, limiter %v", i, allowed, got, want)
				}
				if want {
					allowed++
				}
			}
			t.Logf("%d of 300000 let through", allowed)
		})
	}
}

// TestReturningSlowMemberHoldsNoAcks: a member cut off for staying behind
// past SlowTimeout that joins the same room again no longer holds the
// room's Acks: it gets what fits in its MaxOutbound and is cut off past
// it, and the senders go on meanwhile. Before, it held every sender
// again, for SlowTimeout each time it came back with its ticket (abuse
// sweep, 2026-12-03: a member that pinged and never read stalled the
// others' messages for 52 s, then 59 s, over and over).
func TestReturningSlowMemberHoldsNoAcks(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.MaxOutbound = 1 << 20 // HighWater 256 KiB: a sender's window never fills a shard's queue past it
		c.SlowTimeout = 2 * time.Second
		c.Metrics = true
	})
	// The first time, the member holds the room until SlowTimeout.
	_, sender, w := slowHoldsRoom(t, s)
	testkit.WaitFor(t, 30*time.Second, "the slow member to be cut off", func() bool { return s.Metrics().SlowConsumers == 1 })
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the slow member to be closed", func() bool { return s.Metrics().Conns == 1 })
	// It comes back and does not read again: it no longer holds the room.
	returnsHoldingNothing(t, s, sender, 2)
}

// TestSlowMemberLeavingWhileBehindHoldsNoAcksAgain: a member that leaves
// while it holds its room's Acks, before SlowTimeout cuts it off, is
// remembered as a slow one: joining again, it holds the room no more.
func TestSlowMemberLeavingWhileBehindHoldsNoAcksAgain(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.MaxOutbound = 1 << 20
		c.SlowTimeout = time.Minute // never reached: it leaves first
		c.Metrics = true
	})
	first, sender, w := slowHoldsRoom(t, s)
	first.conn.Close()
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the slow member to be gone", func() bool { return s.Metrics().Conns == 1 })
	returnsHoldingNothing(t, s, sender, 1)
}

// slowHoldsRoom has the member "slow" of room r, which does not read,
// hold the room's Acks while "sender" sends; it returns both, and the
// sending under way.
func slowHoldsRoom(t *testing.T, s *Server) (slow, sender *peer, w *windowed) {
	t.Helper()
	slow = dialSlow(t, s, "r", "slow")
	shrinkSendBuffer(t, s, "r", "slow")
	sender, _ = joinAs(t, s, "r", "sender")
	slow.expect(proto.TPresence)
	_, held := acksHeld(s, "r")
	w = sendWindowed(sender, 600, 16, strings.Repeat("s", 4000))
	testkit.WaitFor(t, 30*time.Second, "the slow member to hold the room's Acks", held)
	return slow, sender, w
}

// returnsHoldingNothing has the member "slow" of room r join again and not
// read while a new sender sends, and checks that it is cut off (the
// server's slow cut-offs reach cuts) without ever holding the room's Acks.
// The first sender leaves first: left in the room, not reading, it fell
// behind at times and held the Acks itself.
func returnsHoldingNothing(t *testing.T, s *Server, sender *peer, cuts uint64) {
	t.Helper()
	sender2, _ := joinAs(t, s, "r", "sender2")
	sender.conn.Close()
	testkit.WaitFor(t, 30*time.Second, "the first sender to be gone", func() bool { return s.Metrics().Conns == 1 })
	dialSlow(t, s, "r", "slow")
	shrinkSendBuffer(t, s, "r", "slow")
	// The room may hold its Acks for a moment while its queue on a
	// starved loop passes HighWater; the member must never be behind.
	marks := s.Metrics().FellBehind
	w := sendWindowed(sender2, 1000, 16, strings.Repeat("s", 4000))
	testkit.WaitFor(t, 60*time.Second, "the returning member to be cut off, or to fall behind", func() bool {
		return s.Metrics().SlowConsumers == cuts || s.Metrics().FellBehind > marks
	})
	if s.Metrics().FellBehind > marks {
		t.Fatal("a member remembered as slow, back in its room, holds the room's Acks again")
	}
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
}

// TestSlowCutsBounded: the memory of slow cut-offs forgets after
// slowMemory and holds at most maxSlowCuts members.
func TestSlowCutsBounded(t *testing.T) {
	var sc slowCuts
	t0 := time.Now()
	sc.remember(slowKey{"r", "old"}, t0)
	if !sc.recent(slowKey{"r", "old"}, t0.Add(slowMemory)) || sc.recent(slowKey{"r", "other"}, t0) {
		t.Fatal("recent is wrong within slowMemory")
	}
	if sc.recent(slowKey{"r", "old"}, t0.Add(slowMemory+time.Second)) {
		t.Fatal("remembered past slowMemory")
	}
	for i := range 3 * maxSlowCuts {
		sc.remember(slowKey{"r", fmt.Sprint(i % (2 * maxSlowCuts))}, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if len(sc.at) > maxSlowCuts || len(sc.order) > 2*maxSlowCuts {
		t.Fatalf("%d remembered, %d in order; want at most %d and %d", len(sc.at), len(sc.order), maxSlowCuts, 2*maxSlowCuts)
	}
	last := t0.Add(time.Duration(3*maxSlowCuts-1) * time.Millisecond)
	if !sc.recent(slowKey{"r", fmt.Sprint((3*maxSlowCuts - 1) % (2 * maxSlowCuts))}, last) {
		t.Fatal("the newest cut-off was forgotten")
	}
	sc.remember(slowKey{"r", "late"}, last.Add(slowMemory+time.Second))
	if len(sc.at) != 1 {
		t.Fatalf("%d remembered after slowMemory, want only the newest", len(sc.at))
	}
}
