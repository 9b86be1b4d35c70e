package etcdstore

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/testkit"
)

// TestCampaignAcrossQuorumLossHoldsItsKey (reliability sweep, 2026-12-03): a
// standby campaigns while etcd is lost for longer than the leader TTL and
// comes back. Every session lapsed meanwhile, so when etcd's restarted
// lessor expires the leases, the standby's watch sees the old leader's
// key go and concurrency.Election.Campaign returns nil, although the
// standby's own key went with its lease. OpenLeader must not hand back a
// leadership whose election key is gone (in bin/central two followers
// both logged "leading: records loaded from etcd", freed their relays'
// ports and built a Central before Proclaim found they did not lead).
func TestCampaignAcrossQuorumLossHoldsItsKey(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	ttl := 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l1, err := OpenLeader(ctx, ec.Endpoints(), "/ql/", "one", ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l1.Close(context.Background()) })
	standby := make(chan *Store, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		s, err := OpenLeader(ctx, ec.Endpoints(), "/ql/", "two", ttl)
		if err != nil {
			t.Logf("standby: %v", err)
		}
		standby <- s
	}()
	testkit.WaitFor(t, 20*time.Second, "the standby to campaign", func() bool {
		resp, err := l1.cli.Get(context.Background(), "/ql/leader", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	ec.Members[0].Kill()
	time.Sleep(3 * ttl) // every session's keep-alive gives up
	ec.Members[0].Restart()
	var l2 *Store
	select {
	case l2 = <-standby:
	case <-time.After(30 * time.Second):
		t.Skip("the standby did not return within 30 s of etcd's restart (it keeps campaigning): not this fault")
	}
	if l2 == nil {
		t.Skip("the standby's campaign failed: not this fault")
	}
	t.Cleanup(func() { l2.Close(context.Background()) })
	gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer gcancel()
	resp, err := l2.cli.Get(gctx, l2.elec.Key(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	lostAlready := false
	select {
	case <-l2.Lost():
		lostAlready = true
	case <-time.After(100 * time.Millisecond):
	}
	if resp.Count == 0 || lostAlready {
		t.Fatalf("OpenLeader returned a leadership it does not hold: its election key %s exists: %v; Lost already closed: %v; session done: %v",
			l2.elec.Key(), resp.Count > 0, lostAlready, isDone(l2.sess.Done()))
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestCampaignEndsWithItsContextWhileEtcdIsLost: a standby campaigning
// when etcd is lost must give up when its context ends. Its next session
// waited for a lease grant bound to no context of ours, so bin/central
// ignored SIGTERM, twice, until etcd came back (abuse sweep 7).
func TestCampaignEndsWithItsContextWhileEtcdIsLost(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	ttl := time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l1, err := OpenLeader(ctx, ec.Endpoints(), "/qc/", "one", ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l1.Close(cctx)
	})
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		s, err := OpenLeader(sctx, ec.Endpoints(), "/qc/", "two", ttl)
		if s != nil {
			s.Close(context.Background())
		}
		done <- err
	}()
	testkit.WaitFor(t, 20*time.Second, "the standby to campaign", func() bool {
		resp, err := l1.cli.Get(context.Background(), "/qc/leader", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	ec.Members[0].Kill()
	t.Cleanup(ec.Members[0].Restart)
	time.Sleep(4 * ttl) // every session lapses; the standby starts another
	stop()
	start := time.Now()
	select {
	case err := <-done:
		t.Logf("the standby gave up %v after its context ended: %v", time.Since(start), err)
	case <-time.After(15 * time.Second):
		t.Fatal("the standby still campaigns 15 s after its context ended, etcd being lost")
	}
}
