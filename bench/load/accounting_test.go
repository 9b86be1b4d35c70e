package load

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"nearchat/chatserver"
	"nearchat/client"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// accountingGen is a run's state with one room of two members and no
// cluster, for feeding the members' events to the accounting.
func accountingGen() (*gen, *room, []*member) {
	g := &gen{log: slog.New(slog.DiscardHandler), errs: map[string]int{}, moves: map[string]int{}, movesSeen: map[string]bool{},
		chaosLog: map[string][]chaosMark{}, chaosDone: map[string]int{}, hitRooms: map[*room]bool{}}
	r := &room{idx: 0, id: "r1", broken: map[int]brk{}}
	for i := range 2 {
		r.members = append(r.members, &member{r: r, idx: i, g: g, name: fmt.Sprintf("m%d", i), check: client.NewChecker()})
	}
	g.rooms = []*room{r}
	return g, r, r.members
}

// TestSilenceThatResumesIsNoOutage (issue 14): under load a member's
// liveness ping goes unanswered past its deadline (Broken, ErrSilent) and
// the server then answers (Resumed): nothing moved, the room never lacked
// a server. It was counted as time without a server (1,180-3,560 such
// "outages" a run at 500-2,000 rooms). A silence that ends in a move
// still counts, from the silence on; so does a broken connection.
func TestSilenceThatResumesIsNoOutage(t *testing.T) {
	g, r, ms := accountingGen()
	s1, s2 := proto.ServerRef{ID: "s1"}, proto.ServerRef{ID: "s2"}
	silent := fmt.Errorf("session: %w (305ms)", client.ErrSilent)
	t0 := time.Now()

	// Both members fall silent, then both hear from the server again.
	ms[0].handle(client.Broken{Room: "r1", Server: s1, Epoch: 1, Err: silent}, t0)
	ms[1].handle(client.Broken{Room: "r1", Server: s1, Epoch: 1, Err: silent}, t0.Add(10*time.Millisecond))
	ms[0].handle(client.Resumed{Room: "r1", Server: s1, Epoch: 1, After: 50 * time.Millisecond}, t0.Add(350*time.Millisecond))
	ms[1].handle(client.Resumed{Room: "r1", Server: s1, Epoch: 1, After: 40 * time.Millisecond}, t0.Add(360*time.Millisecond))
	if n, s := g.outage.count(), g.silences.Load(); n != 0 || s != 2 {
		t.Fatalf("two silences that resumed: %d outages (want 0), %d silences (want 2)", n, s)
	}
	if _, open := r.openOutage(t0.Add(time.Second)); open || len(g.hitRooms) != 0 {
		t.Fatalf("room still broken or hit after its silences resumed: hit %v", g.hitRooms)
	}

	// A silence that ends in a move counts from the silence.
	t1 := t0.Add(2 * time.Second)
	ms[0].handle(client.Broken{Room: "r1", Server: s1, Epoch: 1, Err: silent}, t1)
	ms[0].handle(client.Moved{Room: "r1", From: s1, To: s2, Epoch: 2, Assign: proto.Assign{Room: "r1", Epoch: 2, Server: s2, Prev: "s1", Reason: "current server down"}}, t1.Add(400*time.Millisecond))
	// One member silent (resumes), the other broken (moves): only the
	// broken one's time counts.
	t2 := t0.Add(4 * time.Second)
	ms[0].handle(client.Broken{Room: "r1", Server: s2, Epoch: 2, Err: silent}, t2)
	ms[1].handle(client.Broken{Room: "r1", Server: s2, Epoch: 2, Err: fmt.Errorf("read: connection reset")}, t2.Add(100*time.Millisecond))
	ms[0].handle(client.Resumed{Room: "r1", Server: s2, Epoch: 2}, t2.Add(200*time.Millisecond))
	ms[1].handle(client.Moved{Room: "r1", From: s2, To: s1, Epoch: 3, Assign: proto.Assign{Room: "r1", Epoch: 3, Server: s1, Prev: "s2", Reason: "current server down"}}, t2.Add(600*time.Millisecond))
	d := g.outage.dist()
	t.Logf("outages %v; silences %d", d, g.silences.Load())
	if d.Count != 2 || g.silences.Load() != 3 {
		t.Fatalf("outages %d (want 2: the silence that moved, the break), silences %d (want 3)", d.Count, g.silences.Load())
	}
	if d.P50 < 390 || d.P50 > 410 || d.Max < 490 || d.Max > 510 {
		t.Fatalf("outages %v: want 400 ms (silence to move) and 500 ms (break to move)", d)
	}
}

// TestSettleBoundHoldsOnAStuckSession (issue 14): the settle wait asks
// every session for its Stats; a session whose goroutine is stuck (here
// in its OnBroken callback, which runs on it, after its server stopped)
// never answers. The wait ignored its bound and the run hung; now it gives
// up at the bound, and the final count leaves the stuck session out as
// "session_stuck".
func TestSettleBoundHoldsOnAStuckSession(t *testing.T) {
	cfg := chatserver.DefaultConfig()
	cfg.Listen, cfg.ID, cfg.Loops = "127.0.0.1:0", "s1", 1
	cfg.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	srv, err := chatserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopServer := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Run(sctx); err != nil {
			t.Errorf("chat server: %v", err)
		}
	}()
	defer func() { stopServer(); <-served }()

	entered, release := make(chan struct{}), make(chan struct{})
	scfg := client.DefaultSessionConfig()
	scfg.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	scfg.OnBroken = func(proto.ServerRef, uint64, error) {
		close(entered)
		<-release // the session's goroutine is stuck here
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := client.Open(ctx, scfg, proto.ServerRef{ID: "s1", Addr: srv.Addr()}, "room-stuck", "alice", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	stopServer()
	<-served
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the session never saw its server go")
	}
	defer close(release)

	g, _, ms := accountingGen()
	for _, m := range ms {
		m.sess.Store(sess)
	}
	const bound = 300 * time.Millisecond
	start := time.Now()
	out := make(chan error, 1)
	go func() { out <- g.settle(context.Background(), bound) }()
	select {
	case err := <-out:
		took := time.Since(start)
		t.Logf("settle gave up after %v (bound %v): %v", took, bound, err)
		if err == nil {
			t.Fatal("settled, though a session never answered")
		}
	case <-time.After(20 * bound):
		t.Fatalf("settle still waiting %v after its bound of %v", 20*bound, bound)
	}
	start = time.Now()
	stats := g.allStats(bound)
	if took := time.Since(start); took > 20*bound || len(stats) != 0 {
		t.Fatalf("final count: %d answers from stuck sessions after %v (bound %v)", len(stats), took, bound)
	}
}
