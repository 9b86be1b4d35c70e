package client_test

import (
	"context"
	"net"
	"testing"
	"time"

	proc "nearchat/bench/cluster"
	"nearchat/central"
	"nearchat/central/relay"
	"nearchat/central/store/etcdstore"
	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/client"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// freeAddr returns an address for the standby to bind once it leads,
// seconds later. The port lies below the kernel's ephemeral range
// (proc.FreeAddr): one a :0 listener had given up could be given
// meanwhile to any :0 listener on the machine (the chat server
// processes, another package's tests), and the standby then failed on
// "address already in use".
func freeAddr(t *testing.T) string {
	addr, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// replicaPair is a cluster whose Central leads on etcd, with a standby
// campaigning on the same prefix; the cluster's addresses list both.
type replicaPair struct {
	c         *cluster
	st1       *etcdstore.Store // the leader's
	standbyUp chan time.Time   // when the standby started serving
	restB     string           // the standby's REST address
}

func startReplicaPair(t *testing.T) *replicaPair {
	ec := etcdtest.Start(t, 1)
	lead := func(ctx context.Context) (*etcdstore.Store, error) {
		return etcdstore.OpenLeader(ctx, ec.Endpoints(), "/replicas/", "test", 3*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	st1, err := lead(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st1.Close(context.Background()) })
	c := newCluster(t, func(cfg *central.Config) { cfg.Store = st1 })
	restB, ctrlB := freeAddr(t), freeAddr(t)
	cfgB := c.centCfg
	cfgB.RESTListen, cfgB.ControlListen = restB, ctrlB

	// The standby: campaigns, then serves on its own ports.
	standbyUp := make(chan time.Time, 1)
	sctx, stopStandby := context.WithCancel(context.Background())
	standbyDone := make(chan struct{})
	go func() {
		defer close(standbyDone)
		st2, err := lead(sctx)
		if err != nil {
			return
		}
		defer st2.Close(context.Background())
		cfgB.Store = st2
		b, err := central.New(cfgB)
		if err != nil {
			t.Errorf("standby: %v", err)
			return
		}
		standbyUp <- time.Now()
		_ = b.Run(sctx)
		b.Close()
	}()
	t.Cleanup(func() { stopStandby(); <-standbyDone })

	c.centCfg.RESTListen += "," + restB
	c.centCfg.ControlListen += "," + ctrlB
	c.api = centralapi.NewClient(c.centCfg.RESTListen, nil)
	return &replicaPair{c: c, st1: st1, standbyUp: standbyUp, restB: restB}
}

// TestE2ECentralFailoverKeepsChatting runs two Central replicas on one etcd:
// the leader serves, the standby waits in the election. The chat server
// and both users are given both replicas' addresses. While alice streams
// to bob, the leader stops; the standby leads, loads the records, and the
// chat server and users move to it: bob gets every message once and in
// order, the new leader knows the room, and a new chat request is answered
// there.
func TestE2ECentralFailoverKeepsChatting(t *testing.T) {
	rp := startReplicaPair(t)
	c, st1 := rp.c, rp.st1
	c.startServer("serv3")
	alice, bob := c.user("alice"), c.user("bob")
	sa, _, room := chat(t, alice, bob)
	const n = 200
	sendA := stream(t, sa, n, 10*time.Millisecond)
	recvB := collect(t, bob, n, 30*time.Second)
	testkit.WaitFor(t, 10*time.Second, "the room's record in etcd", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return st1.Flush(ctx) == nil
	})
	select {
	case <-rp.standbyUp:
		t.Fatal("the standby serves while the leader lives")
	default:
	}

	start := time.Now()
	c.central.Close()
	st1.Close(context.Background())
	select {
	case up := <-rp.standbyUp:
		t.Logf("standby leads %v after the leader stopped", up.Sub(start))
	case <-time.After(15 * time.Second):
		t.Fatal("the standby did not take over")
	}
	if err := <-sendA; err != nil {
		t.Fatal(err)
	}
	if err := <-recvB; err != nil {
		t.Fatal(err)
	}
	apiB := centralapi.NewClient(rp.restB, nil)
	testkit.WaitFor(t, 10*time.Second, "the new leader to know the room on serv3", func() bool {
		rooms, err := apiB.Rooms(context.Background(), secret)
		return err == nil && len(rooms) == 1 && rooms[0].ID == room.Room && rooms[0].Server == "serv3"
	})
	testkit.WaitFor(t, 10*time.Second, "both users online at the new leader", func() bool {
		for _, name := range []string{"alice", "bob"} {
			info, err := apiB.LookupClient(context.Background(), name)
			if err != nil || !info.Online {
				return false
			}
		}
		return true
	})
	t.Logf("users back %v after the leader stopped", time.Since(start))
	carol := c.user("carol")
	testkit.WaitFor(t, 20*time.Second, "carol's probes", carol.settled)
	if err := carol.c.Request("alice"); err != nil {
		t.Fatal(err)
	}
	next[client.Incoming](alice, 10*time.Second)
}

// finalStatus waits for the final Status of request req at u, skipping
// every other event, and fails unless its code is want.
func finalStatus(u *user, req string, want proto.StatusCode, timeout time.Duration) client.Status {
	u.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-u.events:
			if st, ok := ev.(client.Status); ok && st.Req == req && st.Code.Final() {
				if st.Code != want {
					u.t.Fatalf("%s: request %s ended %v (%s), want %v", u.name, req, st.Code, st.Detail, want)
				}
				return st
			}
		case <-deadline:
			u.t.Fatalf("%s: no final status for request %s within %v", u.name, req, timeout)
			return client.Status{}
		}
	}
}

