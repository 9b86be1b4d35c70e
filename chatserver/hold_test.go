package chatserver

import (
	"fmt"
	"testing"
	"time"

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
		start := time.Now()
		for i := 2; i < 2+n; i++ {
			chat(sender, i, i)
			awaitAcks(t, sender, 1, 10*time.Second)
		}
		took = time.Since(start)
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

// TestHeldDeliveriesKeepTheirPlace: a write of anything else to a member
// (here the Pong to its Ping) takes the deliveries held for it along,
// ahead of its own bytes: the member sees them first, and at once, not an
// hour later when the hold would end. Plaintext and TLS (whose held bytes
// are sealed when they leave).
func TestHeldDeliveriesKeepTheirPlace(t *testing.T) {
	ca := devCA(t)
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			s := startServer(t, func(c *Config) {
				c.Loops, c.holdDelay = 1, time.Hour
				if tlsOn {
					tc, err := tlsconfig.Server(ca.ServerCert, ca.ServerKey, "")
					if err != nil {
						t.Fatal(err)
					}
					c.Listen, c.TLS, c.TLSListen = "", tc, "127.0.0.1:0"
				}
			})
			join := func(user string) *peer {
				if tlsOn {
					return tlsMember(t, s.Addr(), ca, "order", user)
				}
				p, _ := joinAs(t, s, "order", user)
				return p
			}
			sender, reader := join("sender"), join("reader")
			chat(sender, 1, 1)
			awaitDelivers(t, reader, 1, 1, 10*time.Second)
			const last = 9 // 2..9 are held: fewer than holdFrames
			for i := 2; i <= last; i++ {
				chat(sender, i, i)
				awaitAcks(t, sender, 1, 10*time.Second)
			}
			b, _ := wire.AppendFrame(nil, &proto.Ping{ID: 42})
			reader.raw(b)
			next := 2
			for {
				m, err := reader.next(10 * time.Second)
				if err != nil {
					t.Fatalf("after message %d of %d: %v", next-1, last, err)
				}
				switch m := m.(type) {
				case *proto.Deliver:
					if int(m.Num) != next {
						t.Fatalf("got message %d, want %d", m.Num, next)
					}
					next++
				case *proto.Pong:
					if next <= last {
						t.Fatalf("the Pong came before messages %d..%d held for the reader", next, last)
					}
					return
				}
			}
		})
	}
}
