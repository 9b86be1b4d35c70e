package central

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// world is a Central with two servers and users that measured both.
type world struct {
	*harness
	clk *fakeClock
}

func newWorld(t *testing.T, mutate func(*Config)) *world {
	cfg := testConfig(t)
	clk := newFakeClock()
	cfg.Clock = clk.Now
	if mutate != nil {
		mutate(&cfg)
	}
	h := startCentral(t, cfg)
	h.addServer(t, "serv1")
	h.addServer(t, "serv2")
	return &world{harness: h, clk: clk}
}

// user registers and connects name with a vector favouring serv1.
func (w *world) user(t *testing.T, name string) *ctl {
	k, s := w.connect(t, name)
	w.latency(t, s, map[string]centralapi.Sample{"serv1": ms(10), "serv2": ms(30)})
	return k
}

func TestRequestInvalid(t *testing.T) {
	w := newWorld(t, nil)
	a := w.user(t, "alice")
	w.user(t, "bob")
	w.register(t, "dave") // registered, never connected
	cases := []struct {
		name   string
		to     []string
		code   proto.StatusCode
		detail string
	}{
		{"empty", nil, proto.ReqInvalid, "nobody"},
		{"to oneself", []string{"alice"}, proto.ReqInvalid, "oneself"},
		{"invited twice", []string{"bob", "bob"}, proto.ReqInvalid, "twice"},
		{"invalid name", []string{"b b"}, proto.ReqInvalid, "invalid"},
		{"too many", strings.Fields(strings.Repeat("x ", 16)), proto.ReqInvalid, "at most"},
		{"unknown user", []string{"nobody"}, proto.UserNotFound, "registered"},
		{"offline user", []string{"dave"}, proto.UserNotFound, "not connected"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a.send(&proto.Request{To: tc.to})
			ack := a.expectStatus(proto.AckConn)
			st := a.expectStatus(tc.code)
			if st.Req != ack.Req || ack.Req == "" || !strings.Contains(st.Detail, tc.detail) {
				t.Fatalf("status %+v after ack %+v, want detail with %q", st, ack, tc.detail)
			}
			t.Logf("%v: %s", st.Code, st.Detail)
		})
	}
}

func TestRequestDuplicate(t *testing.T) {
	w := newWorld(t, nil)
	a, b := w.user(t, "alice"), w.user(t, "bob")
	a.send(&proto.Request{To: []string{"bob"}})
	first := a.expectStatus(proto.AckConn)
	a.expectStatus(proto.ReqSent)
	expect[*proto.Incoming](b, nil)
	for _, tc := range []struct {
		name string
		from *ctl
		to   string
	}{{"same direction", a, "bob"}, {"reverse direction", b, "alice"}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.from.send(&proto.Request{To: []string{tc.to}})
			tc.from.expectStatus(proto.AckConn)
			st := tc.from.expectStatus(proto.ReqInvalid)
			if !strings.Contains(st.Detail, first.Req) {
				t.Fatalf("detail %q does not name the pending request %s", st.Detail, first.Req)
			}
		})
	}
}

