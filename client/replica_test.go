package client_test

import (
	"context"
	"net"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/central/store/etcdstore"
	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/client"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestE2ECentralFailoverKeepsChatting runs two Central replicas on one etcd:
// the leader serves, the standby waits in the election. The chat server
// and both users are given both replicas' addresses. While alice streams
// to bob, the leader stops; the standby leads, loads the records, and the
// chat server and users move to it: bob gets every message once and in
// order, the new leader knows the room, and a new chat request is answered
// there.
func TestE2ECentralFailoverKeepsChatting(t *testing.T) {
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
	case <-standbyUp:
		t.Fatal("the standby serves while the leader lives")
	default:
	}

	start := time.Now()
	c.central.Close()
	st1.Close(context.Background())
	select {
	case up := <-standbyUp:
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
	apiB := centralapi.NewClient(restB, nil)
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
