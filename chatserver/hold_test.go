package chatserver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/proto"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

// awaitDelivers reads from p until the Delivers numbered from..to have
// come, in order, within timeout.
func awaitDelivers(t *testing.T, p *peer, from, to int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for want := from; want <= to; {
		m, err := p.next(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for message %d (of %d..%d): %v", want, from, to, err)
		}
		if d, ok := m.(*proto.Deliver); ok {
			if int(d.Num) != want {
				t.Fatalf("got message %d, want %d", d.Num, want)
			}
			want++
		}
	}
}

// writesSoFar returns the server's write count once every callback before
// the call has published its tally: the loop publishes it when a callback
// ends, and a second Pong is written only after the first one's callback
// ended. It counts up to two Pongs more than the callers' own writes.
func writesSoFar(t *testing.T, s *Server, p *peer) uint64 {
	t.Helper()
	for i := range 2 {
		b, _ := wire.AppendFrame(nil, &proto.Ping{ID: uint64(i + 1)})
		p.raw(b)
		for {
			m, err := p.next(10 * time.Second)
			if err != nil {
				t.Fatalf("waiting for a Pong: %v", err)
			}
			if _, ok := m.(*proto.Pong); ok {
				break
			}
		}
	}
	return s.Metrics().Writes
}

// TestStreamingReceiverWritesGathered: a receiver whose room streams gets
// its deliveries gathered into fewer writes (holdDelay), while a lone
// message is written at once. The sender sends each message only once
// the last is acknowledged, so each is a read (a callback) of its own:
// without the hold, each would be a write to the reader too. Writes are
// counted, not timed: with an hour's hold, a lone message held would not
// come within the test's bound at all, and the stream's only write to the
// reader is the one its cap (holdFrames) forces.
func TestStreamingReceiverWritesGathered(t *testing.T) {
	// stream sends a lone message, then n more, each once the last is
	// acknowledged, and waits until the reader has them all. It returns
	// the writes made from the lone message's Ack to the end, and how
	// long the n took to send. The count includes up to 4 Pongs
	// (writesSoFar).
	stream := func(t *testing.T, s *Server, room string, n int) (writes uint64, took time.Duration) {
		sender, _ := joinAs(t, s, room, "sender")
		reader, _ := joinAs(t, s, room, "reader")
		// A lone message: nothing was delivered to the reader before.
		chat(sender, 1, 1)
		awaitDelivers(t, reader, 1, 1, 10*time.Second)
		awaitAcks(t, sender, 1, 10*time.Second)
		before := writesSoFar(t, s, sender)
		took = sendEachAcked(t, sender, 2, 1+n)
		awaitDelivers(t, reader, 2, 1+n, 10*time.Second)
		return writesSoFar(t, s, sender) - before, took
	}
	t.Run("cap", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.Metrics, c.Loops, c.holdDelay = true, 1, time.Hour })
		writes, _ := stream(t, s, "cap", holdFrames)
		// One write of Acks per message (each waited for), one of
		// holdFrames deliveries to the reader, and the Pongs.
		t.Logf("%d messages, each its own read: %d writes, Pongs included (%d without the hold)", holdFrames, writes, 2*holdFrames)
		if writes > holdFrames+1+4 {
			t.Errorf("%d writes for %d messages: the reader's deliveries were not gathered into one", writes, holdFrames)
		}
	})
	t.Run("quiet", func(t *testing.T) {
		// The stream stops short of the cap: the loop's timer writes what
		// is held once the hold is over.
		const n, hold = 16, time.Second
		s := startServer(t, func(c *Config) { c.Metrics, c.Loops, c.holdDelay = true, 1, hold })
		writes, took := stream(t, s, "quiet", n)
		t.Logf("%d messages in %v, each its own read: %d writes, Pongs included (%d without the hold)", n, took, writes, 2*n)
		if took >= hold {
			t.Logf("the stream outlasted the %v hold here: not checked", hold)
			return
		}
		if writes > n+1+4 {
			t.Errorf("%d writes for %d messages: the reader's deliveries were not gathered into one", writes, n)
		}
	})
}