func TestRequestOutcomes(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, w *world, a, b *ctl, req string)
	}{
		{"accepted", func(t *testing.T, w *world, a, b *ctl, req string) {
			b.send(&proto.Answer{Req: req, Accept: true})
			st := a.expectStatus(proto.ReqAccepted)
			as := expect[*proto.Assign](a, skipAwaiting)
			if as.Room != st.Room || as.Epoch != 1 || as.Server.ID != "serv1" || as.Reason != "new room" || as.RTT != 10*time.Millisecond {
				t.Fatalf("assign %+v after %+v", as, st)
			}
			b.expectStatus(proto.ReqAccepted)
			if bs := expect[*proto.Assign](b, nil); bs.Room != as.Room || len(bs.Members) != 2 {
				t.Fatalf("bob's assign %+v", bs)
			}
			b.send(&proto.Answer{Req: req, Accept: true})
			if e := expect[*proto.Error](b, func(m wire.Message) bool { _, ok := m.(*proto.Assign); return ok }); e.Code != proto.CodeNotFound || e.Ref != req {
				t.Fatalf("answer to a finished request: %+v", e)
			}
		}},
		{"declined", func(t *testing.T, w *world, a, b *ctl, req string) {
			b.send(&proto.Answer{Req: req, Accept: false})
			if st := a.expectStatus(proto.ReqDeclined); !strings.Contains(st.Detail, "bob") {
				t.Fatalf("decline detail %q", st.Detail)
			}
			b.expectStatus(proto.ReqDeclined)
		}},
		{"timeout", func(t *testing.T, w *world, a, b *ctl, req string) {
			w.clk.Advance(w.c.cfg.RequestTimeout)
			if st := a.expectStatus(proto.ReqTimeout); !strings.Contains(st.Detail, "bob") {
				t.Fatalf("timeout detail %q", st.Detail)
			}
			b.expectStatus(proto.ReqTimeout)
		}},
		{"invitee goes offline", func(t *testing.T, w *world, a, b *ctl, req string) {
			w.offline(t, b)
			w.clk.Advance(w.c.cfg.ReconnectGrace)
			if st := a.expectStatus(proto.UserNotFound); !strings.Contains(st.Detail, "bob went offline") {
				t.Fatalf("detail %q", st.Detail)
			}
		}},
		{"requester goes offline", func(t *testing.T, w *world, a, b *ctl, req string) {
			w.offline(t, a)
			w.clk.Advance(w.c.cfg.ReconnectGrace)
			if st := b.expectStatus(proto.UserNotFound); !strings.Contains(st.Detail, "requester alice went offline") {
				t.Fatalf("detail %q", st.Detail)
			}
		}},
		{"invitee reconnects within the grace", func(t *testing.T, w *world, a, b *ctl, req string) {
			w.offline(t, b)
			w.clk.Advance(w.c.cfg.ReconnectGrace / 2)
			b2 := w.connectAs(t, centralapi.Session{Name: "bob", Token: w.token(t, "bob")})
			if in := expect[*proto.Incoming](b2, nil); in.Req != req {
				t.Fatalf("bob asked %+v again, want request %s", in, req)
			}
			w.clk.Advance(w.c.cfg.ReconnectGrace)
			b2.send(&proto.Answer{Req: req, Accept: true})
			a.expectStatus(proto.ReqAccepted)
		}},
		{"no common server", func(t *testing.T, w *world, a, b *ctl, req string) {
			if err := w.api.PutLatency(ctx(t), "bob", w.token(t, "bob"), map[string]centralapi.Sample{"serv9": ms(1)}); err != nil {
				t.Fatal(err)
			}
			b.send(&proto.Answer{Req: req, Accept: true})
			// bob has not measured the open servers: Central waits for a
			// report that covers one until RequestTimeout, then gives up.
			b.send(&proto.Ping{ID: 1})
			expect[*proto.Pong](b, nil)
			w.clk.Advance(w.c.cfg.RequestTimeout)
			// Worded for the people asking, not as Central's error chain
			// (the clock moved past the servers' heartbeats too).
			if st := a.expectStatus(proto.ServerErr); st.Detail != "no chat server can host this room: all 2 chat servers are down" {
				t.Fatalf("detail %q", st.Detail)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nil)
			a, b := w.user(t, "alice"), w.user(t, "bob")
			a.send(&proto.Request{To: []string{"bob"}})
			ack := a.expectStatus(proto.AckConn)
			a.expectStatus(proto.ReqSent)
			in := expect[*proto.Incoming](b, nil)
			if in.Req != ack.Req || in.From != "alice" || strings.Join(in.Members, ",") != "alice,bob" {
				t.Fatalf("incoming %+v", in)
			}
			tc.run(t, w, a, b, ack.Req)
		})
	}
}

// token returns the session token of a registered user.
func (w *world) token(t *testing.T, name string) string {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.c.users[name].token
}

