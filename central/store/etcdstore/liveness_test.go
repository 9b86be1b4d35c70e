package etcdstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/testkit"
)

// aliveKeys returns the liveness keys under prefix and their leases.
func aliveKeys(t *testing.T, cli *clientv3.Client, prefix string) map[string]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"alive/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(prefix+"alive/"):])] = kv.Lease
	}
	return out
}

// TestServerLeases: a server the leader keeps hearing keeps its liveness
// key past several TTLs, one it stops hearing loses it once its lease
// lapses (etcd deletes it, no leader involved), a new leader learns from
// the leases how long ago each was heard of, refreshes the lease it
// inherits, and Forget deletes the key at once. A lease that lapsed under
// the leader (revoked here, as etcd does when the leader cannot refresh
// it for the TTL) is granted afresh at the next heartbeat.
func TestServerLeases(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	cli := ec.Client(t)
	// 3 s: the new leader below must win and load within one TTL of the
	// last heartbeat, which under -race beside other packages took more
	// than 2 s.
	const ttl = 3 * time.Second
	l1 := openLeader(t, ec.Endpoints(), "/live/", "one")
	// Taken before the lease exists: a slow wait for the keys must not
	// shorten the lifetime measured below.
	diesAt := time.Now()
	l1.Heard("live", ttl)
	l1.Heard("dies", ttl)
	testkit.WaitFor(t, 10*time.Second, "both liveness keys", func() bool { return len(aliveKeys(t, cli, "/live/")) == 2 })

	var stop atomic.Bool
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		for !stop.Load() {
			l1.Heard("live", ttl)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	defer func() { stop.Store(true); <-beats }()
	testkit.WaitFor(t, 3*ttl+5*time.Second, "the silent server's lease to lapse", func() bool {
		_, ok := aliveKeys(t, cli, "/live/")["dies"]
		return !ok
	})
	t.Logf("silent server's key gone %v after its last sign of life (TTL %v)", time.Since(diesAt).Round(time.Millisecond), ttl)
	if d := time.Since(diesAt); d < ttl-time.Second/2 {
		t.Fatalf("lease lapsed after %v, before its TTL %v", d, ttl)
	}
	// The heard one outlives two more TTLs.
	deadline := time.Now().Add(2 * ttl)
	for time.Now().Before(deadline) {
		if _, ok := aliveKeys(t, cli, "/live/")["live"]; !ok {
			t.Fatal("the liveness key of a server heard every 100 ms lapsed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop.Store(true)
	<-beats
	if ago, ok := l1.HeardAgo("live"); ok {
		t.Fatalf("the first leader knew of no lease when it won, yet HeardAgo says %v", ago)
	}

	// A new leader: resign the first one.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stopped := time.Now()
	if err := l1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := openLeader(t, ec.Endpoints(), "/live/", "two")
	ago, ok := l2.HeardAgo("live")
	t.Logf("new leader: live heard %v ago (%v since the last Heard)", ago, time.Since(stopped))
	if !ok || ago > ttl {
		t.Fatalf("new leader: HeardAgo(live) = %v %v, want a live lease heard under %v ago", ago, ok, ttl)
	}
	if ago, ok := l2.HeardAgo("dies"); ok {
		t.Fatalf("new leader: HeardAgo(dies) = %v, want a lapsed lease", ago)
	}
	lease := aliveKeys(t, cli, "/live/")["live"]
	for end := time.Now().Add(ttl + time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		l2.Heard("live", ttl)
	}
	if got := aliveKeys(t, cli, "/live/")["live"]; got != lease {
		t.Fatalf("the new leader's heartbeat did not keep the inherited lease %x alive (now %x)", lease, got)
	}

	// A lapse under the leader: a new lease at the next heartbeat.
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(lease)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the key to go with its lease", func() bool { return aliveKeys(t, cli, "/live/")["live"] == 0 })
	testkit.WaitFor(t, 10*time.Second, "a fresh lease", func() bool {
		l2.Heard("live", ttl)
		got := aliveKeys(t, cli, "/live/")["live"]
		return got != 0 && got != lease
	})

	l2.Forget("live")
	testkit.WaitFor(t, 5*time.Second, "Forget to delete the key", func() bool { return len(aliveKeys(t, cli, "/live/")) == 0 })
}

// BenchmarkLeaseRound times one refresher round that refreshes the leases
// of 1,000 chat servers (all heard since their last refresh, all due):
// what a leader pays every refresh spacing at most, with 1,000 servers.
func BenchmarkLeaseRound(b *testing.B) {
	ec := etcdtest.Start(b, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenLeader(ctx, ec.Endpoints(), "/bench/", "bench", 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	const n = 1000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("s%04d", i)
		s.Heard(ids[i], 15*time.Second)
	}
	testkit.WaitFor(b, 60*time.Second, "1,000 leases", func() bool {
		s.live.mu.Lock()
		defer s.live.mu.Unlock()
		granted := 0
		for _, r := range s.live.recs {
			if r.lease != 0 {
				granted++
			}
		}
		return granted == n
	})
	b.ResetTimer()
	for range b.N {
		s.live.mu.Lock()
		for _, r := range s.live.recs {
			r.heard, r.refreshed = true, time.Time{}
		}
		s.live.mu.Unlock()
		s.refreshRound(ctx)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/n, "µs/lease")
}
