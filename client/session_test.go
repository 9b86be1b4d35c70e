package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"nearchat/chatserver"
	"nearchat/pkg/delaynet"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wiretest"
)

func TestRoomExchange(t *testing.T) {
	tests := []struct {
		name    string
		members int
		each    int
	}{
		{"members=2", 2, 200},
		{"members=3", 3, 100},
	}
	for _, tt := range tests {
		for _, timers := range []string{"test", "default"} {
			t.Run(tt.name+"/timers="+timers, func(t *testing.T) {
				srv := startChat(t, "serv1")
				var ms []*member
				for i := range tt.members {
					ms = append(ms, join(t, configFor(t, timers), ref(srv), "room-1", fmt.Sprintf("u%d", i)))
				}
				var wg sync.WaitGroup
				for _, m := range ms {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := stream(m, tt.each, 0, nil); err != nil {
							t.Error(err)
						}
					}()
				}
				wg.Wait()
				sent := map[string]uint64{}
				for _, m := range ms {
					sent[m.s.User()] = uint64(tt.each)
				}
				for _, m := range ms {
					testkit.WaitFor(t, settle, m.s.User()+" receives all", func() bool {
						return m.check.Report().Received == (tt.members-1)*tt.each
					})
					testkit.WaitFor(t, 5*time.Second, m.s.User()+" all acked", func() bool { return m.s.Stats().Unacked == 0 })
				}
				verify(t, ms, sent)
				for _, m := range ms {
					last := m.lastFrom(ms[len(ms)-1].s.User())
					if m != ms[len(ms)-1] && last.Text != fmt.Sprintf("%s-%d", ms[len(ms)-1].s.User(), tt.each) {
						t.Errorf("%s: last text %q", m.s.User(), last.Text)
					}
				}
			})
		}
	}
}

// TestPlannedMove moves a room between two servers in the middle of a
// steady stream in both directions, the members moving at different times.
func TestPlannedMove(t *testing.T) {
	tests := []struct {
		name    string
		members int
		stagger time.Duration // between the members' moves
	}{
		{"members=2/together", 2, 0},
		{"members=2/stagger=30ms", 2, 30 * time.Millisecond},
		{"members=3/stagger=10ms", 3, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		for _, timers := range []string{"test", "default"} {
			t.Run(tt.name+"/timers="+timers, func(t *testing.T) {
				s1, s2 := startChat(t, "serv1"), startChat(t, "serv2")
				var ms []*member
				for i := range tt.members {
					ms = append(ms, join(t, configFor(t, timers), ref(s1), "room-move", fmt.Sprintf("u%d", i)))
				}
				const n = 300
				var wg sync.WaitGroup
				moved := make(chan struct{})
				for i, m := range ms {
					wg.Add(1)
					go func() {
						defer wg.Done()
						err := stream(m, n, time.Millisecond, func(k int) {
							if i == 0 && k == n/3 {
								close(moved)
							}
						})
						if err != nil {
							t.Error(err)
						}
					}()
				}
				<-moved
				start := time.Now()
				for _, m := range ms {
					m.move(t, ref(s2), 2)
					time.Sleep(tt.stagger)
				}
				t.Logf("all members moved in %v", time.Since(start))
				wg.Wait()
				sent := map[string]uint64{}
				for _, m := range ms {
					sent[m.s.User()] = n
				}
				for _, m := range ms {
					testkit.WaitFor(t, settle, m.s.User()+" receives all", func() bool {
						return m.check.Report().Received == (tt.members-1)*n
					})
					if st := m.s.Stats(); st.Server != ref(s2) || st.Epoch != 2 || !st.Connected {
						t.Errorf("%s: on %v epoch %d connected %v", m.s.User(), st.Server, st.Epoch, st.Connected)
					}
					if mv := m.movesSoFar(); len(mv) != 2 || mv[1].From != ref(s1) || mv[1].To != ref(s2) {
						t.Errorf("%s: moves %+v", m.s.User(), mv)
					} else {
						t.Logf("%s: join on serv2 took %v", m.s.User(), mv[1].Took)
					}
					testkit.WaitFor(t, settle, m.s.User()+" drains serv1", func() bool { return len(m.drains()) == 1 })
					d := m.drains()[0]
					t.Logf("%s: serv1 connection closed %v after the switch (timed out: %v)", m.s.User(), d.After, d.TimedOut)
					if d.Server != ref(s1) || d.Err != nil {
						t.Errorf("%s: drained %+v", m.s.User(), d)
					}
				}
				verify(t, ms, sent)
				testkit.WaitFor(t, 5*time.Second, "serv1 empty", func() bool { return s1.Stats().Rooms == 0 })
			})
		}
	}
}

// TestServerDies cuts every connection to the first server mid-stream (as
// a killed process would), then moves the room to the second.
func TestServerDies(t *testing.T) {
	tests := []struct {
		name string
		kill func(p *proxy, s1 *chatserver.Server)
	}{
		{"reset", func(p *proxy, _ *chatserver.Server) { p.kill() }},
		{"shutdown", func(_ *proxy, s1 *chatserver.Server) { go s1.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s1, s2 := startChat(t, "serv1"), startChat(t, "serv2")
			p := startProxy(t, s1.Addr())
			var mu sync.Mutex
			var broken []string
			cfg := testConfig(t)
			cfg.OnBroken = func(server proto.ServerRef, epoch uint64, err error) {
				mu.Lock()
				broken = append(broken, fmt.Sprintf("%s@%d: %v", server.ID, epoch, err))
				mu.Unlock()
			}
			a := join(t, cfg, p.ref("serv1"), "room-kill", "alice")
			b := join(t, cfg, p.ref("serv1"), "room-kill", "bob")
			const n = 300
			var wg sync.WaitGroup
			killed := make(chan struct{})
			for i, m := range []*member{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := stream(m, n, time.Millisecond, func(k int) {
						if i == 0 && k == n/2 {
							tt.kill(p, s1)
							close(killed)
						}
					})
					if err != nil {
						t.Error(err)
					}
				}()
			}
			<-killed
			start := time.Now()
			testkit.WaitFor(t, 5*time.Second, "both see the break", func() bool { return a.brokenCount() == 1 && b.brokenCount() == 1 })
			t.Logf("break noticed after %v: %v", time.Since(start), broken)
			a.move(t, ref(s2), 2)
			b.move(t, ref(s2), 2)
			t.Logf("room on serv2 %v after the kill", time.Since(start))
			wg.Wait()
			for _, m := range []*member{a, b} {
				testkit.WaitFor(t, settle, m.s.User()+" receives all", func() bool { return m.check.Report().Received == n })
			}
			verify(t, []*member{a, b}, map[string]uint64{"alice": n, "bob": n})
			if st := a.s.Stats(); st.Resent == 0 {
				t.Logf("alice resent nothing (every message was acked before the cut)")
			}
		})
	}
}