func TestRequestAwaiting(t *testing.T) {
	h := startCentral(t, testConfig(t)) // real clock: AWAITING_REQ every 100 ms
	a, _ := h.connect(t, "alice")
	b, _ := h.connect(t, "bob")
	a.send(&proto.Request{To: []string{"bob"}})
	ack := a.expectStatus(proto.AckConn)
	a.expectStatus(proto.ReqSent)
	expect[*proto.Incoming](b, nil)
	start := time.Now()
	for range 3 {
		if st := a.expectStatus(proto.AwaitingReq); st.Req != ack.Req {
			t.Fatalf("awaiting for %s, want %s", st.Req, ack.Req)
		}
	}
	el := time.Since(start)
	t.Logf("3 AWAITING_REQ in %v (every %v)", el, h.c.cfg.AwaitingEvery)
	if el < 150*time.Millisecond {
		t.Fatalf("AWAITING_REQ too often: 3 in %v", el)
	}
}

func TestGroupRequest(t *testing.T) {
	w := newWorld(t, nil)
	a, b, c := w.user(t, "alice"), w.user(t, "bob"), w.user(t, "carol")
	a.send(&proto.Request{To: []string{"bob", "carol"}})
	ack := a.expectStatus(proto.AckConn)
	a.expectStatus(proto.ReqSent)
	expect[*proto.Incoming](b, nil)
	expect[*proto.Incoming](c, nil)
	b.send(&proto.Answer{Req: ack.Req, Accept: true})
	b.send(&proto.Answer{Req: ack.Req, Accept: true})
	if e := expect[*proto.Error](b, nil); e.Code != proto.CodeConflict {
		t.Fatalf("second accept: %+v", e)
	}
	c.send(&proto.Answer{Req: ack.Req, Accept: true})
	st := a.expectStatus(proto.ReqAccepted)
	for _, k := range []*ctl{a, b, c} {
		as := expect[*proto.Assign](k, skipStatus)
		if as.Room != st.Room || len(as.Members) != 3 {
			t.Fatalf("%s: assign %+v", k.name, as)
		}
	}
}

func skipStatus(m wire.Message) bool { _, ok := m.(*proto.Status); return ok }

// TestRequestRateLimit: one user cannot flood others with chat requests.
func TestRequestRateLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.RequestRate, cfg.RequestBurst = 0.001, 2
	h := startCentral(t, cfg)
	alice, _ := h.connect(t, "alice")
	h.connect(t, "bob")
	for range 2 {
		alice.send(&proto.Request{To: []string{"nobody"}})
		alice.expectStatus(proto.AckConn)
		alice.expectStatus(proto.UserNotFound)
	}
	// Over the limit a request gets exactly one reply, not ACK_CONN first.
	alice.send(&proto.Request{To: []string{"nobody"}})
	st := alice.expectStatus(proto.ReqInvalid)
	if !strings.Contains(st.Detail, "too many") {
		t.Fatalf("third request: %s %q, want a rate-limit answer", st.Code, st.Detail)
	}
	alice.send(&proto.Ping{ID: 7})
	if p := expect[*proto.Pong](alice, nil); p.ID != 7 {
		t.Fatalf("after the refusal: %+v", p)
	}
}

