package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/bench/chaos"
	"nearchat/bench/cluster"
	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wiretest"
)

// beater is a chat server's REST side: it heartbeats every 100 ms to
// whichever REST address is current, registering again when Central does
// not know it, until stopped. Failures (no Central leads) are retried.
type beater struct {
	id, addr string
	rest     *atomic.Value // string: the REST address to use
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

func startBeater(t *testing.T, id, addr string, rest *atomic.Value) *beater {
	b := &beater{id: id, addr: addr, rest: rest, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		token := ""
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			api := centralapi.NewClient("http://"+rest.Load().(string), nil)
			var err error
			if token != "" {
				_, err = api.Heartbeat(ctx, id, token, centralapi.HeartbeatRequest{})
			}
			if token == "" || centralapi.IsUnknownServer(err) {
				var reg centralapi.RegisterServerResponse
				if reg, err = api.Register(ctx, centralapi.RegisterServerRequest{ID: id, Addr: addr, Secret: "s", Token: token}); err == nil {
					token = reg.Token
				}
			}
			cancel()
			select {
			case <-b.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(b.halt)
	return b
}

func (b *beater) halt() {
	b.once.Do(func() { close(b.stop) })
	<-b.done
}

// serverUp reports whether Central at rest lists id as up; ok false when
// Central did not answer or does not know id.
func serverUp(rest, id string) (up, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	all, err := centralapi.NewClient("http://"+rest, nil).AllServers(ctx)
	if err != nil {
		return false, false
	}
	for _, s := range all {
		if s.ID == id {
			return s.Up, true
		}
	}
	return false, false
}

// deadAddr is a loopback address nothing listens on, outside the
// ephemeral range (cluster.FreeAddr), so no connection takes it meanwhile.
func deadAddr(t *testing.T) string {
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// startWatched is startBinary that also reports the servers the process
// declares down.
func startWatched(t *testing.T, bin string, args ...string) (rest string, downs <-chan string) {
	t.Helper()
	_, _, running, downs := launchWatched(t, bin, args...)
	select {
	case rest = <-running:
		return rest, downs
	case <-time.After(30 * time.Second):
		t.Fatal("Central did not start")
		return "", nil
	}
}

// staysUp waits d, then fails the test if a Central whose downs these are
// declared id down meanwhile (even if it came back at its next
// heartbeat).
func staysUp(t *testing.T, id string, d time.Duration, downs ...<-chan string) {
	t.Helper()
	time.Sleep(d)
	for _, ch := range downs {
		for {
			select {
			case got := <-ch:
				if got == id {
					t.Fatalf("%s, alive all along, was declared down", id)
				}
				continue
			default:
			}
			break
		}
	}
}

// TestLapsedLeaseAtTakeoverIsChecked runs one Central at a time on etcd
// with two chat servers heartbeating, SIGKILLs it, kills one server (its
// address refuses connections) and starts the next Central only once both
// servers' leases have lapsed (no one led to refresh them). The new
// leader must find the dead server down at once, not OfflineAfter after it
// wins, having checked it (the lapsed lease is only the missed heartbeats),
// and must not declare the live server down, whose lease lapsed all the
// same: it answers the check.
func TestLapsedLeaseAtTakeoverIsChecked(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	const offline = 3 * time.Second
	args := []string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-leader-ttl", "1s",
		"-heartbeat", "250ms", "-offline-after", offline.String(), "-store", "etcd://" + ec.Hosts() + "/gap"}
	first, rest := startBinary(t, bin, args...)
	var cur atomic.Value
	cur.Store(rest)
	startBeater(t, "live", wiretest.EchoServer(t, 0, nil).Addr(), &cur)
	dies := startBeater(t, "dies", deadAddr(t), &cur)
	awaitKey(t, ec, "/gap/alive/live")
	awaitKey(t, ec, "/gap/alive/dies")

	first.Process.Kill()
	first.Wait()
	dies.halt()
	killed := time.Now()
	awaitGone(t, ec, "/gap/alive/dies", 3*offline)
	awaitGone(t, ec, "/gap/alive/live", 3*offline)
	t.Logf("both leases lapsed %v after the leader's SIGKILL", time.Since(killed).Round(time.Millisecond))

	rest2, downs := startWatched(t, bin, args...)
	won := time.Now()
	cur.Store(rest2)
	testkit.WaitFor(t, 2*offline, "the dead server declared down", func() bool {
		up, ok := serverUp(rest2, "dies")
		return ok && !up
	})
	took := time.Since(won)
	t.Logf("dead server down %v after the new leader serves (OfflineAfter %v)", took.Round(time.Millisecond), offline)
	if took >= offline/2 {
		t.Fatalf("the new leader took %v to declare down a server whose lease had lapsed: a fresh OfflineAfter window", took)
	}
	staysUp(t, "live", offline+time.Second, downs)
	awaitKey(t, ec, "/gap/alive/live") // heard again: a new lease
}

// TestLeaseSpansLeaderChange runs a leader and a follower on etcd with two
// chat servers heartbeating through the follower, SIGKILLs the leader and
// one server at once. The follower, leading, must declare the dead server
// down sooner than OfflineAfter after it starts serving (its lease says
// when it was last heard of: the window is not reset by the change), and
// must never declare the live one down.
func TestLeaseSpansLeaderChange(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	const offline = 6 * time.Second
	flags := []string{"-heartbeat", "250ms", "-offline-after", offline.String(), "-leader-ttl", "2s"}
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	args := append([]string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-store", "etcd://" + ec.Hosts() + "/span"}, flags...)
	leader, _ := startBinary(t, bin, args...)
	_, following, running, downs := launchWatched(t, bin, args...)
	f := awaitFollowing(t, following)
	var cur atomic.Value
	cur.Store(f[0]) // through the follower's relay, which leads next
	startBeater(t, "live", wiretest.EchoServer(t, 0, nil).Addr(), &cur)
	dies := startBeater(t, "dies", deadAddr(t), &cur)
	awaitKey(t, ec, "/span/alive/live")
	awaitKey(t, ec, "/span/alive/dies")
	time.Sleep(time.Second) // a few refreshes

	leader.Process.Kill()
	leader.Wait()
	dies.halt()
	killed := time.Now()
	var rest2 string
	select {
	case rest2 = <-running:
	case <-time.After(30 * time.Second):
		t.Fatal("the follower did not take over")
	}
	won := time.Now()
	t.Logf("the follower serves %v after the leader's SIGKILL", won.Sub(killed).Round(time.Millisecond))
	testkit.WaitFor(t, 3*offline, "the dead server declared down", func() bool {
		up, ok := serverUp(rest2, "dies")
		return ok && !up
	})
	took := time.Since(won)
	t.Logf("dead server down %v after the new leader serves, %v after its last heartbeat (OfflineAfter %v)",
		took.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), offline)
	if took >= offline-time.Second/2 {
		t.Fatalf("the new leader gave the dead server a fresh window: down %v after it serves", took)
	}
	staysUp(t, "live", offline+time.Second, downs)
}

// TestLeaseLapseUnderPartitionIsNotDeath cuts the leader off from etcd
// (a proxy between them drops everything) while a live chat server
// heartbeats to it through the follower. The server's lease lapses within
// OfflineAfter, since the leader cannot refresh it, before the leader's
// own lease (-leader-ttl) runs out; the follower then leads and finds the
// server's lease lapsed. Neither may declare the server down: the leader
// still hears it, and the new leader's echo check is answered. The new
// leader grants it a new lease.
func TestLeaseLapseUnderPartitionIsNotDeath(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	p, err := chaos.NewProxy("leader-etcd", strings.TrimPrefix(ec.Members[0].Client, "http://"), false, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const offline = 2 * time.Second
	args := []string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-leader-ttl", "5s",
		"-heartbeat", "250ms", "-offline-after", offline.String()}
	rest, downs1 := startWatched(t, bin, append(args, "-store", "etcd://"+p.Addr()+"/part")...)
	_, following, running, downs2 := launchWatched(t, bin, append(args, "-store", "etcd://"+ec.Hosts()+"/part")...)
	f := awaitFollowing(t, following)
	var cur atomic.Value
	cur.Store(f[0])
	startBeater(t, "live", wiretest.EchoServer(t, 0, nil).Addr(), &cur)
	awaitKey(t, ec, "/part/alive/live")
	time.Sleep(time.Second) // a few refreshes

	p.Set("", chaos.Up, chaos.Rule{Blackhole: true})
	p.Set("", chaos.Down, chaos.Rule{Blackhole: true})
	cut := time.Now()
	awaitGone(t, ec, "/part/alive/live", 3*offline)
	t.Logf("the live server's lease lapsed %v after the partition", time.Since(cut).Round(time.Millisecond))
	select {
	case <-running:
		t.Log("the follower already leads: the lapse was not seen under the old leader")
	default:
		if up, ok := serverUp(rest, "live"); !ok || !up {
			t.Fatalf("the partitioned leader lists the live server up=%v (answered %v) once its lease lapsed", up, ok)
		}
	}
	var rest2 string
	select {
	case rest2 = <-running:
	case <-time.After(30 * time.Second):
		t.Fatal("the follower did not take over from the partitioned leader")
	}
	t.Logf("the follower serves %v after the partition", time.Since(cut).Round(time.Millisecond))
	p.Heal()
	_ = rest2
	staysUp(t, "live", offline+2*time.Second, downs1, downs2)
	awaitKey(t, ec, "/part/alive/live") // heard by the new leader: a new lease
}

// scrape returns the metrics text at addr, "" if it does not answer.
func scrape(addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestFollowerServesMetrics: a follower started with -metrics serves its
// relays' counters there, marked role="follower" (a REST call through it
// counts as accepted and relayed on the rest port); once it leads, the
// same address serves Central's metrics, marked role="leader".
func TestFollowerServesMetrics(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	metrics := deadAddr(t)
	leader, _, f, running := startPair(t, ec, "/metrics", nil, []string{"-metrics", metrics})
	testkit.WaitFor(t, 10*time.Second, "the follower's metrics", func() bool {
		return strings.Contains(scrape(metrics), `nearchat_central_role{role="follower"} 1`)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := centralapi.NewClient("http://"+f[0], nil).Servers(ctx); err != nil {
		t.Fatalf("a REST call through the follower: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "the relayed call counted", func() bool {
		m := scrape(metrics)
		return strings.Contains(m, `nearchat_central_relay_relayed_total{port="rest"} 1`) &&
			strings.Contains(m, `nearchat_central_relay_accepted_total{port="control"} 0`) &&
			strings.Contains(m, "process_cpu_seconds_total")
	})
	takeOver(t, leader, running)
	testkit.WaitFor(t, 10*time.Second, "the new leader's metrics on the same address", func() bool {
		m := scrape(metrics)
		return strings.Contains(m, `nearchat_central_role{role="leader"} 1`) && strings.Contains(m, "nearchat_central_scan_duration_seconds") &&
			!strings.Contains(m, "nearchat_central_relay_")
	})
}
