package central

import (
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

func TestAssignRetriedUntilAck(t *testing.T) {
	w := newWorld(t, nil) // fake clock; retries follow it
	a, b := w.user(t, "alice"), w.user(t, "bob")
	a.send(&proto.Request{To: []string{"bob"}})
	ack := a.expectStatus(proto.AckConn)
	expect[*proto.Incoming](b, nil)
	b.send(&proto.Answer{Req: ack.Req, Accept: true})
	first := expect[*proto.Assign](b, skipStatus)
	expect[*proto.Assign](a, skipStatus)
	a.send(&proto.AssignAck{Room: first.Room, Epoch: 1})
	a.sync(skipStatus)
	for i := range 3 {
		w.clk.Advance(w.c.cfg.AssignRetry)
		again := expect[*proto.Assign](b, skipStatus)
		if again.Room != first.Room || again.Epoch != 1 {
			t.Fatalf("retry %d: %+v", i, again)
		}
	}
	b.send(&proto.AssignAck{Room: first.Room, Epoch: 1})
	testkit.WaitFor(t, 5*time.Second, "pushes acknowledged", func() bool {
		w.c.mu.Lock()
		defer w.c.mu.Unlock()
		return len(w.c.pushes) == 0
	})
	w.clk.Advance(10 * w.c.cfg.AssignRetry)
	b.send(&proto.Ping{ID: 9})
	if p := expect[*proto.Pong](b, nil); p.ID != 9 {
		t.Fatalf("got %+v", p)
	}
	// alice acknowledged at once: she saw exactly one Assign.
	a.send(&proto.Ping{ID: 10})
	expect[*proto.Pong](a, skipStatus)
}

func TestAssignGiveUp(t *testing.T) {
	w := newWorld(t, nil)
	a, b := w.user(t, "alice"), w.user(t, "bob")
	as := chatNoAck(t, a, b)
	w.clk.Advance(w.c.cfg.AssignGiveUp)
	testkit.WaitFor(t, 5*time.Second, "pushes dropped", func() bool {
		w.c.mu.Lock()
		defer w.c.mu.Unlock()
		return len(w.c.pushes) == 0
	})
	if _, ok := w.roomOf(t, as.Room); !ok {
		t.Fatal("giving up on a push must not remove the room")
	}
}

// chatNoAck runs a request to acceptance without acknowledging the Assign.
func chatNoAck(t *testing.T, a, b *ctl) *proto.Assign {
	t.Helper()
	a.send(&proto.Request{To: []string{b.name}})
	ack := a.expectStatus(proto.AckConn)
	expect[*proto.Incoming](b, nil)
	b.send(&proto.Answer{Req: ack.Req, Accept: true})
	expect[*proto.Assign](b, skipStatus)
	return expect[*proto.Assign](a, skipStatus)
}

func TestServerDownRelocatesAndOfflineMemberCatchesUp(t *testing.T) {
	w := newWorld(t, nil)
	a := w.user(t, "alice")
	b, bs := w.connect(t, "bob")
	w.latency(t, bs, map[string]centralapi.Sample{"serv1": ms(10), "serv2": ms(30)})
	as := chat(t, a, b)
	if as.Server.ID != "serv1" {
		t.Fatalf("room placed on %s, want serv1", as.Server.ID)
	}
	b.nc.Close()
	testkit.WaitFor(t, 5*time.Second, "bob offline", func() bool {
		info, err := w.api.LookupClient(ctx(t), "bob")
		return err == nil && !info.Online
	})
	// serv2 keeps beating; serv1 falls silent.
	w.clk.Advance(w.c.cfg.OfflineAfter / 2)
	if _, err := w.api.Heartbeat(ctx(t), "serv2", "", centralapi.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	w.clk.Advance(w.c.cfg.OfflineAfter/2 + time.Millisecond)
	mv := expect[*proto.Assign](a, nil)
	if mv.Room != as.Room || mv.Epoch != 2 || mv.Server.ID != "serv2" || mv.Prev != "serv1" || mv.Reason != "current server down" || mv.RTT != 30*time.Millisecond {
		t.Fatalf("relocation %+v", mv)
	}
	a.send(&proto.AssignAck{Room: mv.Room, Epoch: mv.Epoch})
	b2 := w.connectAs(t, bs)
	got := expect[*proto.Assign](b2, nil)
	if got.Room != as.Room || got.Epoch != 2 || got.Server.ID != "serv2" {
		t.Fatalf("bob on reconnect got %+v", got)
	}
	if r, _ := w.roomOf(t, as.Room); r.Epoch != 2 || r.Server != "serv2" {
		t.Fatalf("room listing %+v", r)
	}
}

func TestUnreachableFastPath(t *testing.T) {
	cfg := testConfig(t)
	cfg.ScanInterval = time.Hour // only the fast path can move the room
	h := startCentral(t, cfg)
	e1 := h.addServer(t, "serv1")
	h.addServer(t, "serv2")
	a, as := h.connect(t, "alice")
	b, bs := h.connect(t, "bob")
	for _, s := range []centralapi.Session{as, bs} {
		h.latency(t, s, map[string]centralapi.Sample{"serv1": ms(10), "serv2": ms(30)})
	}
	room := chat(t, a, b)

	// A report about a server that answers moves nothing: the reporter gets
	// the placement again, to rejoin (the server may have restarted).
	a.send(&proto.Unreachable{Room: room.Room, Server: "serv1", Epoch: 1})
	again := expect[*proto.Assign](a, nil)
	if again.Epoch != 1 || again.Server.ID != "serv1" || again.Reason != "current placement" {
		t.Fatalf("report about a live server answered with %+v", again)
	}
	a.send(&proto.AssignAck{Room: again.Room, Epoch: again.Epoch})
	// A stale report gets the current placement back.
	b.send(&proto.Unreachable{Room: room.Room, Server: "serv0", Epoch: 0})
	cur := expect[*proto.Assign](b, nil)
	if cur.Epoch != 1 || cur.Server.ID != "serv1" || cur.Reason != "current placement" {
		t.Fatalf("stale report answered with %+v", cur)
	}
	b.send(&proto.AssignAck{Room: cur.Room, Epoch: cur.Epoch})

	e1.Stop()
	start := time.Now()
	a.send(&proto.Unreachable{Room: room.Room, Server: "serv1", Epoch: 1})
	mv := expect[*proto.Assign](a, nil)
	took := time.Since(start)
	t.Logf("fast-path relocation took %v", took)
	if mv.Epoch != 2 || mv.Server.ID != "serv2" || mv.Reason != "current server down" {
		t.Fatalf("relocation %+v", mv)
	}
	if took > 3*time.Second {
		t.Fatalf("fast path took %v", took)
	}
	if bm := expect[*proto.Assign](b, nil); bm.Epoch != 2 {
		t.Fatalf("bob got %+v", bm)
	}
	all, _ := h.api.AllServers(ctx(t))
	if len(all) != 2 || all[0].Up {
		t.Fatalf("serv1 must be down: %+v", all)
	}
}

func TestDrainAndDeregisterMoveRooms(t *testing.T) {
	for _, tc := range []struct {
		name   string
		act    func(w *world) error
		reason string
	}{
		{"drain", func(w *world) error { return w.api.Drain(ctx(t), "serv1", "") }, "current server draining"},
		{"deregister", func(w *world) error { return w.api.Deregister(ctx(t), "serv1", "") }, "current server unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nil)
			a, b := w.user(t, "alice"), w.user(t, "bob")
			room := chat(t, a, b)
			if err := tc.act(w); err != nil {
				t.Fatal(err)
			}
			mv := expect[*proto.Assign](a, nil)
			if mv.Room != room.Room || mv.Epoch != 2 || mv.Server.ID != "serv2" || mv.Reason != tc.reason {
				t.Fatalf("relocation %+v", mv)
			}
			// A new room now avoids serv1 too.
			c, d := w.user(t, "carol"), w.user(t, "dave")
			if r2 := chat(t, c, d); r2.Server.ID != "serv2" {
				t.Fatalf("new room on %s", r2.Server.ID)
			}
		})
	}
}

func TestBetterServerMoveAndDwell(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.Policy.MinDwell = time.Minute; c.OfflineAfter = 24 * time.Hour })
	a, as := w.connect(t, "alice")
	b, bs := w.connect(t, "bob")
	vec := map[string]centralapi.Sample{"serv1": ms(40), "serv2": ms(60)}
	w.latency(t, as, vec)
	w.latency(t, bs, vec)
	room := chat(t, a, b)
	w.addServer(t, "serv3")
	vec["serv3"] = ms(20)
	w.latency(t, as, vec)
	w.latency(t, bs, vec)
	// Inside the dwell time: no move, whatever the scans say.
	w.c.mu.Lock()
	n := w.c.scanLocked()
	w.c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d moves inside the dwell time", n)
	}
	w.clk.Advance(time.Minute)
	mv := expect[*proto.Assign](a, nil)
	if mv.Room != room.Room || mv.Epoch != 2 || mv.Server.ID != "serv3" || mv.Prev != "serv1" ||
		mv.PrevRTT != 40*time.Millisecond || mv.RTT != 20*time.Millisecond {
		t.Fatalf("move %+v", mv)
	}
	t.Logf("move reason: %s", mv.Reason)
	// A small gain (below 5 ms) does not move it back and forth.
	w.clk.Advance(time.Hour)
	vec["serv1"] = ms(18)
	w.latency(t, as, vec)
	w.c.mu.Lock()
	n = w.c.scanLocked()
	w.c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d moves for a 2 ms gain", n)
	}
}

func TestLeaveRoomRemovesRoom(t *testing.T) {
	w := newWorld(t, nil)
	a, b := w.user(t, "alice"), w.user(t, "bob")
	room := chat(t, a, b)
	a.send(&proto.LeaveRoom{Room: room.Room})
	testkit.WaitFor(t, 5*time.Second, "alice out of the room", func() bool {
		r, ok := w.roomOf(t, room.Room)
		return ok && len(r.Members) == 1 && r.Members[0] == "bob"
	})
	a.send(&proto.LeaveRoom{Room: room.Room})
	if e := expect[*proto.Error](a, nil); e.Code != proto.CodeNotFound {
		t.Fatalf("second leave: %+v", e)
	}
	b.send(&proto.LeaveRoom{Room: room.Room})
	testkit.WaitFor(t, 5*time.Second, "room removed", func() bool {
		_, ok := w.roomOf(t, room.Room)
		return !ok
	})
	if _, ok := w.c.st.Room(room.Room); ok {
		t.Fatal("room still in the store")
	}
}