// sendEachAcked sends messages from..to, each once the last is
// acknowledged (so each is a read of its own), and returns how long that
// took.
func sendEachAcked(t *testing.T, sender *peer, from, to int) time.Duration {
	t.Helper()
	start := time.Now()
	for i := from; i <= to; i++ {
		chat(sender, i, i)
		awaitAcks(t, sender, 1, 10*time.Second)
	}
	return time.Since(start)
}

// holdServer starts a server on loops event loops whose holds last an
// hour (only a cap or another write ends one), plaintext or TLS, and
// returns it with a function joining its room "held" as a user.
func holdServer(t *testing.T, tlsOn bool, loops int) (*Server, func(user string) *peer) {
	t.Helper()
	var ca tlsconfig.Files
	if tlsOn {
		ca = devCA(t)
	}
	s := startServer(t, func(c *Config) {
		c.Loops, c.holdDelay = loops, time.Hour
		if tlsOn {
			tc, err := tlsconfig.Server(ca.ServerCert, ca.ServerKey, "")
			if err != nil {
				t.Fatal(err)
			}
			c.Listen, c.TLS, c.TLSListen = "", tc, "127.0.0.1:0"
		}
	})
	return s, func(user string) *peer {
		if tlsOn {
			return tlsMember(t, s.Addr(), ca, "held", user)
		}
		p, _ := joinAs(t, s, "held", user)
		return p
	}
}

// heldLast is the last of the messages holdNine has held.
const heldLast = 9

// holdNine sends message 1 from sender, a lone message written to reader
// at once, then 2..heldLast, each once the last is acknowledged, which
// are held for reader (fewer than holdFrames, and an hour's hold).
func holdNine(t *testing.T, sender, reader *peer) {
	t.Helper()
	chat(sender, 1, 1)
	awaitDelivers(t, reader, 1, 1, 10*time.Second)
	for i := 2; i <= heldLast; i++ {
		chat(sender, i, i)
		awaitAcks(t, sender, 1, 10*time.Second)
	}
}

// afterHeld reads reader's frames until one that end reports true, which
// must come after the Delivers 2..heldLast, in order, and returns it.
func afterHeld(t *testing.T, reader *peer, end func(wire.Message) bool) wire.Message {
	t.Helper()
	next := 2
	for {
		m, err := reader.next(10 * time.Second)
		if err != nil {
			t.Fatalf("after message %d of %d: %v", next-1, heldLast, err)
		}
		if end(m) {
			if next <= heldLast {
				t.Fatalf("%T came before messages %d..%d held for the reader", m, next, heldLast)
			}
			return m
		}
		if d, ok := m.(*proto.Deliver); ok {
			if int(d.Num) != next {
				t.Fatalf("got message %d, want %d", d.Num, next)
			}
			next++
		}
	}
}

// isError reports whether m is an Error frame, and fails t if its code is
// not code.
func isError(t *testing.T, code proto.Code) func(wire.Message) bool {
	return func(m wire.Message) bool {
		e, ok := m.(*proto.Error)
		if ok && e.Code != code {
			t.Fatalf("error %+v, want code %d", e, code)
		}
		return ok
	}
}

// TestHeldDeliveriesKeepTheirPlace: a write of anything else to a member
// (here the Pong to its Ping) takes the deliveries held for it along,
// ahead of its own bytes: the member sees them first, and at once, not an
// hour later when the hold would end. Plaintext and TLS (whose held bytes
// are sealed when they leave).
func TestHeldDeliveriesKeepTheirPlace(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			_, join := holdServer(t, tlsOn, 1)
			sender, reader := join("sender"), join("reader")
			holdNine(t, sender, reader)
			reader.send(&proto.Ping{ID: 42})
			afterHeld(t, reader, func(m wire.Message) bool { _, ok := m.(*proto.Pong); return ok })
		})
	}
}

// TestHeldDeliveriesPrecedeAFatalError: a member cut off for a fault of
// its own (here a second Hello) is told why in a fatal Error frame, and
// the deliveries held for it were queued before that frame: they go
// ahead of it, as they did before deliveries were held, not dropped.
// Plaintext and TLS.
func TestHeldDeliveriesPrecedeAFatalError(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			_, join := holdServer(t, tlsOn, 1)
			sender, reader := join("sender"), join("reader")
			holdNine(t, sender, reader)
			reader.send(&proto.Hello{Agent: "again"})
			afterHeld(t, reader, isError(t, proto.CodeBadFrame))
		})
	}
}