// TestTailLoss: the old server acknowledged alice's last messages but bob
// never received them before it died; bob recovers them on the new server
// from alice's LastSent.
func TestTailLoss(t *testing.T) {
	tests := []struct {
		name       string
		window     int
		wantMissed bool
	}{
		{"recovered", 1024, false},
		{"beyond-window", 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s1, s2 := startChat(t, "serv1"), startChat(t, "serv2")
			p := startProxy(t, s1.Addr())
			cfg := testConfig(t)
			cfg.Window = tt.window
			a := join(t, cfg, ref(s1), "room-tail", "alice")
			b := join(t, cfg, p.ref("serv1"), "room-tail", "bob")
			for i := range 10 {
				a.send(t, fmt.Sprintf("m%d", i+1))
			}
			testkit.WaitFor(t, 5*time.Second, "bob gets 10", func() bool { return b.got("alice") == 10 })
			p.drop.Store(true)
			for i := range 10 {
				a.send(t, fmt.Sprintf("m%d", i+11))
			}
			testkit.WaitFor(t, 5*time.Second, "alice acked", func() bool { return a.s.Stats().Unacked == 0 })
			if got := b.got("alice"); got != 10 {
				t.Fatalf("bob got %d before the crash, want 10", got)
			}
			p.kill()
			testkit.WaitFor(t, 5*time.Second, "bob sees the break", func() bool { return b.brokenCount() == 1 })
			start := time.Now()
			b.move(t, ref(s2), 2)
			a.move(t, ref(s2), 2)
			if !tt.wantMissed {
				testkit.WaitFor(t, settle, "bob recovers the tail", func() bool { return b.got("alice") == 20 })
				t.Logf("tail recovered %v after the move", time.Since(start))
				verify(t, []*member{b}, map[string]uint64{"alice": 20})
				if st := a.s.Stats(); st.Resent < 10 {
					t.Errorf("alice resent %d, want >= 10", st.Resent)
				}
				return
			}
			testkit.WaitFor(t, settle, "bob told what he missed", func() bool { return len(b.missed()) > 0 })
			miss := b.missed()[0]
			t.Logf("missed %+v", miss)
			if miss.From != "alice" || miss.First != 11 || miss.Last != 16 {
				t.Errorf("missed %+v, want alice 11-16", miss)
			}
			testkit.WaitFor(t, settle, "bob gets the kept tail", func() bool { return b.got("alice") == 14 })
		})
	}
}

// TestDuplicatesAndReorder has a raw peer send numbers out of order and
// twice; the session delivers each once, in order.
func TestDuplicatesAndReorder(t *testing.T) {
	srv := startChat(t, "serv1")
	b := join(t, testConfig(t), ref(srv), "room-dup", "bob")
	raw := dialRaw(t, srv.Addr(), "room-dup", "mallory")
	// A chat server relays a number once on its connection; the repeats
	// and the late ones reach bob as resends to him (To), as they do
	// from a sender answering an ask, or from two servers during a move.
	for _, c := range []struct {
		n  uint64
		to string
	}{{1, ""}, {1, "bob"}, {3, ""}, {2, "bob"}, {2, "bob"}, {3, "bob"}, {4, ""}, {1, "bob"}} {
		raw.Send(&proto.Chat{Num: c.n, At: time.Now().UnixNano(), Text: fmt.Sprint(c.n), To: c.to})
	}
	testkit.WaitFor(t, 5*time.Second, "bob gets 4", func() bool { return b.got("mallory") == 4 })
	testkit.WaitFor(t, 5*time.Second, "duplicates counted", func() bool { return b.s.Stats().Duplicates == 4 })
	verify(t, []*member{b}, map[string]uint64{"mallory": 4})
}

// TestGapIsAskedFor: a peer skips a number; the session asks it to send
// again (Resend) and delivers in order once the hole is filled.
func TestGapIsAskedFor(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	cfg.HoldBack = 50 * time.Millisecond
	b := join(t, cfg, ref(srv), "room-gap", "bob")
	raw := dialRaw(t, srv.Addr(), "room-gap", "mallory")
	raw.Send(&proto.Chat{Num: 1, Text: "1"})
	raw.Send(&proto.Chat{Num: 3, Text: "3"})
	rs := wiretest.Expect[*proto.Resend](raw, wiretest.AllBut(proto.TResend))
	if rs.By != "bob" || rs.After != 1 {
		t.Fatalf("resend %+v, want by bob after 1", rs)
	}
	if got := b.got("mallory"); got != 1 {
		t.Fatalf("bob delivered %d before the gap filled", got)
	}
	// The answer, as a sender gives it: what follows 1, to bob alone.
	raw.Send(&proto.Chat{Num: 2, Text: "2", To: "bob"})
	raw.Send(&proto.Chat{Num: 3, Text: "3", To: "bob"})
	testkit.WaitFor(t, 5*time.Second, "bob gets 3", func() bool { return b.got("mallory") == 3 })
	verify(t, []*member{b}, map[string]uint64{"mallory": 3})
}

// TestMoveThroughDelay moves between servers behind injected latency and
// checks that Moved reports the join time.
func TestMoveThroughDelay(t *testing.T) {
	s1, s2 := startChat(t, "serv1"), startChat(t, "serv2")
	var delays delaynet.Delays
	delays.Set(s1.Addr(), 15*time.Millisecond)
	delays.Set(s2.Addr(), 5*time.Millisecond)
	cfg := testConfig(t)
	cfg.Dialer = &delaynet.Dialer{Delay: delays.Get}
	a := join(t, cfg, ref(s1), "room-delay", "alice")
	b := join(t, cfg, ref(s1), "room-delay", "bob")
	const n = 100
	var wg sync.WaitGroup
	for _, m := range []*member{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = stream(m, n, 2*time.Millisecond, func(k int) {
				if k == n/2 {
					m.move(t, ref(s2), 2)
				}
			})
		}()
	}
	wg.Wait()
	for _, m := range []*member{a, b} {
		testkit.WaitFor(t, settle, m.s.User()+" receives all", func() bool { return m.check.Report().Received == n })
		mv := m.movesSoFar()
		t.Logf("%s: first join %v, move %v", m.s.User(), mv[0].Took, mv[len(mv)-1].Took)
		if took := mv[0].Took; took < 60*time.Millisecond {
			t.Errorf("%s: join through 15 ms one-way took %v, want >= 60ms (dial 2d + Hello 2d + Join 2d... at least 4d)", m.s.User(), took)
		}
	}
	verify(t, []*member{a, b}, map[string]uint64{"alice": n, "bob": n})
}

// TestJoinPipelinedWithHello: a join sends Hello and Join together, so it
// takes two round trips (the connect, then Welcome and Joined together),
// not three (it waited for the Welcome before sending Join). Three members
// join through 150 ms one-way; the fastest join is judged.
func TestJoinPipelinedWithHello(t *testing.T) {
	s1 := startChat(t, "serv1")
	const oneWay = 150 * time.Millisecond
	var delays delaynet.Delays
	delays.Set(s1.Addr(), oneWay)
	cfg := testConfig(t)
	cfg.Dialer = &delaynet.Dialer{Delay: delays.Get}
	var wg sync.WaitGroup
	members := make([]*member, 3)
	for i := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			members[i] = join(t, cfg, ref(s1), "room-pipelined", fmt.Sprintf("user%d", i))
		}()
	}
	wg.Wait()
	took := make([]time.Duration, len(members))
	for i, m := range members {
		testkit.WaitFor(t, settle, "the join's Moved event", func() bool { return len(m.movesSoFar()) == 1 })
		took[i] = m.movesSoFar()[0].Took
	}
	fastest := slices.Min(took)
	t.Logf("joins through %v one-way took %v (two round trips: %v)", oneWay, took, 4*oneWay)
	if fastest < 4*oneWay {
		t.Errorf("a join took %v, faster than two round trips (%v) allow", fastest, 4*oneWay)
	}
	if fastest > 5*oneWay {
		t.Errorf("the fastest join took %v, want about %v: Join waited for the Welcome (three round trips: %v)", fastest, 4*oneWay, 6*oneWay)
	}
}

