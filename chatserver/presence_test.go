package chatserver

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

// BenchmarkRoomForm measures a room of M members forming: M connections
// say hello and join at once, and the room has formed when every member
// knows every other (from Joined and presence frames). It reports the
// frames the server sent for it (Metrics.FramesOut) and the time taken.
func BenchmarkRoomForm(b *testing.B) {
	for _, m := range []int{256, 1024} {
		b.Run(fmt.Sprintf("members=%d", m), func(b *testing.B) {
			s := startServer(b, func(c *Config) { c.IdleTimeout = 0 })
			var frames uint64
			var took time.Duration
			for i := range b.N {
				f, d := formRoom(b, s, fmt.Sprintf("form%d", i), m)
				frames += f
				took += d
			}
			b.ReportMetric(float64(frames)/float64(b.N), "frames/op")
			b.ReportMetric(float64(frames)/float64(b.N)/float64(m), "frames/member")
			b.ReportMetric(took.Seconds()*1e3/float64(b.N), "ms/form")
		})
	}
}

// formRoom has m members join room on s at once and waits until each
// knows all the others. It returns the frames s sent meanwhile and the
// time it took, and closes the members.
func formRoom(tb testing.TB, s *Server, room string, m int) (uint64, time.Duration) {
	tb.Helper()
	before := s.Metrics().FramesOut
	t0 := time.Now()
	conns := make([]net.Conn, m)
	errs := make(chan error, m)
	var wg sync.WaitGroup
	for i := range m {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", s.Addr(), 30*time.Second)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			p := wiretest.NewPeer(tb, c)
			user := fmt.Sprintf("u%04d", i)
			p.Send(&proto.Hello{V: wire.Version, Agent: "form"})
			p.Send(&proto.Join{Room: room, User: user})
			known := make(map[string]bool, m)
			for len(known) < m-1 {
				msg, err := p.Next(60 * time.Second)
				if err != nil {
					errs <- fmt.Errorf("%s knows %d of %d: %w", user, len(known), m-1, err)
					return
				}
				for _, x := range presenceOf(msg) {
					if x.User != user {
						if x.Here {
							known[x.User] = true
						} else {
							delete(known, x.User)
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(t0)
	after := s.Metrics().FramesOut
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return after - before, took
}

// presenceOf returns the membership changes msg carries.
func presenceOf(msg wire.Message) []proto.Presence {
	switch x := msg.(type) {
	case *proto.Joined:
		out := make([]proto.Presence, len(x.Members))
		for i, mb := range x.Members {
			out[i] = proto.Presence{User: mb.User, Here: true, LastSent: mb.LastSent, Inc: mb.Inc}
		}
		return out
	case *proto.Presence:
		return []proto.Presence{*x}
	case *proto.Presences:
		return x.Changes
	}
	return nil
}

// TestRoomFormsInLinearFrames: M members joining at once cost the server
// O(M) frames, not one Presence per member per join (about M²/2), and
// every member still learns of every other.
func TestRoomFormsInLinearFrames(t *testing.T) {
	const m = 128
	s := startServer(t, func(c *Config) { c.IdleTimeout = 0 })
	frames, took := formRoom(t, s, "form", m)
	t.Logf("%d members formed a room in %v with %d frames (%.1f a member)", m, took, frames, float64(frames)/m)
	// Welcome and Joined are 2 a member; one Presence per member per join
	// would be m*(m-1)/2 = 8128 more. The bound leaves room for joins that
	// trickle in one by one on a loaded machine.
	if frames > m*m/8 {
		t.Fatalf("%d frames for %d members, want at most %d", frames, m, m*m/8)
	}
}

// TestLeavesCoalesce: members leaving at once are each reported, in
// whatever mix of Presence and Presences frames, to everyone left.
func TestLeavesCoalesce(t *testing.T) {
	const n = 24
	s := startServer(t, func(c *Config) { c.Loops = 1; c.IdleTimeout = 0 })
	var peers []*peer
	for i := range n {
		p, _ := joinAs(t, s, "r", fmt.Sprintf("u%02d", i))
		peers = append(peers, p)
	}
	for i, p := range peers[:n/2] {
		for seen := 0; seen < n-1-i; {
			msg, err := p.next(10 * time.Second)
			if err != nil {
				t.Fatalf("u%02d: %v", i, err)
			}
			seen += len(presenceOf(msg))
		}
	}
	for _, p := range peers[n/2:] {
		p.conn.Close()
	}
	for i, p := range peers[:n/2] {
		gone := map[string]bool{}
		for len(gone) < n/2 {
			msg, err := p.next(10 * time.Second)
			if err != nil {
				t.Fatalf("u%02d saw %d leaves: %v", i, len(gone), err)
			}
			for _, x := range presenceOf(msg) {
				if x.Here || gone[x.User] || x.User < fmt.Sprintf("u%02d", n/2) {
					t.Fatalf("u%02d: unexpected %+v", i, x)
				}
				gone[x.User] = true
			}
		}
	}
}

// TestBurstOfJoinsThenMessage: joins that arrive within presenceGap of a
// batch wait to go out together, yet a message sent after them reaches
// the members after them, never before: each member sees every joiner
// before the first message from one.
func TestBurstOfJoinsThenMessage(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Loops = 1; c.IdleTimeout = 0 })
	a, _ := joinAs(t, s, "r", "a")
	// b's join goes out at once; c's and d's, right behind it, wait.
	b, _ := joinAs(t, s, "r", "b")
	_, _ = joinAs(t, s, "r", "c")
	_, _ = joinAs(t, s, "r", "d")
	b.send(&proto.Chat{Num: 1, Text: "hi"})
	known := map[string]bool{}
	for {
		msg, err := a.next(10 * time.Second)
		if err != nil {
			t.Fatalf("a knows %v: %v", known, err)
		}
		if d, ok := msg.(*proto.Deliver); ok {
			if len(known) != 3 {
				t.Fatalf("deliver %+v before a knew all three joiners: %v", d, known)
			}
			return
		}
		for _, x := range presenceOf(msg) {
			known[x.User] = x.Here
		}
	}
}

// TestVersion2Member: a member that says Hello in version 2 is answered in
// version 2 and gets joins and leaves as Presence frames, never a
// Presences frame, including the members a big room's Joined cannot list.
func TestVersion2Member(t *testing.T) {
	old := joinedMembers
	t.Cleanup(func() { joinedMembers = old })
	joinedMembers = 2
	s := startServer(t, func(c *Config) { c.Loops = 1; c.IdleTimeout = 0 })
	for _, u := range []string{"a", "b", "c"} {
		joinAs(t, s, "r", u)
	}
	p := dial(t, s)
	p.send(&proto.Hello{V: 2, Agent: "v2"})
	if w := p.expect(proto.TWelcome).(*proto.Welcome); w.V != 2 {
		t.Fatalf("welcome to a v2 hello = %+v, want v2", w)
	}
	p.send(&proto.Join{Room: "r", User: "old"})
	seen := map[string]bool{}
	for _, mb := range p.expect(proto.TJoined).(*proto.Joined).Members {
		seen[mb.User] = true
	}
	for len(seen) < 4 {
		x := p.expect(proto.TPresence).(*proto.Presence)
		seen[x.User] = true
	}
	// Several members joining together come as one frame each.
	for i := range 6 {
		joinAs(t, s, "r", fmt.Sprintf("new%d", i))
	}
	for i := range 6 {
		x := p.expect(proto.TPresence).(*proto.Presence)
		if want := fmt.Sprintf("new%d", i); x.User != want || !x.Here {
			t.Fatalf("presence %+v, want %s here", x, want)
		}
	}

	p1 := dial(t, s)
	p1.send(&proto.Hello{V: 1, Agent: "v1"})
	p1.expectClosed(proto.CodeVersion)
}

// TestPresenceBatchCap: a batch that holds maxPresBatch changes goes out
// at once instead of gathering more while its gap lasts, so no Presences
// frame carries more, and every join still arrives.
func TestPresenceBatchCap(t *testing.T) {
	old := maxPresBatch
	t.Cleanup(func() { maxPresBatch = old })
	maxPresBatch = 4
	s := startServer(t, func(c *Config) { c.Loops = 1; c.IdleTimeout = 0 })
	a, _ := joinAs(t, s, "r", "a")
	const n = 40
	for i := range n {
		joinAs(t, s, "r", fmt.Sprintf("u%02d", i))
	}
	seen, biggest := map[string]bool{}, 0
	for len(seen) < n {
		msg, err := a.next(10 * time.Second)
		if err != nil {
			t.Fatalf("a saw %d joins: %v", len(seen), err)
		}
		ch := presenceOf(msg)
		biggest = max(biggest, len(ch))
		for _, x := range ch {
			seen[x.User] = true
		}
	}
	t.Logf("largest batch: %d changes", biggest)
	if biggest > maxPresBatch {
		t.Fatalf("a Presences frame carried %d changes, cap %d", biggest, maxPresBatch)
	}
}

// TestRejoinLoopCoalesces: a user whose new connections replace its old
// one in a loop (a Join replacing a connection is a leave and a join at
// once) costs each other member at most one change per rejoin, not two,
// and a batch carries one change per user; the member still ends up with
// the user's latest incarnation, before that incarnation's first message.
func TestRejoinLoopCoalesces(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Loops = 1; c.IdleTimeout = 0 })
	w, _ := joinAs(t, s, "r", "w")
	const n = 60
	var x *peer
	for i := range n {
		x = hello(t, s)
		x.send(&proto.Join{Room: "r", User: "x", Inc: uint64(i + 1)})
		x.expect(proto.TJoined)
	}
	x.send(&proto.Chat{Num: 1, Text: "hi"})
	changes, batches := 0, 0
	var last proto.Presence
	for {
		msg, err := w.next(10 * time.Second)
		if err != nil {
			t.Fatalf("w saw %d changes about x: %v", changes, err)
		}
		if d, ok := msg.(*proto.Deliver); ok {
			if !last.Here || last.Inc != n || d.Inc != n {
				t.Fatalf("deliver %+v after x's change %+v, want x here in incarnation %d", d, last, n)
			}
			break
		}
		inBatch := 0
		for _, c := range presenceOf(msg) {
			if c.User == "x" {
				changes++
				inBatch++
				last = c
			}
		}
		if inBatch > 1 {
			t.Fatalf("one frame carried %d changes about x", inBatch)
		}
		batches++
	}
	t.Logf("%d rejoins cost w %d changes in %d frames", n, changes, batches)
	if changes > n {
		t.Fatalf("%d changes about x for %d joins, want at most one a join", changes, n)
	}
}