// TestHeldDeliveriesPrecedeAGoodbye: the goodbyes the server queues for a
// member (its shutdown, a newer connection of the same user) take the
// deliveries held for it along, ahead of the Error frame, before the
// connection closes.
func TestHeldDeliveriesPrecedeAGoodbye(t *testing.T) {
	for _, c := range []struct {
		name string
		code proto.Code
		bye  func(s *Server, join func(string) *peer)
	}{
		{"shutdown", proto.CodeShutdown, func(s *Server, _ func(string) *peer) { go s.Close() }},
		{"replaced", proto.CodeConflict, func(_ *Server, join func(string) *peer) { join("reader") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, join := holdServer(t, false, 1)
			sender, reader := join("sender"), join("reader")
			holdNine(t, sender, reader)
			c.bye(s, join)
			afterHeld(t, reader, isError(t, c.code))
			reader.expectEOF()
		})
	}
}

// TestHeldDeliveriesPrecedeEveryReply: whatever else is written to a
// member whose deliveries are held (the Ack of its own message, a join's
// Presence, a resend answer, a forwarded Resend or Missed) comes after
// them, and brings them at once. The sender is on another event loop than
// the reader, so the deliveries and the forwarded frames reach the
// reader's loop through its queue (Execute).
func TestHeldDeliveriesPrecedeEveryReply(t *testing.T) {
	for _, c := range []struct {
		name string
		poke func(join func(string) *peer, sender, reader *peer)
		end  func(wire.Message) bool // the frame poke makes the reader get
	}{
		{"ack", func(_ func(string) *peer, _, reader *peer) { chat(reader, 1, 1) },
			func(m wire.Message) bool { _, ok := m.(*proto.Ack); return ok }},
		{"presence", func(join func(string) *peer, _, _ *peer) { join("third") },
			func(m wire.Message) bool {
				_, one := m.(*proto.Presence)
				_, many := m.(*proto.Presences)
				return one || many
			}},
		{"resend answer", func(_ func(string) *peer, sender, _ *peer) {
			sender.send(&proto.Chat{Num: 5, Text: "again", To: "reader"})
		}, func(m wire.Message) bool { d, ok := m.(*proto.Deliver); return ok && d.Text == "again" }},
		{"resend ask", func(_ func(string) *peer, sender, _ *peer) { sender.send(&proto.Resend{Of: "reader"}) },
			func(m wire.Message) bool { _, ok := m.(*proto.Resend); return ok }},
		{"missed", func(_ func(string) *peer, sender, reader *peer) {
			// A Missed answers an ask: the reader asks first.
			reader.send(&proto.Resend{Of: "sender"})
			sender.ExpectType(proto.TResend, func(m wire.Message) bool { _, ack := m.(*proto.Ack); return ack })
			sender.send(&proto.Missed{To: "reader", First: 1, Last: 1})
		}, func(m wire.Message) bool { _, ok := m.(*proto.Missed); return ok }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, join := holdServer(t, false, 2)
			sender, reader := join("sender"), join("reader")
			if l := memberLoops(t, s, "held", "sender", "reader"); l[0] == l[1] {
				t.Fatal("sender and reader share an event loop")
			}
			holdNine(t, sender, reader)
			c.poke(join, sender, reader)
			afterHeld(t, reader, c.end)
		})
	}
}

// onLoop runs f on l's event loop and waits for it.
func onLoop(t *testing.T, l *loop, f func()) {
	t.Helper()
	done := make(chan struct{})
	err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		f()
		close(done)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	<-done
}

// sendOne joins a sender and a reader to room on s and sends message 1,
// a lone message written to the reader at once, which the reader reads.
// send sends message i, of a text of size bytes, in a write of its own,
// and waits for its Ack.
func sendOne(t *testing.T, s *Server, room string, size int) (reader *peer, send func(i int)) {
	t.Helper()
	sender, _ := joinAs(t, s, room, "sender")
	reader, _ = joinAs(t, s, room, "reader")
	text := strings.Repeat("x", size)
	send = func(i int) {
		t.Helper()
		b, _ := wire.AppendFrame(nil, &proto.Chat{Num: uint64(i), Text: text})
		sender.raw(b)
		awaitAcks(t, sender, 1, 10*time.Second)
	}
	send(1)
	awaitDelivers(t, reader, 1, 1, 10*time.Second)
	return reader, send
}