// TestRequestKeyRepeats: a Request sent again with its key gets the same
// request's stream (the invitee is not asked twice), and after the end its
// outcome with the same room, never a second request or room. Keys are
// per requester; an invalid key is refused.
func TestRequestKeyRepeats(t *testing.T) {
	w := newWorld(t, nil)
	a, b, c := w.user(t, "alice"), w.user(t, "bob"), w.user(t, "carol")
	want := proto.RequestID("alice", "k1")
	req := &proto.Request{To: []string{"bob"}, Key: "k1"}
	for range 2 {
		a.send(req)
		if ack := a.expectStatus(proto.AckConn); ack.Req != want {
			t.Fatalf("ack %+v, want request id %s", ack, want)
		}
		a.expectStatus(proto.ReqSent)
	}
	// The key with other invitees is no repeat: it is refused, not
	// answered with the request to bob (abuse probe, 2026-12-02).
	other := &proto.Request{To: []string{"carol"}, Key: "k1"}
	reuse := func() {
		t.Helper()
		a.send(other)
		if st := a.expectStatus(proto.ReqInvalid); !strings.Contains(st.Detail, "bob") {
			t.Fatalf("key reused for carol: %+v", st)
		}
	}
	reuse()
	in := expect[*proto.Incoming](b, nil)
	if in.Req != want {
		t.Fatalf("incoming %+v", in)
	}
	b.send(&proto.Answer{Req: in.Req, Accept: true})
	acc := a.expectStatus(proto.ReqAccepted)
	expect[*proto.Assign](a, skipAwaiting)
	b.expectStatus(proto.ReqAccepted) // and no second Incoming before it
	expect[*proto.Assign](b, nil)

	a.send(req)
	a.expectStatus(proto.AckConn)
	if again := a.expectStatus(proto.ReqAccepted); again.Req != want || again.Room != acc.Room {
		t.Fatalf("repeat after the end: %+v, want %s with room %s", again, want, acc.Room)
	}
	if rooms, err := w.api.Rooms(ctx(t), ""); err != nil || len(rooms) != 1 {
		t.Fatalf("rooms %+v %v, want the one", rooms, err)
	}
	reuse()
	c.sync(nil) // carol was never asked

	b.send(&proto.Request{To: []string{"alice"}, Key: "k1"})
	if ack := b.expectStatus(proto.AckConn); ack.Req == want || ack.Req != proto.RequestID("bob", "k1") {
		t.Fatalf("bob's request with alice's key: %+v", ack)
	}
	b.expectStatus(proto.ReqSent)
	expect[*proto.Incoming](a, nil)

	a.send(&proto.Request{To: []string{"bob"}, Key: "not a key"})
	a.expectStatus(proto.ReqInvalid) // alone, as for a rate-limited request
}

// TestRequestToDroppedUserWaits: a request to a user whose control
// connection has just dropped (a relaying replica died) is sent, not
// refused, and reaches the user when it connects again; past
// ReconnectGrace a request to it is refused as before.
func TestRequestToDroppedUserWaits(t *testing.T) {
	w := newWorld(t, nil)
	a, b := w.user(t, "alice"), w.user(t, "bob")
	w.user(t, "carol")
	w.offline(t, b)
	a.send(&proto.Request{To: []string{"bob"}})
	ack := a.expectStatus(proto.AckConn)
	if st := a.expectStatus(proto.ReqSent); !strings.Contains(st.Detail, "bob") {
		t.Fatalf("sent with detail %q, want bob named as told later", st.Detail)
	}
	b2 := w.connectAs(t, centralapi.Session{Name: "bob", Token: w.token(t, "bob")})
	if in := expect[*proto.Incoming](b2, nil); in.Req != ack.Req {
		t.Fatalf("bob asked %+v, want %s", in, ack.Req)
	}
	b2.send(&proto.Answer{Req: ack.Req, Accept: false})
	a.expectStatus(proto.ReqDeclined)

	w.offline(t, b2)
	w.clk.Advance(w.c.cfg.ReconnectGrace)
	a.send(&proto.Request{To: []string{"bob"}})
	a.expectStatus(proto.AckConn)
	if st := a.expectStatus(proto.UserNotFound); !strings.Contains(st.Detail, "not connected") {
		t.Fatalf("detail %q", st.Detail)
	}
}

