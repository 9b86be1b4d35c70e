package central

import (
	"slices"
	"testing"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wiretest"
)

// fakeServer plays a chat server's side of the REST API.
type fakeServer struct {
	id, addr string
	rooms    []centralapi.RoomReport
}

// beat heartbeats, registering again when Central does not know the
// server, as a chat server must.
func (f *fakeServer) beat(t *testing.T, api *centralapi.Client) {
	t.Helper()
	_, err := api.Heartbeat(ctx(t), f.id, "", centralapi.HeartbeatRequest{Conns: 2 * len(f.rooms), Rooms: f.rooms})
	if centralapi.IsUnknownServer(err) {
		if _, err = api.Register(ctx(t), centralapi.RegisterServerRequest{ID: f.id, Addr: f.addr}); err == nil {
			_, err = api.Heartbeat(ctx(t), f.id, "", centralapi.HeartbeatRequest{Conns: 2 * len(f.rooms), Rooms: f.rooms})
		}
	}
	if err != nil {
		t.Fatalf("%s heartbeat: %v", f.id, err)
	}
}

// restartWorld is a Central with two fake chat servers that heartbeat on
// request (serv1 closer), and alice and bob in a room on serv1.
type restartWorld struct {
	h      *harness
	s1, s2 *fakeServer
	a, b   *ctl
	as, bs centralapi.Session
	room   *proto.Assign
	vec    map[string]centralapi.Sample // both members' vector
}

func twoServerChat(t *testing.T, cfg Config) restartWorld {
	w := restartWorld{h: startCentral(t, cfg)}
	w.s1 = &fakeServer{id: "serv1", addr: wiretest.EchoServer(t, 0, nil).Addr()}
	w.s2 = &fakeServer{id: "serv2", addr: wiretest.EchoServer(t, 0, nil).Addr()}
	w.s1.beat(t, w.h.api)
	w.s2.beat(t, w.h.api)
	w.a, w.as = w.h.connect(t, "alice")
	w.b, w.bs = w.h.connect(t, "bob")
	w.vec = map[string]centralapi.Sample{"serv1": ms(10), "serv2": ms(30)}
	w.h.latency(t, w.as, w.vec)
	w.h.latency(t, w.bs, w.vec)
	w.room = chat(t, w.a, w.b)
	return w
}

func TestRestartRebuildsRooms(t *testing.T) {
	cfg := testConfig(t)
	w := twoServerChat(t, cfg)
	h1, s1, s2, a, b, as, bs, room := w.h, w.s1, w.s2, w.a, w.b, w.as, w.bs, w.room
	s1.rooms = []centralapi.RoomReport{{ID: room.Room, Epoch: room.Epoch, Members: []string{"alice", "bob"}}}
	s1.beat(t, h1.api)

	restAddr, ctrlAddr := h1.c.RESTAddr(), h1.c.ControlAddr()
	if err := h1.c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*ctl{a, b} {
		if e := expect[*proto.Error](k, nil); e.Code != proto.CodeShutdown {
			t.Fatalf("%s got %+v", k.name, e)
		}
	}

	cfg2 := testConfig(t)
	cfg2.RESTListen, cfg2.ControlListen = restAddr, ctrlAddr
	var h2 *harness
	testkit.WaitFor(t, 10*time.Second, "Central to start again on the same ports", func() bool {
		c, err := New(cfg2)
		if err != nil {
			t.Logf("restart: %v", err)
			return false
		}
		c.Close()
		return true
	})
	h2 = startCentral(t, cfg2)
	if h2.c.RESTAddr() != restAddr || h2.c.ControlAddr() != ctrlAddr {
		t.Fatalf("ports changed: %s %s", h2.c.RESTAddr(), h2.c.ControlAddr())
	}
	s1.beat(t, h2.api)
	s2.beat(t, h2.api)
	r, ok := h2.roomOf(t, room.Room)
	if !ok || r.Epoch != room.Epoch || r.Server != "serv1" || !r.Adopted || !slices.Equal(r.Members, []string{"alice", "bob"}) {
		t.Fatalf("room after restart: %+v (found %v)", r, ok)
	}
	// Clients come back with their tokens and get their identities.
	for _, s := range []centralapi.Session{as, bs} {
		got, err := h2.api.RegisterClient(ctx(t), s.Name, s.Token)
		if err != nil || got != s {
			t.Fatalf("re-register %s: %+v %v", s.Name, got, err)
		}
		h2.latency(t, s, w.vec)
	}
	a2, b2 := h2.connectAs(t, as), h2.connectAs(t, bs)
	info, err := h2.api.LookupClient(ctx(t), "alice")
	if err != nil || !slices.Equal(info.Rooms, []string{room.Room}) {
		t.Fatalf("alice after restart: %+v %v", info, err)
	}
	// The rebuilt room is managed like any other: draining serv1 moves it,
	// to an epoch no earlier Central can have handed out.
	if err := h2.api.Drain(ctx(t), "serv1", ""); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*ctl{a2, b2} {
		mv := expect[*proto.Assign](k, nil)
		if mv.Room != room.Room || mv.Epoch <= room.Epoch || mv.Server.ID != "serv2" {
			t.Fatalf("%s: move after restart %+v", k.name, mv)
		}
	}
}

func TestRestartFromStore(t *testing.T) {
	st := store.NewMemory()
	cfg := testConfig(t)
	cfg.Store = st
	h1 := startCentral(t, cfg)
	h1.addServer(t, "serv1")
	a, as := h1.connect(t, "alice")
	b, bs := h1.connect(t, "bob")
	for _, s := range []centralapi.Session{as, bs} {
		h1.latency(t, s, map[string]centralapi.Sample{"serv1": ms(10)})
	}
	room := chat(t, a, b)
	h1.c.Close()

	cfg2 := testConfig(t)
	cfg2.Store = st
	h2 := startCentral(t, cfg2)
	r, ok := h2.roomOf(t, room.Room)
	if !ok || r.Epoch != 1 || r.Server != "serv1" || r.Adopted {
		t.Fatalf("room from store: %+v %v", r, ok)
	}
	got, err := h2.api.RegisterClient(ctx(t), "alice", as.Token)
	if err != nil || got != as {
		t.Fatalf("identity from store: %+v %v", got, err)
	}
	h2.connectAs(t, bs)
	if _, err := h2.api.RegisterClient(ctx(t), "bob", ""); !centralapi.IsNameTaken(err) {
		t.Fatalf("bob's name after restart: %v", err)
	}
}