// TestHeldBytesCountedOnce: the deliveries held for a member count in its
// backlog (flow.go) until they are written, and then only as the unsent
// bytes they leave, if any: not twice. The reader here reads everything
// at once, yet on main the write of its held deliveries counted them both
// as held and as written, put its backlog past HighWater (8 KiB, under
// the 16 KiB written) and marked it behind, which withholds the room's
// Acks until the next flowTick.
func TestHeldBytesCountedOnce(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Loops, c.holdDelay, c.HighWater = 1, time.Hour, 8<<10 })
	reader, send := sendOne(t, s, "once", 200)
	// Each of these is held, until holdBytes or holdFrames of them are
	// written together.
	const last = 1 + holdFrames
	for i := 2; i <= last; i++ {
		send(i)
	}
	// The Pong takes along what is still held after the last of those.
	reader.send(&proto.Ping{ID: 1})
	awaitDelivers(t, reader, 2, last, 10*time.Second)
	m := roomMembers(t, s, "once", "reader")[0]
	var since time.Time
	var unsent int
	onLoop(t, m.loop, func() { since, unsent = m.behindSince, m.c.OutboundBuffered() })
	if !since.IsZero() {
		t.Errorf("the reader, which read all %d messages (%d bytes unsent now), was marked behind (HighWater %d)", last, unsent, 8<<10)
	}
}

// TestHeldBytesCountInShardPeak: what is held for a member counts in its
// shard's peak, which a sender's loop adds to what it queues there to
// decide whether the shard is behind (flow.go): the reader's loop is
// blocked, with 6 messages held for the reader and a seventh queued, 7
// frames in all past HighWater (6.5 frames), so the sender's Ack must be
// withheld until that loop runs. On main the peak counted only the
// reader's unsent bytes (none), and the Ack came at once.
func TestHeldBytesCountInShardPeak(t *testing.T) {
	text := strings.Repeat("x", 1000)
	frame := len(proto.AppendDeliver(nil, 8, "sender", 8, time.Now().UnixNano(), []byte(text), 0))
	s := startServer(t, func(c *Config) { c.Loops, c.holdDelay, c.HighWater = 2, time.Hour, frame*13/2 })
	sender, _ := joinAs(t, s, "peak", "sender")
	reader, _ := joinAs(t, s, "peak", "reader")
	loops := memberLoops(t, s, "peak", "sender", "reader")
	if loops[0] == loops[1] {
		t.Fatal("sender and reader share an event loop: the test needs the reader's alone")
	}
	send := func(i int) {
		b, _ := wire.AppendFrame(nil, &proto.Chat{Num: uint64(i), Text: text})
		sender.raw(b)
	}
	send(1) // a lone message, written at once
	awaitAcks(t, sender, 1, 10*time.Second)
	awaitDelivers(t, reader, 1, 1, 10*time.Second)
	for i := 2; i <= 7; i++ { // held for the reader: 6 frames
		send(i)
		awaitAcks(t, sender, 1, 10*time.Second)
	}
	unblock := blockLoop(t, loops[1])
	_, held := acksHeld(s, "peak")
	send(8)
	deadline := time.Now().Add(10 * time.Second)
	for !held() {
		if time.Now().After(deadline) {
			t.Fatal("the sender's Ack was not withheld, with 7 frames held for and queued to the reader, past HighWater")
		}
		time.Sleep(time.Millisecond)
	}
	unblock()
	awaitAcks(t, sender, 1, 10*time.Second)
	reader.send(&proto.Ping{ID: 1}) // the Pong takes the held ones along
	awaitDelivers(t, reader, 2, 8, 10*time.Second)
}

