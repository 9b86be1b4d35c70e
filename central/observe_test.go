package central

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// TestObserveRequestsAndBadState counts chat requests by outcome (the
// early refusals too) and checks a move away from a dead server: its
// reason, its place in the timeline, and a bad state that starts at the
// first missed heartbeat, on a fake clock.
func TestObserveRequestsAndBadState(t *testing.T) {
	w := newWorld(t, nil)
	a, b := w.user(t, "alice"), w.user(t, "bob")
	a.send(&proto.Request{To: []string{"nobody"}})
	a.expectStatus(proto.AckConn)
	a.expectStatus(proto.UserNotFound)
	a.send(&proto.Request{To: []string{"alice"}})
	a.expectStatus(proto.AckConn)
	a.expectStatus(proto.ReqInvalid)
	as := chat(t, a, b)
	if as.Server.ID != "serv1" {
		t.Fatalf("placed on %s", as.Server.ID)
	}
	o := w.c.obs
	for outcome, want := range map[string]float64{"user_not_found": 1, "req_invalid": 1, "req_accepted": 1, "req_declined": 0} {
		if got := testutil.ToFloat64(o.requests.WithLabelValues(outcome)); got != want {
			t.Errorf("requests{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}

	// serv2 keeps beating; serv1 falls silent after its last heartbeat.
	w.c.mu.Lock()
	lastSeen := w.c.srvByID["serv1"].rec.LastSeen
	w.c.mu.Unlock()
	w.clk.Advance(w.c.cfg.OfflineAfter / 2)
	if _, err := w.api.Heartbeat(ctx(t), "serv2", "", centralapi.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	w.clk.Advance(w.c.cfg.OfflineAfter/2 + time.Millisecond)
	// A re-sent Assign of the placement alice already holds (a push retry,
	// or the answer to her Holding report as the clock jumps) is not the move.
	mv := expect[*proto.Assign](a, func(m wire.Message) bool {
		x, ok := m.(*proto.Assign)
		return skipStatus(m) || ok && x.Epoch == as.Epoch && x.Server.ID == as.Server.ID
	})
	if mv.Server.ID != "serv2" {
		t.Fatalf("moved to %s", mv.Server.ID)
	}
	snap := w.c.Snapshot()
	if len(snap.Moves) != 1 {
		t.Fatalf("timeline %+v, want one move", snap.Moves)
	}
	m := snap.Moves[0]
	wantBad := m.At.Sub(lastSeen.Add(w.c.cfg.HeartbeatInterval))
	if m.From != "serv1" || m.To != "serv2" || m.Reason != "server_down" || m.BadFor != wantBad {
		t.Errorf("move %+v, want serv1 -> serv2, server_down, bad for %v (from the first missed heartbeat)", m, wantBad)
	}
	if got := testutil.ToFloat64(o.moves.WithLabelValues("server_down")); got != 1 {
		t.Errorf("moves{reason=server_down} = %v", got)
	}
	if n := testutil.CollectAndCount(o.badFor); n != 1 {
		t.Errorf("bad-state histogram series: %d", n)
	}
	var up, down int
	for _, s := range snap.Servers {
		if s.Up {
			up++
		} else {
			down++
		}
	}
	if up != 1 || down != 1 || len(snap.Rooms) != 1 || snap.Rooms[0].Server != "serv2" || snap.Rooms[0].Worst != 30*time.Millisecond {
		t.Errorf("snapshot servers %+v rooms %+v", snap.Servers, snap.Rooms)
	}
}

// TestMoveTimelineIsBounded fills the timeline past its size: it keeps the
// newest movesKept moves, oldest first.
func TestMoveTimelineIsBounded(t *testing.T) {
	w := newWorld(t, nil)
	w.c.mu.Lock()
	r := &room{id: "r-test", srv: w.c.srvByID["serv1"]}
	for i := range movesKept + 10 {
		w.c.noteMoveLocked(r, nil, move{r: r, reason: "better server: x", epoch: uint64(i)}, time.Unix(int64(i), 0))
	}
	w.c.mu.Unlock()
	moves := w.c.Snapshot().Moves
	if len(moves) != movesKept || moves[0].At != time.Unix(10, 0) || moves[len(moves)-1].At != time.Unix(movesKept+9, 0) {
		t.Fatalf("%d moves, first %v, last %v", len(moves), moves[0].At, moves[len(moves)-1].At)
	}
}

// A Snapshot lists at most snapshotClients clients, the first by name,
// with the true total in Counts: anyone may register users, and a
// snapshot of them all grew with each (abuse probe, 2026-12-01: 414 KB at
// 5,831 users, marshalled for every live view).
func TestSnapshotClientsBounded(t *testing.T) {
	h := startCentral(t, testConfig(t))
	h.c.mu.Lock()
	now := h.c.now()
	for i := range snapshotClients + 100 {
		name := fmt.Sprintf("u%04d", (i*7919)%(snapshotClients+100))
		h.c.newUserLocked(name, h.c.newToken(name), now)
	}
	h.c.mu.Unlock()
	snap := h.c.Snapshot()
	if len(snap.Clients) != snapshotClients || snap.Counts["clients"] != snapshotClients+100 {
		t.Fatalf("%d clients listed of %d, want %d of %d", len(snap.Clients), snap.Counts["clients"], snapshotClients, snapshotClients+100)
	}
	for i, v := range snap.Clients {
		if want := fmt.Sprintf("u%04d", i); v.Name != want {
			t.Fatalf("client %d is %s, want %s (the first by name)", i, v.Name, want)
		}
	}
}