// TestE2ECentralFailoverAnswersRequests: two chat requests are in flight
// when the leader Central stops. Bob has been asked by alice and not
// answered yet; carol asks alice while no Central serves at all. Neither
// request was ever stored. The standby leads; the clients send their
// requests again under the same keys, the new leader asks bob and alice
// again (the same request ids), and both requests end REQ_ACCEPTED with a
// room: every chat request is answered across the failover.
func TestE2ECentralFailoverAnswersRequests(t *testing.T) {
	rp := startReplicaPair(t)
	c := rp.c
	c.startServer("serv3")
	alice, bob, carol := c.user("alice"), c.user("bob"), c.user("carol")
	testkit.WaitFor(t, 20*time.Second, "probes that agree with the emulated RTTs", func() bool {
		return alice.settled() && bob.settled() && carol.settled()
	})
	testkit.WaitFor(t, 10*time.Second, "the users' records in etcd", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return rp.st1.Flush(ctx) == nil
	})
	if err := alice.c.Request("bob"); err != nil {
		t.Fatal(err)
	}
	asked := next[client.Incoming](bob, 5*time.Second)

	start := time.Now()
	c.central.Close() // the leader stops serving, still holding the leadership
	if err := carol.c.Request("alice"); err != nil {
		t.Fatal(err)
	}
	rp.st1.Close(context.Background()) // now the standby can lead
	select {
	case up := <-rp.standbyUp:
		t.Logf("standby leads %v after the leader stopped", up.Sub(start))
	case <-time.After(15 * time.Second):
		t.Fatal("the standby did not take over")
	}

	// Bob is asked again, under the same request id, and accepts.
	again := next[client.Incoming](bob, 15*time.Second)
	if again.Req != asked.Req || again.From != "alice" {
		t.Fatalf("bob asked %+v after the failover, want request %s from alice again", again, asked.Req)
	}
	if err := bob.c.Answer(again.Req, true); err != nil {
		t.Fatal(err)
	}
	// Alice sees her request's end and carol's request, made with no
	// Central serving, in either order.
	var st client.Status
	var in client.Incoming
	deadline := time.After(15 * time.Second)
	for st.Req == "" || in.Req == "" {
		select {
		case ev := <-alice.events:
			switch ev := ev.(type) {
			case client.Status:
				if ev.Req == asked.Req && ev.Code.Final() {
					if ev.Code != proto.ReqAccepted {
						t.Fatalf("alice's request ended %v (%s)", ev.Code, ev.Detail)
					}
					st = ev
					t.Logf("alice's request answered %v after the leader stopped (room %s)", time.Since(start), st.Room)
				}
			case client.Incoming:
				if ev.From != "carol" {
					t.Fatalf("alice asked %+v, want carol's request", ev)
				}
				in = ev
			}
		case <-deadline:
			t.Fatalf("alice: request ended %+v, carol's request %+v after 15s", st, in)
		}
	}
	if err := alice.c.Answer(in.Req, true); err != nil {
		t.Fatal(err)
	}
	st2 := finalStatus(carol, in.Req, proto.ReqAccepted, 15*time.Second)
	if st2.Room == st.Room {
		t.Fatalf("both requests got room %s", st.Room)
	}
	t.Logf("carol's request answered %v after the leader stopped (room %s)", time.Since(start), st2.Room)
	next[client.RoomReady](carol, 15*time.Second)
}