func TestOpenErrors(t *testing.T) {
	srv := startChat(t, "serv1")
	tests := []struct {
		name string
		cfg  func(*SessionConfig)
		room string
		user string
		addr string
	}{
		{"bad-user", nil, "r", "no spaces", srv.Addr()},
		{"bad-room", nil, "", "u", srv.Addr()},
		{"bad-config", func(c *SessionConfig) { c.Window = 0 }, "r", "u", srv.Addr()},
		{"no-server", nil, "r", "u", "127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			s, err := Open(ctx, cfg, proto.ServerRef{ID: "x", Addr: tt.addr}, tt.room, tt.user, 1, nil)
			if err == nil {
				s.Close()
				t.Fatal("expected an error")
			}
			t.Logf("%v", err)
		})
	}
}

func TestClosedSession(t *testing.T) {
	srv := startChat(t, "serv1")
	m := join(t, testConfig(t), ref(srv), "room-c", "u")
	m.s.Close()
	if _, err := m.s.Send("x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if err := m.s.Move(context.Background(), ref(srv), 5, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Move after Close: %v", err)
	}
	if err := m.s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "server sees the leave", func() bool { return srv.Stats().Rooms == 0 })
}

// TestSendFromEventReader echoes every message back from the goroutine
// that reads Events, with a tiny event buffer: the session must not
// deadlock with its own reader.
func TestSendFromEventReader(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	cfg.EventBuffer = 2
	a := join(t, cfg, ref(srv), "room-echo", "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bob, err := Open(ctx, cfg, ref(srv), "room-echo", "bob", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	echoed := make(chan int, 1)
	go func() {
		n := 0
		for ev := range bob.Events() {
			if m, ok := ev.(Message); ok {
				if _, err := bob.Send("re:" + m.Text); err != nil {
					t.Error(err)
				}
				n++
			}
		}
		echoed <- n
	}()
	const n = 500
	for i := range n {
		a.send(t, fmt.Sprint(i))
	}
	testkit.WaitFor(t, 10*time.Second, "all echoes", func() bool { return a.got("bob") == n })
	bob.Close()
	if got := <-echoed; got != n {
		t.Errorf("bob echoed %d, want %d", got, n)
	}
	verify(t, []*member{a}, map[string]uint64{"bob": n})
}

// TestIdleWhenBroken: a session whose server died (with a gap open and
// messages waiting) must sleep, not spin, until it is moved.
func TestIdleWhenBroken(t *testing.T) {
	s1 := startChat(t, "serv1")
	p := startProxy(t, s1.Addr())
	cfg := testConfig(t)
	cfg.HoldBack = 20 * time.Millisecond
	cfg.IdleTimeout = 300 * time.Millisecond
	b := join(t, cfg, p.ref("serv1"), "room-idle", "bob")
	raw := dialRaw(t, s1.Addr(), "room-idle", "mallory")
	raw.Send(&proto.Chat{Num: 2, Text: "2"}) // a gap: 1 is missing
	testkit.WaitFor(t, 2*time.Second, "gap held", func() bool { return b.s.Stats().Held == 1 })
	p.kill()
	testkit.WaitFor(t, 2*time.Second, "break seen", func() bool { return b.brokenCount() == 1 })
	if _, err := b.s.Send("queued"); err != nil {
		t.Fatal(err)
	}
	wakeups := func() (n int) {
		_ = b.s.call(func() { n = b.s.wakeups })
		return n
	}
	before := wakeups()
	time.Sleep(500 * time.Millisecond)
	woke := wakeups() - before - 1
	t.Logf("loop woke %d times in 500ms while broken", woke)
	if woke > 5 {
		t.Errorf("loop woke %d times in 500ms while disconnected", woke)
	}
	if st := b.s.Stats(); st.Missed != 0 || st.Held != 1 || st.Unacked != 1 {
		t.Errorf("stats while broken %+v: want the gap kept and the message queued", st)
	}
}

// TestHeldOverflowIsTold: mallory never sends her message 1 and streams
// past MaxHeld behind the gap. Bob is told exactly 1 is missed, and why,
// and gets every later message (review finding 3: silent skip).
func TestHeldOverflowIsTold(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	cfg.MaxHeld = 4
	b := join(t, cfg, ref(srv), "room-held", "bob")
	raw := dialRaw(t, srv.Addr(), "room-held", "mallory")
	for n := uint64(2); n <= 10; n++ {
		raw.Send(&proto.Chat{Num: n, Text: fmt.Sprint(n)})
	}
	testkit.WaitFor(t, 5*time.Second, "bob gets 2-10", func() bool { return b.got("mallory") == 9 })
	miss := b.missed()
	if len(miss) != 1 || miss[0].From != "mallory" || miss[0].First != 1 || miss[0].Last != 1 || miss[0].Reason != reasonHeld {
		t.Fatalf("missed %+v, want exactly mallory 1-1 (%s)", miss, reasonHeld)
	}
	b.check.Expect("mallory", 10)
	if r := b.check.Report(); r.Silent() != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 {
		t.Errorf("report %v", r)
	}
}

// TestMissedKeepsHeld: bob holds mallory's 3, 5 and 6 behind a gap when
// her Missed for 2-6 arrives: he gets them, and is told of 2 and 4 only
// (review finding 12: a Missed used to discard them).
func TestMissedKeepsHeld(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	cfg.HoldBack = 50 * time.Millisecond // bob asks for the gap soon
	b := join(t, cfg, ref(srv), "room-keep", "bob")
	raw := dialRaw(t, srv.Addr(), "room-keep", "mallory")
	for _, n := range []uint64{1, 3, 5, 6} {
		raw.Send(&proto.Chat{Num: n, Text: fmt.Sprint(n)})
	}
	testkit.WaitFor(t, 5*time.Second, "3 held", func() bool { return b.s.Stats().Held == 3 })
	// bob asks for the gap; the Missed answers that ask (the server
	// forwards a Missed only as an answer).
	wiretest.Expect[*proto.Resend](raw, wiretest.AllBut(proto.TResend))
	raw.Send(&proto.Missed{To: "bob", First: 2, Last: 6})
	testkit.WaitFor(t, 5*time.Second, "bob gets 1 3 5 6", func() bool { return b.got("mallory") == 4 })
	testkit.WaitFor(t, 5*time.Second, "two ranges told", func() bool { return len(b.missed()) == 2 })
	miss := b.missed()
	if miss[0].First != 2 || miss[0].Last != 2 || miss[1].First != 4 || miss[1].Last != 4 {
		t.Errorf("missed %+v, want 2-2 and 4-4", miss)
	}
	b.check.Expect("mallory", 6)
	if r := b.check.Report(); r.Silent() != 0 || r.Missing["mallory"] != 2 {
		t.Errorf("report %v", r)
	}
}

// TestSenderRestart: alice's process restarts mid-stream and a new
// Session numbers from 1 again; bob delivers both incarnations in full,
// with no duplicate and no Missed (review finding 4: the new messages
// were dropped as duplicates).
func TestSenderRestart(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	b := join(t, cfg, ref(srv), "room-restart", "bob")
	const n = 100
	a := join(t, cfg, ref(srv), "room-restart", "alice")
	if err := stream(a, n/2, 0, nil); err != nil {
		t.Fatal(err)
	}
	// The process dies once its messages are out (what it never got out,
	// nobody knew of); a new one starts below.
	testkit.WaitFor(t, 5*time.Second, "alice acked", func() bool { return a.s.Stats().Unacked == 0 })
	a.s.Close()
	a2 := join(t, cfg, ref(srv), "room-restart", "alice")
	if err := stream(a2, n, 0, nil); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "bob gets both incarnations", func() bool {
		return b.got("alice") == n/2 && b.got("alice/2") == n
	})
	verify(t, []*member{b}, map[string]uint64{"alice": n / 2, "alice/2": n})
	st := b.s.Stats()
	t.Logf("bob: %+v", st)
	if st.Received != n/2+n || st.Duplicates != 0 || st.Missed != 0 {
		t.Errorf("bob received %d duplicates %d missed %d, want %d, 0, 0", st.Received, st.Duplicates, st.Missed, n/2+n)
	}
}

