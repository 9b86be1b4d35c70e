package central

import (
	"crypto/ed25519"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"nearchat/central/store"
	"nearchat/chatserver"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/ticket"
	"nearchat/pkg/wiretest"
)

// startChatServers runs real chat servers, checking Central's tickets,
// registered with h's Central.
func startChatServers(t *testing.T, h *harness, pub ed25519.PublicKey, ids ...string) map[string]*chatserver.Server {
	t.Helper()
	return startChatServersWith(t, h, pub, nil, ids...)
}

// startChatServersWith is startChatServers with mod applied to each
// server's config.
func startChatServersWith(t *testing.T, h *harness, pub ed25519.PublicKey, mod func(*chatserver.Config), ids ...string) map[string]*chatserver.Server {
	t.Helper()
	out := map[string]*chatserver.Server{}
	for _, id := range ids {
		cfg := chatserver.DefaultConfig()
		cfg.ID, cfg.Listen, cfg.Central, cfg.TicketKey = id, "127.0.0.1:0", h.c.RESTAddr(), pub
		cfg.Logger = testkit.Logger(t)
		if mod != nil {
			mod(&cfg)
		}
		s, err := chatserver.New(cfg)
		if err != nil {
			t.Fatalf("chatserver.New: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		out[id] = s
	}
	testkit.WaitFor(t, 10*time.Second, "chat servers registered", func() bool {
		list, err := h.api.Servers(ctx(t))
		return err == nil && len(list) == len(ids)
	})
	return out
}

// heardTwice waits for two heartbeats of server id after now: the answer
// to the first has then been applied.
func (h *harness) heardTwice(t *testing.T, id string) {
	t.Helper()
	seen := func() time.Time {
		list, err := h.api.Servers(ctx(t))
		if err != nil {
			return time.Time{}
		}
		for _, s := range list {
			if s.ID == id {
				return s.LastSeen
			}
		}
		return time.Time{}
	}
	after := time.Now()
	testkit.WaitFor(t, 10*time.Second, "a heartbeat of "+id, func() bool { return seen().After(after) })
	first := seen()
	testkit.WaitFor(t, 10*time.Second, "a second heartbeat of "+id, func() bool { return seen().After(first) })
}

// joinWith dials srv and joins as user with the ticket of a.
func joinWith(t *testing.T, srv *chatserver.Server, user string, a *proto.Assign) *wiretest.Peer {
	t.Helper()
	p := wiretest.Dial(t, srv.Addr())
	p.Name = user
	p.Hello(&proto.Hello{Agent: "test/1"})
	p.Send(&proto.Join{Room: a.Room, User: user, Epoch: a.Epoch, Ticket: a.Ticket})
	return p
}

// TestTicketsRevoked replays tickets that outlived what they admitted: one
// from before a move, on the room's old server, and one of a member that
// left the room, who also must not stay connected.
func TestTicketsRevoked(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	cfg := testConfig(t)
	cfg.TicketKey = priv
	cfg.HeartbeatInterval = 50 * time.Millisecond
	h := startCentral(t, cfg)
	srv := startChatServers(t, h, pub, "serv1", "serv2")
	w := &world{harness: h} // its users favour serv1; its fake clock is not used
	a, b := w.user(t, "alice"), w.user(t, "bob")
	first := chat(t, a, b)
	if first.Server.ID != "serv1" || len(first.Ticket) == 0 {
		t.Fatalf("first placement %+v, want serv1 with a ticket", first)
	}
	// The ticket works before the move.
	p := joinWith(t, srv["serv1"], "alice", first)
	wiretest.Expect[*proto.Joined](p, wiretest.AllBut(proto.TJoined))
	p.Close()

	if err := srv["serv1"].Drain(ctx(t)); err != nil {
		t.Fatalf("drain: %v", err)
	}
	mvA := expect[*proto.Assign](a, nil)
	mvB := expect[*proto.Assign](b, nil)
	if mvA.Server.ID != "serv2" || mvA.Epoch != first.Epoch+1 {
		t.Fatalf("move %+v, want serv2 at epoch %d", mvA, first.Epoch+1)
	}
	a.send(&proto.AssignAck{Room: mvA.Room, Epoch: mvA.Epoch})
	b.send(&proto.AssignAck{Room: mvB.Room, Epoch: mvB.Epoch})
	h.heardTwice(t, "serv1")

	t.Run("ticket from before the move", func(t *testing.T) {
		p := joinWith(t, srv["serv1"], "alice", first)
		p.ExpectClosed(proto.CodeUnauthorized)
	})

	alice := joinWith(t, srv["serv2"], "alice", mvA)
	wiretest.Expect[*proto.Joined](alice, wiretest.AllBut(proto.TJoined))
	bob := joinWith(t, srv["serv2"], "bob", mvB)
	wiretest.Expect[*proto.Joined](bob, wiretest.AllBut(proto.TJoined))
	left := time.Now()
	a.send(&proto.LeaveRoom{Room: mvA.Room})

	t.Run("member that left is dropped", func(t *testing.T) {
		alice.ExpectClosed(proto.CodeUnauthorized)
		t.Logf("dropped %v after leaving (heartbeats every %v)", time.Since(left).Round(time.Millisecond), cfg.HeartbeatInterval)
	})
	h.heardTwice(t, "serv2")
	t.Run("member that left cannot rejoin", func(t *testing.T) {
		p := joinWith(t, srv["serv2"], "alice", mvA)
		p.ExpectClosed(proto.CodeUnauthorized)
	})
	t.Run("the member that stayed chats on", func(t *testing.T) {
		bob.Send(&proto.Ping{ID: 7})
		if pong := wiretest.Expect[*proto.Pong](bob, wiretest.AllBut(proto.TPong)); pong.ID != 7 {
			t.Fatalf("pong %+v", pong)
		}
	})
}

// withTicketKey makes a core rig's Central sign tickets with a new key.
func withTicketKey(c *Config) { _, c.TicketKey, _ = ed25519.GenerateKey(nil) }

// members returns the members of room id, and whether Central knows it.
func (k *coreRig) members(id string) ([]string, bool) {
	k.c.mu.Lock()
	defer k.c.mu.Unlock()
	r := k.c.roomByID[id]
	if r == nil {
		return nil, false
	}
	return r.memberNames(), true
}

// revoked reports whether hb carries a revocation of user's tickets for
// room (user "" for the room's removal) issued up to before.
func revoked(hb centralapi.HeartbeatResponse, room, user string, before int64) bool {
	return slices.ContainsFunc(hb.Revocations, func(r centralapi.Revocation) bool {
		return r.Room == room && r.User == user && r.Before == before
	})
}

// A member that left a room stays out of it once Central restarts, or a
// standby takes over, on the same store (fuzz sweep F2: the new Central's
// revocation log began empty): neither the room's server, which has not
// read the leave yet, nor the member's report with the ticket it had
// before leaving brings it back; and the servers read the leave again,
// from the new Central's log.
func TestLeaveSurvivesRestart(t *testing.T) {
	k := newCoreRig(t, withTicketKey)
	tok := k.server("s1")
	k.connect("alice")
	k.connect("bob")
	cl := k.connect("carol")
	// The room was adopted from its server (a Central restarted before):
	// an adopted room lets in members that show a ticket.
	proof, err := ticket.Sign(k.c.cfg.TicketKey, ticket.Claims{Room: lostRoom, User: "alice", Epoch: 5, Server: "s1", Expires: k.clock.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	report := centralapi.RoomReport{ID: lostRoom, Epoch: 5, Members: []string{"alice", "bob", "carol"}, Ticket: proof}
	k.beat("s1", tok, report)
	cl.send(&proto.Holding{}) // carol is sent the room's placement, with her ticket
	as := only[*proto.Assign](cl)
	if as.Room != lostRoom || len(as.Ticket) == 0 {
		t.Fatalf("carol was sent %+v, want the room with a ticket", as)
	}
	k.clock.Advance(time.Second)
	left := k.clock.Now().UnixNano()
	cl.send(&proto.LeaveRoom{Room: lostRoom})
	if got, _ := k.members(lostRoom); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("members %v after carol left", got)
	}

	k.clock.Advance(time.Second)
	k2 := k.restart()
	hb := k2.beat("s1", tok, report) // s1 still lists carol
	if got, _ := k2.members(lostRoom); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("members %v after the restart and a heartbeat that lists carol", got)
	}
	if !revoked(hb, lostRoom, "carol", left) {
		t.Fatalf("the new Central's heartbeat answer does not revoke carol's tickets: %+v", hb.Revocations)
	}
	cl2 := k2.connectAs(cl.s)
	cl2.send(&proto.Holding{Rooms: []proto.Held{{Room: lostRoom, Epoch: as.Epoch, Server: "s1", Ticket: as.Ticket}}})
	if rc := only[*proto.RoomClosed](cl2); rc.Room != lostRoom {
		t.Fatalf("carol's report with her old ticket got %+v", rc)
	}
	if got, _ := k2.members(lostRoom); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("members %v after carol's report with her old ticket", got)
	}
}

// A room whose members all left stays removed once Central restarts on
// the same store (fuzz sweep F2): its server, which has not read the
// removal yet, reports it with a ticket from before, and a member reports
// it with its own; neither brings it back.
func TestRemovedRoomSurvivesRestart(t *testing.T) {
	k := newCoreRig(t, withTicketKey)
	tok := k.server("s1")
	a, b, asA, _ := matchPair(k, map[string]int{"s1": 10})
	k.clock.Advance(time.Second)
	a.send(&proto.LeaveRoom{Room: asA.Room})
	removed := k.clock.Now().UnixNano()
	b.send(&proto.LeaveRoom{Room: asA.Room})
	if _, ok := k.members(asA.Room); ok {
		t.Fatal("the room outlived its members")
	}

	k.clock.Advance(time.Second)
	k2 := k.restart()
	hb := k2.beat("s1", tok, centralapi.RoomReport{ID: asA.Room, Epoch: asA.Epoch, Members: []string{"alice", "bob"}, Ticket: asA.Ticket})
	if got, ok := k2.members(asA.Room); ok {
		t.Fatalf("the removed room came back from its server's heartbeat, members %v", got)
	}
	if !revoked(hb, asA.Room, "", removed) {
		t.Fatalf("the new Central's heartbeat answer does not revoke the room: %+v", hb.Revocations)
	}
	a2 := k2.connectAs(a.s)
	a2.send(&proto.Holding{Rooms: []proto.Held{{Room: asA.Room, Epoch: asA.Epoch, Server: "s1", Ticket: asA.Ticket}}})
	if got, ok := k2.members(asA.Room); ok {
		t.Fatalf("the removed room came back from alice's report, members %v", got)
	}
}

// A stored leave lasts as long as the tickets it voids: the log forgets
// it then and deletes its record, unless a later leave of the same member
// replaced the record; a Central that loads the store later deletes
// records already past.
func TestRevocationRecordsExpire(t *testing.T) {
	k := newCoreRig(t, withTicketKey)
	tok := k.server("s1")
	stored := func(k *coreRig) []store.Revocation {
		t.Helper()
		recs, err := k.c.st.Revocations()
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	leave := func(at time.Time) {
		k.c.mu.Lock()
		k.c.revokeLocked(centralapi.Revocation{Room: lostRoom, User: "carol", Before: at.UnixNano()}, at)
		k.c.mu.Unlock()
	}
	ttl := k.c.cfg.TicketTTL
	first := k.clock.Now()
	leave(first)
	k.clock.Advance(ttl / 2)
	second := k.clock.Now()
	leave(second)
	k.c.mu.Lock()
	k.c.revokeLocked(centralapi.Revocation{Room: lostRoom, Epoch: 9}, second) // a move: not stored
	k.c.mu.Unlock()
	if recs := stored(k); len(recs) != 1 || recs[0].Before != second.UnixNano() {
		t.Fatalf("stored %+v, want carol's second leave alone", recs)
	}

	k.clock.Advance(ttl/2 + 2*time.Second) // the first leave's tickets are gone
	k.beat("s1", tok)
	if recs := stored(k); len(recs) != 1 || recs[0].Before != second.UnixNano() {
		t.Fatalf("stored %+v once the first leave expired, want the second", recs)
	}
	k.clock.Advance(ttl / 2) // and the second's
	k.beat("s1", tok)
	if recs := stored(k); len(recs) != 0 {
		t.Fatalf("stored %+v once every leave expired", recs)
	}

	// A record past its time when a Central loads the store.
	leave(k.clock.Now())
	k.clock.Advance(ttl + 2*time.Second)
	k2 := k.restart()
	if recs := stored(k2); len(recs) != 0 {
		t.Fatalf("stored %+v after a load past their time", recs)
	}
	if hb := k2.beat("s1", tok); len(hb.Revocations) != 0 {
		t.Fatalf("the new log holds %+v", hb.Revocations)
	}
}

// TestUnknownServerRoomListedWaiting: a room loaded from the store whose
// server's record is gone (deregistered, then the leader changed) was
// listed on server "" and not waiting (fuzz sweep 2, F4); it is listed on
// the server it last had, waiting.
func TestUnknownServerRoomListedWaiting(t *testing.T) {
	k := newCoreRig(t)
	tok := k.server("s1")
	_, _, asA, _ := matchPair(k, map[string]int{"s1": 10})
	k.call("DELETE", "/v1/servers/s1", tok, nil, nil, http.StatusNoContent)
	k2 := k.restart()
	var list centralapi.RoomList
	k2.call("GET", "/v1/rooms", "", nil, &list, http.StatusOK)
	if len(list.Rooms) != 1 || list.Rooms[0].ID != asA.Room {
		t.Fatalf("rooms after the restart: %+v", list.Rooms)
	}
	if r := list.Rooms[0]; r.Server != "s1" || !r.Waiting {
		t.Fatalf("room of the forgotten server listed as %+v, want server s1, waiting", r)
	}
}

// TestRevocationRecordsExpireWithoutTickets: without a ticket key no
// heartbeat answer prunes the log, and an expired leave's store record
// stayed until the next leave; the scan prunes it.
func TestRevocationRecordsExpireWithoutTickets(t *testing.T) {
	k := newCoreRig(t)
	now := k.clock.Now()
	k.c.mu.Lock()
	k.c.revokeLocked(centralapi.Revocation{Room: lostRoom, User: "carol", Before: now.UnixNano()}, now)
	k.c.mu.Unlock()
	if recs, _ := k.c.st.Revocations(); len(recs) != 1 {
		t.Fatalf("stored %+v, want carol's leave", recs)
	}
	k.clock.Advance(k.c.cfg.TicketTTL + 2*time.Second)
	k.c.mu.Lock()
	k.c.scanLocked()
	k.c.mu.Unlock()
	if recs, _ := k.c.st.Revocations(); len(recs) != 0 {
		t.Fatalf("stored %+v after the tickets expired, want none", recs)
	}
}

// TestAdoptionChurnBounded: without tickets, a member that adopted 256
// made-up rooms from each Holding report and left them in the next made
// 512 revocations a second: in minutes the log was full and evicted real
// rooms' removals, which a heartbeat then undid (review, 2026-12-03).
// A member now makes Central adopt at most maxAdopted rooms a TicketTTL.
func TestAdoptionChurnBounded(t *testing.T) {
	k := newCoreRig(t)
	k.server("s1")
	m := k.connect("mallory")
	frame := func(n int, left []string) []string {
		h := &proto.Holding{Left: left}
		var ids []string
		for j := range maxAdopted {
			id := fmt.Sprintf("r-m%d-%d", n, j)
			ids = append(ids, id)
			h.Rooms = append(h.Rooms, proto.Held{Room: id, Epoch: 1, Server: "s1"})
		}
		m.send(h)
		m.frames()
		k.clock.Advance(time.Second)
		return ids
	}
	held := func() int {
		k.c.mu.Lock()
		defer k.c.mu.Unlock()
		return len(k.c.users["mallory"].rooms)
	}
	prev := frame(0, nil)
	if n := held(); n != maxAdopted {
		t.Fatalf("first report: %d rooms adopted, want %d", n, maxAdopted)
	}
	for n := 1; n <= 10; n++ {
		prev = frame(n, prev)
	}
	k.c.mu.Lock()
	logged := len(k.c.revokes.entries)
	k.c.mu.Unlock()
	t.Logf("after 11 reports: %d rooms held, %d revocations", held(), logged)
	// Each room adopted and left is two entries (the leave, the removal).
	if logged > 3*maxAdopted {
		t.Fatalf("%d revocations from one member's reports in 11 s, want about %d", logged, 2*maxAdopted)
	}
	// A TicketTTL later it may adopt as many again.
	k.clock.Advance(k.c.cfg.TicketTTL)
	frame(99, prev)
	if n := held(); n != maxAdopted {
		t.Fatalf("a TicketTTL later: %d rooms adopted, want %d", n, maxAdopted)
	}
}

// TestFullLogDropsMovesFirst: a full revocation log dropped its oldest
// entry whatever it was, and a leave gone from it is forgotten by Central
// itself (a heartbeat that still lists the member brings it back). Old
// moves go first now, many at a time; leaves and removals stay.
func TestFullLogDropsMovesFirst(t *testing.T) {
	k := newCoreRig(t)
	now := k.clock.Now()
	k.c.mu.Lock()
	defer k.c.mu.Unlock()
	for i := range maxRevocations / 2 {
		room := fmt.Sprintf("r-%d", i)
		k.c.revokeLocked(centralapi.Revocation{Room: room, User: "carol", Before: now.UnixNano()}, now)
		k.c.revokeLocked(centralapi.Revocation{Room: room, Epoch: 2}, now)
	}
	k.c.revokeLocked(centralapi.Revocation{Room: "r-last", User: "carol", Before: now.UnixNano()}, now)
	l := &k.c.revokes
	if len(l.entries) > maxRevocations || len(l.entries) != len(l.seqs) {
		t.Fatalf("%d entries (%d seqs) after one past the cap of %d", len(l.entries), len(l.seqs), maxRevocations)
	}
	if !slices.IsSorted(l.seqs) {
		t.Fatal("sequence numbers out of order")
	}
	for _, room := range []string{"r-0", "r-1", "r-last"} {
		if !k.c.leftLocked(room, "carol", 0) {
			t.Errorf("carol's leave of %s forgotten when the log filled", room)
		}
	}
	t.Logf("full log: %d entries left, %d dropped", len(l.entries), l.lost)
}