// TestHeldBytesCountInOutboundBudget: the deliveries held for a member
// count in the server's outbound bytes, which OutboundBudget caps, as
// they would once written and unsent. The reader reads everything written
// to it, but eight messages of 1.5 KB are held for it (an hour's hold),
// past the 8 KiB budget: a new member is refused. Before, held bytes
// were counted nowhere the budget looks, and it was let in.
func TestHeldBytesCountInOutboundBudget(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Loops, c.holdDelay, c.OutboundBudget = 1, time.Hour, 8<<10 })
	_, send := sendOne(t, s, "held", 1500)
	for i := 2; i <= 9; i++ {
		send(i)
	}
	t.Logf("outbound bytes %d of %d", s.outBytes.Load(), s.cfg.OutboundBudget)
	p := hello(t, s)
	p.send(&proto.Join{Room: "two", User: "c"})
	p.expectClosed(proto.CodeServerFull)
}

// TestHeldBuffersReused: a held delivery's buffer is used again by the
// next hold, however many holds came before. Held buffers come back empty
// (flushHeld writes them first), and bytebufferpool, which sizes what it
// keeps by the lengths it gets back, took them all for 64-byte buffers
// after its first 42,000 returns and dropped every one: each hold then
// allocated a new buffer and grew it (2% of a room of two's server CPU in
// growslice, and the garbage).
func TestHeldBuffersReused(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops at random under the race detector")
	}
	run := make([]byte, 6<<10) // a read's deliveries in a room of two
	hold := func() {
		b := getHeld()
		b.B = append(b.B, run...)
		b.B = b.B[:0] // written (writeN)
		putHeld(b)
	}
	for range 50_000 {
		hold()
	}
	if n := testing.AllocsPerRun(1000, hold); n > 0 {
		t.Errorf("a hold allocates %.2f times, want 0", n)
	}
}

// TestHoldTimerFollowsWhatIsDue: the hold timer is set for the earliest
// time something held is due, later as well as earlier. Before, a timer
// set earlier stayed, and fired for deliveries a callback had already
// written: in a streaming room of two, a wake-up of the loop (a timer
// goroutine and an eventfd write) for nearly every write of deliveries.
func TestHoldTimerFollowsWhatIsDue(t *testing.T) {
	l := &loop{now: time.Now()}
	t.Cleanup(func() { l.armHold(time.Time{}) })
	first := l.now.Add(time.Hour) // never fires during the test
	for _, tt := range []struct {
		name string
		due  time.Time
	}{
		{"first hold", first},
		{"written, the next hold due later", first.Add(time.Minute)},
		{"something due sooner", first.Add(-time.Minute)},
		{"the same again", first.Add(-time.Minute)},
	} {
		l.armHold(tt.due)
		if !l.holdArmed || !l.holdAt.Equal(tt.due) {
			t.Errorf("%s: timer armed %v for %v, want for %v", tt.name, l.holdArmed, l.holdAt.Sub(l.now), tt.due.Sub(l.now))
		}
	}
	l.armHold(time.Time{})
	if l.holdArmed {
		t.Error("nothing held: the timer is still armed")
	}
}

// TestFramePoolKeepsSmallBuffers: a released frame keeps its buffer for
// its next use (one pool operation a frame, not a frame's and a
// buffer's), unless the buffer grew past frameKeep, which the pool would
// otherwise pin for small frames.
func TestFramePoolKeepsSmallBuffers(t *testing.T) {
	f := newFrame()
	f.b = append(f.b, make([]byte, 100)...)
	f.retain()
	f.release()
	if len(f.b) != 100 {
		t.Fatalf("a frame still held lost its bytes: %d", len(f.b))
	}
	f.release()
	if cap(f.b) < 100 {
		t.Errorf("released frame's buffer has capacity %d, want its 100 bytes kept", cap(f.b))
	}
	g := newFrame()
	g.b = append(g.b, make([]byte, frameKeep+1)...)
	g.release()
	if g.b != nil {
		t.Errorf("released frame kept a %d-byte buffer, past frameKeep %d", cap(g.b), frameKeep)
	}
	h := newFrame()
	if len(h.b) != 0 || h.refs.Load() != 1 {
		t.Errorf("new frame: %d bytes, %d refs; want empty, 1", len(h.b), h.refs.Load())
	}
	h.release()
}