// TestResendStorm: mallory sends 50 Resend frames for alice's 200
// messages. The server forwards at most its burst, alice answers the
// same ask once, the answer goes to mallory alone: bob sees no duplicate
// (review finding 10: 50 asks made 10,000 resends, all broadcast).
func TestResendStorm(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	a := join(t, cfg, ref(srv), "room-storm", "alice")
	b := join(t, cfg, ref(srv), "room-storm", "bob")
	raw := dialRaw(t, srv.Addr(), "room-storm", "mallory")
	const n, asks = 200, 50
	if err := stream(a, n, 0, nil); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "bob gets all", func() bool { return b.got("alice") == n })
	for range asks {
		raw.Send(&proto.Resend{Of: "alice", After: 0})
	}
	// Every ask is accounted for: dropped by the server's rate limit,
	// suppressed by alice as a repeat, or answered.
	testkit.WaitFor(t, 10*time.Second, "every ask handled", func() bool {
		st := a.s.Stats()
		return int(srv.Stats().ResendsDropped)+st.Suppressed+st.Resent/n == asks
	})
	st := a.s.Stats()
	t.Logf("alice %+v; server dropped %d asks", st, srv.Stats().ResendsDropped)
	if st.Resent > 2*n {
		t.Errorf("alice resent %d messages for %d asks of %d, want at most %d", st.Resent, asks, n, 2*n)
	}
	delivers := 0
	for delivers < n {
		m, err := raw.Next(wiretest.Timeout)
		if err != nil {
			t.Fatalf("mallory got %d resent messages: %v", delivers, err)
		}
		if d, ok := m.(*proto.Deliver); ok && d.From == "alice" {
			if d.Num != uint64(delivers+1) {
				t.Fatalf("mallory got alice#%d, want #%d", d.Num, delivers+1)
			}
			delivers++
		}
	}
	// A marker after the storm: once bob has it, any broadcast resend
	// would have reached him before it.
	a.send(t, "after")
	testkit.WaitFor(t, 5*time.Second, "bob gets the marker", func() bool { return b.got("alice") == n+1 })
	if d := b.s.Stats().Duplicates; d != 0 {
		t.Errorf("bob dropped %d duplicates: resends were broadcast", d)
	}
}

// TestResendShareBounded: mallory asks alice for everything again each
// time the repeat suppression (2*HoldBack) has passed. Each ask had alice
// send her whole kept window again: 100 asks of 5 KB pulled 49 MB (abuse
// sweep 2, 2026-12-05). An asker's share is two Windows, an answer
// costing at most half a Window, refilled at two Windows per GapTimeout.
func TestResendShareBounded(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	const n, asks = 200, 8
	cfg.Window = n
	cfg.HoldBack = 50 * time.Millisecond // repeats suppressed for 100 ms
	cfg.GapTimeout = time.Hour           // no share comes back within the test
	a := join(t, cfg, ref(srv), "room-share", "alice")
	raw := dialRaw(t, srv.Addr(), "room-share", "mallory")
	if err := stream(a, n, 0, nil); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "alice acked", func() bool { return a.s.Stats().Unacked == 0 })
	handled := func() int { st := a.s.Stats(); return st.Resent/n + st.Suppressed }
	for i := range asks {
		raw.Send(&proto.Resend{Of: "alice", After: 0})
		testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("ask %d handled", i+1), func() bool { return handled() == i+1 })
		// Past the repeat suppression: not a wait for a condition, the
		// window the test must step out of (a loaded machine only
		// lengthens it).
		time.Sleep(3 * cfg.HoldBack)
	}
	st := a.s.Stats()
	t.Logf("alice after %d asks for all %d of her messages: %+v (server dropped %d asks)", asks, n, st, srv.Stats().ResendsDropped)
	if st.Resent > 4*n {
		t.Fatalf("alice resent %d messages for %d asks of all %d, want at most %d (two Windows at half a Window an answer)", st.Resent, asks, n, 4*n)
	}
}

// TestResendShareServesARealGap: an asker whose share is spent (a long
// answer, say, after a move) and then finds a real gap is answered again
// before the gap is given up (GapTimeout), as its asks back off. A share
// refilled at one Window per GapTimeout, an answer costing its whole
// length, left such an asker refused at every ask, and its gap lost
// (review of the first version, 2026-12-05).
func TestResendShareServesARealGap(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	const n = 200
	cfg.Window = n
	cfg.HoldBack = 50 * time.Millisecond
	cfg.GapTimeout = 8 * time.Second // a spent share is back in 2 s, checked at 4
	a := join(t, cfg, ref(srv), "room-gap", "alice")
	raw := dialRaw(t, srv.Addr(), "room-gap", "mallory")
	if err := stream(a, n, 0, nil); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "alice acked", func() bool { return a.s.Stats().Unacked == 0 })
	for a.s.Stats().Suppressed == 0 { // spend the share
		before := a.s.Stats()
		raw.Send(&proto.Resend{Of: "alice", After: 0})
		testkit.WaitFor(t, 10*time.Second, "the ask handled", func() bool {
			st := a.s.Stats()
			return st.Resent > before.Resent || st.Suppressed > before.Suppressed
		})
		time.Sleep(3 * cfg.HoldBack) // past the repeat suppression
	}
	spent, start := a.s.Stats(), time.Now()
	// Asked as an inbox asks: again after HoldBack, then twice as long.
	wait := cfg.HoldBack
	for a.s.Stats().Resent == spent.Resent {
		// An inbox's asks double their gaps: its last two before the
		// gap is given up come at about 0.45 and 0.93 of GapTimeout. An
		// answer past half of it is one ask from lost.
		if time.Since(start) > cfg.GapTimeout/2 {
			t.Fatalf("alice answered none of the asks of a spent share within GapTimeout/2 (%v): the gap would be lost or nearly", cfg.GapTimeout/2)
		}
		raw.Send(&proto.Resend{Of: "alice", After: 0})
		time.Sleep(wait)
		wait = min(2*wait, 500*time.Millisecond)
	}
	t.Logf("answered again %v after the share was spent (GapTimeout %v)", time.Since(start).Round(time.Millisecond), cfg.GapTimeout)
}