// At most maxPendingPerUser requests wait on one user; more are declined
// for it: the rate limit is per requester, and 1,000 accounts inviting one
// user cut its control connection off as a slow consumer, again at every
// reconnect (abuse probe, 2026-12-01).
func TestPendingRequestsPerUserBounded(t *testing.T) {
	w := newWorld(t, nil)
	victim := w.user(t, "victim")
	for i := range maxPendingPerUser + 5 {
		a := w.user(t, fmt.Sprintf("spam%02d", i))
		w.from(fmt.Sprintf("spam%02d", i), byte(i)) // many addresses: DefaultConfig().MaxPendingPerSource is its own test
		a.send(&proto.Request{To: []string{"victim"}})
		a.expectStatus(proto.AckConn)
		if i < maxPendingPerUser {
			a.expectStatus(proto.ReqSent)
			continue
		}
		if st := a.expectStatus(proto.ReqDeclined); !strings.Contains(st.Detail, "pending") {
			t.Fatalf("request %d declined with %q", i+1, st.Detail)
		}
	}
	for range maxPendingPerUser {
		expect[*proto.Incoming](victim, nil)
	}
	victim.send(&proto.Ping{ID: 9})
	if p := expect[*proto.Pong](victim, nil); p.ID != 9 {
		t.Fatalf("victim got %+v after %d Incoming, want no more", p, maxPendingPerUser)
	}
}

// TestRoomsPerUserBounded: a user already in maxRoomsPerUser rooms is
// invited into no more, and asks for no more: every room it is in goes in
// one Holding frame, which 330 rooms with tickets outgrew (the client lost
// its control connection for good; abuse probe, 2026-12-01).
func TestRoomsPerUserBounded(t *testing.T) {
	w := newWorld(t, nil)
	victim := w.user(t, "victim")
	a := w.user(t, "alice")
	w.c.mu.Lock()
	v := w.c.users["victim"]
	for range maxRoomsPerUser {
		v.rooms[&room{joined: true}] = struct{}{} // stand-ins: only their number counts here
	}
	w.c.mu.Unlock()
	a.send(&proto.Request{To: []string{"victim"}})
	a.expectStatus(proto.AckConn)
	if st := a.expectStatus(proto.ReqDeclined); !strings.Contains(st.Detail, "rooms") {
		t.Fatalf("invitation declined with %q", st.Detail)
	}
	victim.send(&proto.Request{To: []string{"alice"}})
	victim.expectStatus(proto.AckConn)
	if st := victim.expectStatus(proto.ReqDeclined); !strings.Contains(st.Detail, "leave one first") {
		t.Fatalf("own request declined with %q", st.Detail)
	}
	// One room fewer, and the invitation goes out.
	w.c.mu.Lock()
	for r := range v.rooms {
		delete(v.rooms, r)
		break
	}
	w.c.mu.Unlock()
	a.send(&proto.Request{To: []string{"victim"}})
	a.expectStatus(proto.AckConn)
	a.expectStatus(proto.ReqSent)
	if in := expect[*proto.Incoming](victim, nil); in.From != "alice" {
		t.Fatalf("incoming %+v", in)
	}
}

// from makes name a user registered from 10.0.0.i.
func (w *world) from(name string, i byte) {
	w.c.mu.Lock()
	w.c.users[name].src = netip.AddrFrom4([4]byte{10, 0, 0, i})
	w.c.mu.Unlock()
}

// TestPendingRequestsPerSourceBounded: users of one address keep at most
// DefaultConfig().MaxPendingPerSource requests pending for one user, so that a few dozen
// accounts renewing theirs cannot keep everyone else's declined.
func TestPendingRequestsPerSourceBounded(t *testing.T) {
	w := newWorld(t, nil)
	victim := w.user(t, "victim")
	for i := range DefaultConfig().MaxPendingPerSource + 2 {
		a := w.user(t, fmt.Sprintf("spam%d", i)) // all from 127.0.0.1
		a.send(&proto.Request{To: []string{"victim"}})
		a.expectStatus(proto.AckConn)
		if i < DefaultConfig().MaxPendingPerSource {
			a.expectStatus(proto.ReqSent)
			continue
		}
		if st := a.expectStatus(proto.ReqDeclined); !strings.Contains(st.Detail, "from users of your address") {
			t.Fatalf("request %d declined with %q", i+1, st.Detail)
		}
	}
	friend := w.user(t, "friend")
	w.from("friend", 7)
	friend.send(&proto.Request{To: []string{"victim"}})
	friend.expectStatus(proto.AckConn)
	friend.expectStatus(proto.ReqSent)
	for range DefaultConfig().MaxPendingPerSource + 1 {
		expect[*proto.Incoming](victim, nil)
	}
}