// TestReconnectBackoffStartsAgain: a long outage of Central grows the
// client's reconnect backoff to BackoffMax; once a connection has been up
// longer than that, losing it is a new incident (Central restarted, or a
// standby took over), and the client reconnects at once, not after a
// BackoffMax-sized wait (at least BackoffMax/2 before the fix).
func TestReconnectBackoffStartsAgain(t *testing.T) {
	const backoffMax = 4 * time.Second
	c := newCluster(t)
	c.startServer("serv3")
	alice := c.user("alice", func(o *client.Config) { o.BackoffMin, o.BackoffMax = 20*time.Millisecond, backoffMax })
	next[client.Connected](alice, 10*time.Second)

	c.central.Close()
	// 20 ms doubled 8 times passes 4 s: the backoff is at its maximum.
	for range 9 {
		next[client.Disconnected](alice, 3*backoffMax)
	}
	c.startCentral()
	next[client.Connected](alice, 3*backoffMax)
	upAt := time.Now()
	// Time passing is the scenario here: the connection must outlive the
	// backoff to count as settled.
	testkit.WaitFor(t, 3*backoffMax, "the connection to outlive the backoff", func() bool {
		return time.Since(upAt) > backoffMax+backoffMax/4
	})

	start := time.Now()
	c.restartCentral()
	next[client.Connected](alice, 3*backoffMax)
	took := time.Since(start)
	t.Logf("reconnected %v after a restart that followed a settled connection", took)
	if took >= backoffMax/2 {
		t.Fatalf("reconnect took %v: the backoff did not start again (a wait of at least %v)", took, backoffMax/2)
	}
}

// TestE2EFollowerDeathLosesNothing: two users reach Central through a
// follower's relays (package central/relay, what a replica that does not
// lead serves with), each also given the leader's own addresses. With a
// chat request in flight, the follower dies: both users lose their
// control connection, reconnect to the leader, and the request is
// answered once, with one room both join.
func TestE2EFollowerDeathLosesNothing(t *testing.T) {
	c := newCluster(t)
	c.startServer("serv3")
	serve := func(target string) *relay.Relay {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r := relay.Serve(ln, 4*time.Second, nil)
		r.SetTarget(target)
		t.Cleanup(func() { r.Close() })
		return r
	}
	restR, ctrlR := serve(c.centCfg.RESTListen), serve(c.centCfg.ControlListen)
	viaFollower := func(o *client.Config) {
		o.Central = restR.Addr() + "," + c.centCfg.RESTListen
		o.Control = ctrlR.Addr() + "," + c.centCfg.ControlListen
	}
	alice, bob := c.user("alice", viaFollower), c.user("bob", viaFollower)
	for _, u := range []*user{alice, bob} {
		if got := next[client.Connected](u, 10*time.Second); got.Central != ctrlR.Addr() {
			t.Fatalf("%s connected to %s, not through the follower %s", u.name, got.Central, ctrlR.Addr())
		}
	}
	testkit.WaitFor(t, 20*time.Second, "probes that agree with the emulated RTTs", func() bool {
		return alice.settled() && bob.settled()
	})
	if err := alice.c.Request("bob"); err != nil {
		t.Fatal(err)
	}
	asked := next[client.Incoming](bob, 5*time.Second)

	start := time.Now()
	restR.Close() // the follower dies, and every connection it relayed
	ctrlR.Close()
	for _, u := range []*user{alice, bob} {
		got := next[client.Connected](u, 10*time.Second)
		if got.Central != c.centCfg.ControlListen {
			t.Fatalf("%s reconnected to %s, want the leader %s", u.name, got.Central, c.centCfg.ControlListen)
		}
		t.Logf("%s back through the leader %v after the follower died", u.name, time.Since(start))
	}
	if err := bob.c.Answer(asked.Req, true); err != nil {
		t.Fatal(err)
	}
	st := finalStatus(alice, asked.Req, proto.ReqAccepted, 15*time.Second)
	for _, u := range []*user{alice, bob} {
		if rr := next[client.RoomReady](u, 15*time.Second); rr.Room != st.Room {
			t.Fatalf("%s joined %s, want %s", u.name, rr.Room, st.Room)
		}
	}
	t.Logf("the request answered %v after the follower died (room %s)", time.Since(start), st.Room)
}