// TestLateJoinerOnNewServer: in a room of three, alice moves to serv2 and
// sends there before bob arrives. Bob gets it as soon as he joins serv2,
// not after the old connection's DrainTimeout (review finding 11; with
// nothing later from alice, he used to never get it at all). Production
// timers, with a DrainTimeout long enough that only the fix can pass.
func TestLateJoinerOnNewServer(t *testing.T) {
	s1, s2 := startChat(t, "serv1"), startChat(t, "serv2")
	cfg := DefaultSessionConfig()
	cfg.Logger = testkit.LoggerAt(t, slog.LevelInfo)
	cfg.DrainTimeout = time.Minute
	a := join(t, cfg, ref(s1), "room-late", "alice")
	b := join(t, cfg, ref(s1), "room-late", "bob")
	join(t, cfg, ref(s1), "room-late", "carol")
	a.move(t, ref(s2), 2)
	a.send(t, "on serv2")
	testkit.WaitFor(t, 5*time.Second, "alice acked", func() bool { return a.s.Stats().Unacked == 0 })
	start := time.Now()
	b.move(t, ref(s2), 2)
	testkit.WaitFor(t, 20*time.Second, "bob gets alice's serv2 message", func() bool { return b.got("alice") == 1 })
	t.Logf("bob got alice's serv2 message %v after joining serv2", time.Since(start))
	verify(t, []*member{b}, map[string]uint64{"alice": 1})
}

// TestSilentPathBreaksFast: the room's server stops answering without a
// reset (a link gone dark). The liveness check must declare the connection
// Broken well within a second at loopback RTT, not after IdleTimeout (15 s).
func TestSilentPathBreaksFast(t *testing.T) {
	s1 := startChat(t, "serv1")
	p := startProxy(t, s1.Addr())
	cfg := testConfig(t)
	cfg.Liveness = 300 * time.Millisecond
	b := join(t, cfg, p.ref("serv1"), "room-dark", "bob")
	start := time.Now()
	p.hole.Store(true)
	testkit.WaitFor(t, cfg.IdleTimeout/3, "break seen", func() bool { return b.brokenCount() == 1 })
	took := time.Since(start)
	t.Logf("silent path declared broken %v after it went dark (liveness %v)", took, cfg.Liveness)
	b.mu.Lock()
	err := b.broke[0].Err
	b.mu.Unlock()
	if !errors.Is(err, ErrSilent) {
		t.Errorf("Broken error %v, want ErrSilent", err)
	}
}

// TestStarvedReaderIsNotSilence: the connection's reader is held (as a
// process starved of CPU holds it) while the server's beats keep coming;
// they wait in the socket, and the session must not take the connection
// for silent. Before, it declared it Broken (ErrSilent) about 400 ms into
// the hold; chatload at 800 x 3 reported 1,200-3,400 such silences a run
// (then resumed), each a Broken event and a report to Central.
func TestStarvedReaderIsNotSilence(t *testing.T) {
	s1 := startChat(t, "serv1")
	cfg := testConfig(t)
	cfg.Liveness = 300 * time.Millisecond
	var hold atomic.Bool
	release := make(chan struct{})
	var held atomic.Int32
	cfg.beforeRead = func() {
		if hold.Load() {
			held.Add(1)
			<-release
		}
	}
	b := join(t, cfg, ref(s1), "room-starved", "bob")
	hold.Store(true)
	testkit.WaitFor(t, 10*time.Second, "the reader held", func() bool { return held.Load() > 0 })
	start := time.Now()
	time.Sleep(1500 * time.Millisecond) // the hold: ten beat intervals
	close(release)
	var frames int
	_ = b.s.call(func() { frames = b.s.wakeups })
	testkit.WaitFor(t, 10*time.Second, "frames read again", func() bool {
		var n int
		_ = b.s.call(func() { n = b.s.wakeups })
		return n > frames+3
	})
	t.Logf("reader held %v", time.Since(start).Round(time.Millisecond))
	if n := b.brokenCount(); n != 0 {
		b.mu.Lock()
		err := b.broke[0].Err
		b.mu.Unlock()
		t.Errorf("a connection whose beats waited unread was reported Broken %d times (%v)", n, err)
	}
}

// TestQuietRoomIsNotPinged: in a quiet room the server beats (proto.Beat)
// and the session sends no liveness Pings: over 1.5 s of silence at most
// one Ping (for the RTT, every beatPing, 2 s) goes up, where pinging after
// each 100 ms of silence sent one every 100 ms or so, and an RTT Ping
// every 500 ms sent three (a third of chatload's frames at 1,000 x 3); the
// beats keep the connection up, and a path going dark is still found (by
// TestSilentPathBreaksFast).
func TestQuietRoomIsNotPinged(t *testing.T) {
	s1 := startChat(t, "serv1")
	p := startProxy(t, s1.Addr())
	cfg := testConfig(t)
	cfg.Liveness = 300 * time.Millisecond
	b := join(t, cfg, p.ref("serv1"), "room-quiet", "bob")
	testkit.WaitFor(t, 10*time.Second, "a first beat", func() bool { return p.beats.Load() > 0 })
	pings, beats := p.pings.Load(), p.beats.Load()
	start := time.Now()
	time.Sleep(1500 * time.Millisecond) // an observation window of a quiet room
	pings, beats = p.pings.Load()-pings, p.beats.Load()-beats
	window := time.Since(start)
	t.Logf("in %v of a quiet room: %d pings up, %d beats down", window.Round(time.Millisecond), pings, beats)
	if most := int64(window/(1500*time.Millisecond)) + 1; pings > most {
		t.Errorf("%d Pings in %v of a quiet room with beats; want at most %d (one per 1.5 s)", pings, window.Round(time.Millisecond), most)
	}
	if beats < 3 {
		t.Errorf("%d beats in 1.5 s, at an interval of 150 ms; want several", beats)
	}
	if n := b.brokenCount(); n != 0 {
		t.Errorf("a quiet, live room broke %d times", n)
	}
}

// TestChatTimesTheRTT: a member that chats has its RTT from its messages'
// Acks, as TCP times its segments, and is not pinged for it: it used to
// ping every 500 ms whatever it sent.
func TestChatTimesTheRTT(t *testing.T) {
	s1 := startChat(t, "serv1")
	p := startProxy(t, s1.Addr())
	cfg := testConfig(t)
	cfg.Liveness = 300 * time.Millisecond
	b := join(t, cfg, p.ref("serv1"), "room-chatty", "bob")
	testkit.WaitFor(t, 10*time.Second, "a first beat", func() bool { return p.beats.Load() > 0 })
	var before time.Time
	_ = b.s.call(func() { before = b.s.cur.sampled })
	pings := p.pings.Load()
	for i := range 30 { // 10 a second for 3 s
		b.send(t, fmt.Sprintf("m%d", i))
		time.Sleep(100 * time.Millisecond)
	}
	pings = p.pings.Load() - pings
	var sampled time.Time
	var rtt time.Duration
	_ = b.s.call(func() { sampled, rtt = b.s.cur.sampled, b.s.cur.rtt })
	t.Logf("in 3 s of chat: %d pings, RTT %v, last sample %v ago", pings, rtt, time.Since(sampled).Round(time.Millisecond))
	if !sampled.After(before) || time.Since(sampled) > time.Second {
		t.Errorf("no RTT sample taken from the Acks (last sample %v ago)", time.Since(sampled).Round(time.Millisecond))
	}
	if pings > 1 {
		t.Errorf("%d Pings in 3 s while chatting 10 times a second; want at most 1", pings)
	}
}

// TestDarkPathFoundOneIntervalAfterLastFrame: the path goes dark just after
// the server answered a ping. The session pings again one ping interval
// (max(Liveness/3, 2*RTT)) after the last frame it heard and declares the
// silence one deadline after that. It used to leave its next check at the
// deadline of the ping just answered, so the next ping, and the silence,
// came up to a deadline later (Mininet link s6-s3 down: found 0.57 s after
// the link went dark instead of 0.42 s).
func TestDarkPathFoundOneIntervalAfterLastFrame(t *testing.T) {
	s1 := startChat(t, "serv1")
	p := startProxy(t, s1.Addr())
	cfg := testConfig(t)
	cfg.Liveness = 2400 * time.Millisecond // at loopback RTT: ping after 800 ms of silence, deadline 2.4 s
	every, deadline := cfg.Liveness/3, cfg.Liveness
	b := join(t, cfg, p.ref("serv1"), "room-dark-soon", "bob")
	joined := time.Now()
	// The first ping goes out one interval after the join; go dark as
	// soon as its answer has passed.
	testkit.WaitFor(t, 10*time.Second, "the first Pong relayed", func() bool {
		return p.sentAt.Load() > joined.Add(every/2).UnixNano()
	})
	p.hole.Store(true)
	last := time.Unix(0, p.sentAt.Load())
	testkit.WaitFor(t, 4*deadline, "break seen", func() bool { return b.brokenCount() == 1 })
	took := time.Since(last)
	t.Logf("dark path declared silent %v after the last frame (ping interval %v, deadline %v)", took.Round(time.Millisecond), every, deadline)
	if want := every + deadline + deadline/3; took > want {
		t.Errorf("declared silent %v after the last frame, want about %v (under %v): the next ping waited for the answered ping's deadline", took.Round(time.Millisecond), every+deadline, want)
	}
}

// TestSlowPathStaysUp: a path whose every frame takes 400 ms (longer than
// the 300 ms liveness floor) is slow, not dead: the deadline scales with
// the connection's measured RTT and the session must not break.
func TestSlowPathStaysUp(t *testing.T) {
	s1 := startChat(t, "serv1")
	p := startProxy(t, s1.Addr())
	p.delay.Store(int64(400 * time.Millisecond))
	cfg := testConfig(t)
	cfg.Liveness = 300 * time.Millisecond
	b := join(t, cfg, p.ref("serv1"), "room-slow", "bob")
	b.send(t, "hello")
	testkit.WaitFor(t, 10*time.Second, "ack over the slow path", func() bool { return b.s.Stats().Unacked == 0 })
	time.Sleep(3 * time.Second) // an observation window: pings must keep it up
	var rtt time.Duration
	_ = b.s.call(func() { rtt = b.s.cur.rtt })
	t.Logf("smoothed RTT over the slow path %v", rtt)
	if n := b.brokenCount(); n != 0 {
		t.Errorf("a slow but live path broke %d times", n)
	}
	if st := b.s.Stats(); !st.Connected {
		t.Errorf("not connected over the slow path: %+v", st)
	}
}

// TestSlowReader: bob's user reads his events far slower than alice
// sends (a slow UI), or stops reading for a while and then resumes. The
// server's outbound limit is small, as in review finding 5, where bob
// was cut off and lost 3,280 of 6,000 messages. Now alice is slowed to
// bob's pace: nothing is lost, nobody is cut off, no Missed. Production
// timers.
func TestSlowReader(t *testing.T) {
	tests := []struct {
		name  string
		pause func(i int) time.Duration // before bob reads event i
	}{
		{"reads-slowly", func(i int) time.Duration {
			if i%4 == 0 {
				return time.Millisecond
			}
			return 0
		}},
		{"stops-and-resumes", func(i int) time.Duration {
			if i == 100 {
				return 3 * time.Second
			}
			return 0
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startChatWith(t, "serv1", func(c *chatserver.Config) { c.MaxOutbound = 256 << 10 })
			cfg := DefaultSessionConfig()
			cfg.Logger = testkit.LoggerAt(t, slog.LevelInfo)
			a := join(t, cfg, ref(srv), "room-slow", "alice")
			bcfg := cfg
			bcfg.EventBuffer = 16
			bcfg.Dialer = smallRcvBuf()
			bob := openReader(t, bcfg, ref(srv), "room-slow", "bob", func(i int) {
				time.Sleep(tt.pause(i)) // the user's pace
			})
			check, broken, missed := bob.check, &bob.broken, &bob.missed
			const n = 3000 // 9 MB of 3 KB messages: 36 times the server's outbound limit
			text := strings.Repeat("x", 3000)
			start := time.Now()
			for range n {
				a.send(t, text)
			}
			testkit.WaitFor(t, 60*time.Second, "bob reads all", func() bool { return check.Count("alice") == n })
			t.Logf("bob read %d messages in %v; alice %+v", n, time.Since(start), a.s.Stats())
			bob.close()
			check.Expect("alice", n)
			if r := check.Report(); !r.OK() || broken.Load() != 0 || missed.Load() != 0 {
				t.Errorf("bob: %v, broken %d, missed events %d", r, broken.Load(), missed.Load())
			}
		})
	}
}

// TestStalledReaderPastTheBound: bob stops reading for longer than the
// server's SlowTimeout. He is cut off, rejoins, gets what the history and
// alice still hold, and exactly one Missed for exactly the rest: no
// silent loss, no duplicate.
func TestStalledReaderPastTheBound(t *testing.T) {
	srv := startChatWith(t, "serv1", func(c *chatserver.Config) {
		c.MaxOutbound = 256 << 10
		c.SlowTimeout = 500 * time.Millisecond
	})
	cfg := DefaultSessionConfig()
	cfg.Logger = testkit.LoggerAt(t, slog.LevelInfo)
	a := join(t, cfg, ref(srv), "room-stall", "alice")
	bcfg := cfg
	bcfg.EventBuffer = 16
	bcfg.Dialer = smallRcvBuf()
	b := join(t, bcfg, ref(srv), "room-stall", "bob")
	// join drains bob's events at once; stall it by holding its lock.
	b.mu.Lock()
	locked := true
	defer func() {
		if locked {
			b.mu.Unlock()
		}
	}()
	// The kernel's socket buffers on loopback grow to 16 MiB each way, so
	// alice sends until the server has cut bob off (it cannot see that
	// while it reads nothing: watch the server), at most 8000 x 3 KB.
	text := strings.Repeat("x", 3000)
	for i := 0; i < 8000 && srv.Stats().Conns == 2; i++ {
		a.send(t, text)
	}
	testkit.WaitFor(t, 30*time.Second, "bob cut off", func() bool { return srv.Stats().Conns == 1 })
	n := a.s.Stats().Sent
	t.Logf("bob cut off after alice sent %d", n)
	locked = false
	b.mu.Unlock()
	testkit.WaitFor(t, 10*time.Second, "bob sees the break", func() bool { return b.brokenCount() == 1 })
	b.move(t, ref(srv), 2)
	testkit.WaitFor(t, 30*time.Second, "alice's messages all delivered or told", func() bool {
		b.check.Expect("alice", n)
		r := b.check.Report()
		return r.Missing["alice"] == r.Told["alice"] && a.s.Stats().Unacked == 0
	})
	r := b.check.Report()
	miss := b.missed()
	t.Logf("bob: %v; missed %+v; alice %+v", r, miss, a.s.Stats())
	if r.Silent() != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 {
		t.Errorf("bob: %v", r)
	}
	if len(miss) != 1 || miss[0].Reason != reasonGone {
		t.Errorf("missed %+v, want exactly one range the sender no longer has", miss)
	}
}

// smallRcvBuf dials with a 4 KiB receive buffer, so that a reader that
// falls behind shows as the server's backlog rather than the kernel's.
func smallRcvBuf() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
}

// TestStalledServerRecovers: the server's answers stop for longer than the
// liveness deadline and then resume (a stall, not a death). The session
// reports Broken once, keeps the connection, and is connected again with
// nothing lost as soon as frames arrive (and says so: Resumed); no rejoin
// is needed.
func TestStalledServerRecovers(t *testing.T) {
	s1 := startChat(t, "serv1")
	p := startProxy(t, s1.Addr())
	cfg := testConfig(t)
	cfg.Liveness = 300 * time.Millisecond
	a := join(t, cfg, p.ref("serv1"), "room-stall", "alice")
	b := join(t, cfg, ref(s1), "room-stall", "bob")
	p.hole.Store(true) // alice hears nothing; what she sends still arrives
	testkit.WaitFor(t, 5*time.Second, "alice's break seen", func() bool { return a.brokenCount() == 1 })
	if a.s.Stats().Connected {
		t.Error("a silent connection counts as connected")
	}
	n := b.send(t, "while alice hears nothing")
	// Acked: the server has passed it on, so it waits on alice's dark path.
	testkit.WaitFor(t, 5*time.Second, "bob's message acked", func() bool { return b.s.Stats().Unacked == 0 })
	p.hole.Store(false) // frames flow again: what the server sent meanwhile arrives first
	b.send(t, "after the stall")
	testkit.WaitFor(t, 5*time.Second, "alice connected again", func() bool { return a.s.Stats().Connected })
	testkit.WaitFor(t, 5*time.Second, "alice told the server answers again", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.resumed) == 1
	})
	testkit.WaitFor(t, 10*time.Second, "alice gets both", func() bool { return a.check.Report().Received == int(n)+1 })
	if got := a.brokenCount(); got != 1 {
		t.Errorf("alice saw %d Broken events, want 1", got)
	}
	verify(t, []*member{a, b}, map[string]uint64{"bob": n + 1})
}

// TestLateLivenessCheckWaits: a liveness check that runs long after its
// time (the process was starved of CPU, and the answer may wait unread in
// the socket) does not declare the connection silent; it looks again
// shortly, and a check on time does declare it.
func TestLateLivenessCheckWaits(t *testing.T) {
	s1 := startChat(t, "serv1")
	cfg := testConfig(t)
	cfg.Liveness = 300 * time.Millisecond
	b := join(t, cfg, ref(s1), "room-late", "bob")
	var lateSilent, onTimeSilent bool
	var retry time.Duration
	if err := b.s.call(func() {
		s, l := b.s, b.s.cur
		now := time.Now()
		// A ping unanswered for 5 s, and a check that was due 4 s ago.
		l.heardAt, l.pingAt = now.Add(-10*time.Second), now.Add(-5*time.Second)
		s.nextLive = now.Add(-4 * time.Second)
		s.checkLive(now)
		lateSilent, retry = l.suspect, s.nextLive.Sub(now)
		s.checkLive(s.nextLive) // the next check, on time
		onTimeSilent = l.suspect
	}); err != nil {
		t.Fatal(err)
	}
	if lateSilent {
		t.Error("a check that ran 4 s late declared the connection silent")
	}
	if retry <= 0 || retry > cfg.Liveness {
		t.Errorf("after a late check the next one is in %v, want shortly", retry)
	}
	if !onTimeSilent {
		t.Error("the check on time did not declare the unanswered ping")
	}
	testkit.WaitFor(t, 5*time.Second, "the Broken event", func() bool { return b.brokenCount() == 1 })
}

// TestRTTHintSeedsLiveness: a new connection's liveness estimate starts
// from the prober's figures for its server when there are any (many round
// trips, a small spread), not from TCP's wide initial deviation (half the
// RTT, which made a fresh link's deadline 2 x (RTT + 2 x RTT)).
func TestRTTHintSeedsLiveness(t *testing.T) {
	s1 := startChat(t, "serv1")
	cfg := testConfig(t)
	cfg.Liveness = 3 * time.Second // no ping (and no Pong to refine it) for a second
	cfg.RTTHint = func(server string) (time.Duration, time.Duration, bool) {
		return 60 * time.Millisecond, time.Millisecond, server == "serv1"
	}
	b := join(t, cfg, ref(s1), "room-hint", "bob")
	var rtt, rttvar time.Duration
	var pinged time.Time
	if err := b.s.call(func() { rtt, rttvar, pinged = b.s.cur.rtt, b.s.cur.rttvar, b.s.cur.pingAt }); err != nil {
		t.Fatal(err)
	}
	// The hint counts as a sample: no Ping for one as the room is joined
	// (its Pong, a loopback round trip, would pull the RTT off the hint).
	if !pinged.IsZero() {
		t.Errorf("pinged %v after the join, with the hint's RTT fresh", time.Since(pinged))
	}
	if rtt != 60*time.Millisecond || rttvar != 60*time.Millisecond/8 {
		t.Errorf("rtt %v, rttvar %v; want the hint's 60ms and a deviation of 7.5ms (an eighth, above its spread)", rtt, rttvar)
	}
}

// TestBurstOfJoinsAndLeaves: members joining and leaving a room in a
// burst reach the server's members gathered in Presences frames (the
// server holds changes back while a burst lasts); the Session reports
// each join and each leave as its own Presence event.
func TestBurstOfJoinsAndLeaves(t *testing.T) {
	srv := startChat(t, "serv1")
	a := join(t, testConfig(t), ref(srv), "room-burst", "alice")
	var peers []*wiretest.Peer
	var want []string
	for i := range 12 {
		u := fmt.Sprintf("u%02d", i)
		peers = append(peers, dialRaw(t, srv.Addr(), "room-burst", u))
		want = append(want, u)
	}
	testkit.WaitFor(t, settle, "alice sees the twelve", func() bool { return slices.Equal(a.present(), want) })
	for _, p := range peers[:6] {
		p.Close()
	}
	testkit.WaitFor(t, settle, "alice sees six leave", func() bool { return slices.Equal(a.present(), want[6:]) })
}

// TestJoinAndLeaveInOneBatch: a user that joins and leaves while the
// server gathers presence changes reaches the members as its leave alone
// (a batch keeps one change per user); a Session that never saw the user
// reports nothing for it, rather than a leave of a stranger.
func TestJoinAndLeaveInOneBatch(t *testing.T) {
	srv := startChat(t, "serv1")
	alice := join(t, testConfig(t), ref(srv), "room-jl", "alice")
	// a's join goes out at once; x's, within the gap after it, waits in
	// a batch, and x's leave replaces it there.
	a := dialRaw(t, srv.Addr(), "room-jl", "a")
	x := dialRaw(t, srv.Addr(), "room-jl", "x")
	x.Close()
	testkit.WaitFor(t, settle, "x gone from the room", func() bool {
		rooms := srv.Rooms()
		return len(rooms) == 1 && !slices.Contains(rooms[0].Members, "x")
	})
	a.Send(&proto.Chat{Num: 1, Text: "after"})
	testkit.WaitFor(t, settle, "alice gets a's message", func() bool { return alice.got("a") == 1 })
	alice.mu.Lock()
	defer alice.mu.Unlock()
	seen := false
	for _, p := range alice.pres {
		if p.User != "x" {
			continue
		}
		if !p.Here && !seen {
			t.Fatalf("alice told x left, never told x joined: %+v", alice.pres)
		}
		seen = p.Here
	}
	t.Logf("alice's presence events: %+v", alice.pres)
}

// TestEventBacklogBound: a user who takes no events holds the session at
// EventBuffer undelivered events, those in the Events channel and those
// queued behind it together (they were bounded apart, so a session held
// twice its EventBuffer); the rest wait on the connection, and every one
// arrives, in order, once the user reads.
func TestEventBacklogBound(t *testing.T) {
	srv := startChat(t, "serv1")
	cfg := testConfig(t)
	a := join(t, cfg, ref(srv), "room-backlog", "alice")
	bcfg := cfg
	bcfg.EventBuffer = 100
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bob, err := Open(ctx, bcfg, ref(srv), "room-backlog", "bob", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if got, want := cap(bob.Events()), min(bcfg.EventBuffer-1, eventChan); got != want {
		t.Errorf("Events channel holds %d, want %d", got, want)
	}
	const n = 400
	for i := range n {
		a.send(t, fmt.Sprint(i))
	}
	backlog := func() (k int) {
		_ = bob.call(func() { k = len(bob.queue) + len(bob.events) })
		return k
	}
	testkit.WaitFor(t, 10*time.Second, "bob's reader blocked behind the backlog", func() bool {
		return backlog() >= bcfg.EventBuffer && len(bob.frames) == cap(bob.frames)
	})
	if k := backlog(); k != bcfg.EventBuffer {
		t.Errorf("%d events wait for bob, want EventBuffer (%d)", k, bcfg.EventBuffer)
	}
	check := NewChecker()
	for got := 0; got < n; {
		select {
		case ev := <-bob.Events():
			if m, ok := ev.(Message); ok {
				check.Observe(m.From, m.Num)
				got++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("bob got %d of %d messages", got, n)
		}
	}
	check.Expect("alice", n)
	if r := check.Report(); !r.OK() {
		t.Errorf("bob: %v", r)
	}
}

// Each announced member that is ahead of us is asked for its tail alone:
// asking every lagging member at each announcement made N announced
// members cost N^2/2 Resends (abuse probe, 2026-12-03: 20,000 made-up
// members, 2.3 GB written in 15 s). A fake chat server announces 300.
func TestAnnouncementsAskOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 300
	resends := make(chan int, 1)
	go func() {
		c := acceptJoin(ln)
		if c == nil {
			return
		}
		defer c.Close()
		var ps proto.Presences
		for i := range n {
			ps.Changes = append(ps.Changes, proto.Presence{User: fmt.Sprintf("m%d", i), Here: true, LastSent: 5})
		}
		c.Send(&ps)
		count := 0
		c.NetConn().SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			m, err := c.Recv()
			if err != nil {
				break
			}
			if _, ok := m.(*proto.Resend); ok {
				count++
			}
		}
		resends <- count
	}()
	s := open(t, testConfig(t), proto.ServerRef{ID: "fake", Addr: ln.Addr().String()}, "room-1", "me")
	defer s.Close()
	got := <-resends
	t.Logf("%d announced members ahead of us: %d Resends", n, got)
	if got > 2*n {
		t.Fatalf("%d Resends for %d announced members, want about one each", got, n)
	}
}

// A link learns at most maxPeers members: 3 million made-up members grew
// a client to 452 MB (abuse probe, 2026-12-03). The fake server's Ping
// after its announcements comes back once the client took them all.
func TestLinkMembersBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const per = 500
	const batches = (maxPeers + 2000) / per
	taken := make(chan error, 1)
	go func() {
		c := acceptJoin(ln)
		if c == nil {
			taken <- errors.New("no join")
			return
		}
		defer c.Close()
		for b := range batches {
			var ps proto.Presences
			for i := range per {
				ps.Changes = append(ps.Changes, proto.Presence{User: fmt.Sprintf("m%d-%d", b, i), Here: true})
			}
			c.Send(&ps)
		}
		// A message of the first announced member: once the client tells
		// it, it has taken every announcement before it.
		c.Send(&proto.Deliver{Seq: 1, From: "m0-0", Num: 1, Text: "last"})
		taken <- nil
		c.Recv() // until the client goes
	}()
	s := open(t, testConfig(t), proto.ServerRef{ID: "fake", Addr: ln.Addr().String()}, "room-1", "me")
	defer s.Close()
	if err := <-taken; err != nil {
		t.Fatal(err)
	}
	timeout := time.After(20 * time.Second)
	for told := false; !told; {
		select {
		case ev := <-s.Events():
			m, ok := ev.(Message)
			told = ok && m.Text == "last"
		case <-timeout:
			t.Fatal("the message after the announcements never came")
		}
	}
	var members int
	s.call(func() { members = len(s.cur.members) })
	t.Logf("%d members announced, %d kept", batches*per, members)
	if members > maxPeers {
		t.Fatalf("%d members kept, at most %d wanted", members, maxPeers)
	}
}

// acceptJoin plays a chat server for the next connection on ln up to its
// Joined (an empty room), and returns the connection, or nil.
func acceptJoin(ln net.Listener) *proto.Conn {
	nc, err := ln.Accept()
	if err != nil {
		return nil
	}
	c := proto.NewConn(nc, 0)
	for {
		m, err := c.Recv()
		if err != nil {
			c.Close()
			return nil
		}
		switch m := m.(type) {
		case *proto.Hello:
			c.Send(&proto.Welcome{V: m.V, Server: "fake"})
		case *proto.Join:
			c.Send(&proto.Joined{Room: m.Room, Epoch: m.Epoch})
			return c
		}
	}
}
