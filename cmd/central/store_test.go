package main

import (
	"bufio"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
)

// launch runs bin with args; the channel gets its REST address once it
// logs that it runs. The process is SIGKILLed when the test ends.
func launch(t *testing.T, bin string, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd, _, running := launchReplica(t, bin, args...)
	return cmd, running
}

// launchReplica is launch that also reports, on following, the REST and
// control addresses a replica relays on while it does not lead.
func launchReplica(t *testing.T, bin string, args ...string) (cmd *exec.Cmd, following <-chan [2]string, running <-chan string) {
	t.Helper()
	cmd, following, running, _ = launchWatched(t, bin, args...)
	return cmd, following, running
}

// launchWatched is launchReplica that also reports, on downs, the id of
// every chat server the process declares down.
func launchWatched(t *testing.T, bin string, args ...string) (cmd *exec.Cmd, following <-chan [2]string, running, downs <-chan string) {
	t.Helper()
	cmd = exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// Never blocks the scanner (a full channel drops the line): a
	// blocked scanner would stall the process on its stderr.
	run, follow, down := make(chan string, 4), make(chan [2]string, 4), make(chan string, 64)
	field := func(line, name string) string {
		_, v, _ := strings.Cut(line, " "+name+"=")
		v, _, _ = strings.Cut(v, " ")
		return v
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.Contains(line, "central running"):
				select {
				case run <- field(line, "rest"):
				default:
				}
			case strings.Contains(line, "follower: relaying"):
				select {
				case follow <- [2]string{field(line, "rest"), field(line, "control")}:
				default:
				}
			case strings.Contains(line, "chat server down"):
				select {
				case down <- field(line, "server"):
				default:
				}
			}
		}
	}()
	return cmd, follow, run, down
}

// startBinary is launch, waiting until Central runs.
func startBinary(t *testing.T, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd, running := launch(t, bin, args...)
	select {
	case rest := <-running:
		return cmd, rest
	case <-time.After(30 * time.Second):
		t.Fatal("Central did not start")
		return nil, ""
	}
}

// awaitKey waits until key is in etcd.
func awaitKey(t *testing.T, ec *etcdtest.Cluster, key string) {
	t.Helper()
	awaitKeyCount(t, ec, key, 1, 10*time.Second)
}

// awaitGone waits until key is not in etcd.
func awaitGone(t *testing.T, ec *etcdtest.Cluster, key string, timeout time.Duration) {
	t.Helper()
	awaitKeyCount(t, ec, key, 0, timeout)
}

func awaitKeyCount(t *testing.T, ec *etcdtest.Cluster, key string, n int, timeout time.Duration) {
	t.Helper()
	cli := ec.Client(t)
	what := key + " in etcd"
	if n == 0 {
		what = key + " gone from etcd"
	}
	testkit.WaitFor(t, timeout, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, key)
		return err == nil && len(resp.Kvs) == n
	})
}

// TestSIGKILLedCentralKeepsRecordsInEtcd registers a chat server with a
// Central on -store etcd://, waits until the record is in etcd, SIGKILLs
// the Central, and checks that a new one on the same etcd (and new ports)
// knows the server: its heartbeat is taken without a new registration.
func TestSIGKILLedCentralKeepsRecordsInEtcd(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	storeURL := "etcd://" + ec.Hosts() + "/killtest"
	args := []string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-leader-ttl", "1s", "-store", storeURL}
	cmd, rest := startBinary(t, bin, args...)
	api := centralapi.NewClient("http://"+rest, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reg, err := api.Register(ctx, centralapi.RegisterServerRequest{ID: "serv1", Addr: ln.Addr().String(), Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	awaitKey(t, ec, "/killtest/servers/serv1")
	cmd.Process.Kill()
	cmd.Wait()

	_, rest2 := startBinary(t, bin, args...)
	api2 := centralapi.NewClient("http://"+rest2, nil)
	if _, err := api2.Heartbeat(ctx, "serv1", reg.Token, centralapi.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat to the new Central: %v", err)
	}
}

// TestStandbyTakesOverFromKilledLeader starts two Centrals on one etcd
// prefix: the second does not lead (it only relays) until the first is
// SIGKILLed, then leads within the lease TTL and knows the first one's
// chat server.
func TestStandbyTakesOverFromKilledLeader(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	args := []string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-leader-ttl", "2s", "-store", "etcd://" + ec.Hosts() + "/pair"}
	leader, rest := startBinary(t, bin, args...)
	_, standby := launch(t, bin, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	api := centralapi.NewClient("http://"+rest, nil)
	reg, err := api.Register(ctx, centralapi.RegisterServerRequest{ID: "serv1", Addr: "127.0.0.1:1", Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	awaitKey(t, ec, "/pair/servers/serv1")
	select {
	case <-standby:
		t.Fatal("the standby serves while the leader lives")
	default:
	}
	start := time.Now()
	leader.Process.Kill()
	leader.Wait()
	var rest2 string
	select {
	case rest2 = <-standby:
	case <-time.After(20 * time.Second):
		t.Fatal("the standby did not take over")
	}
	t.Logf("standby serves %v after the leader's SIGKILL (lease TTL 2s)", time.Since(start))
	api2 := centralapi.NewClient("http://"+rest2, nil)
	if _, err := api2.Heartbeat(ctx, "serv1", reg.Token, centralapi.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat to the new leader: %v", err)
	}
}

// startPair starts a leader Central on etcd prefix and, once it runs, a
// second one that follows it; each gets the common flags and its own
// extra ones. It returns the leader's process and REST address, the
// follower's REST and control addresses, and the channel that gets the
// follower's REST address once it leads.
func startPair(t *testing.T, ec *etcdtest.Cluster, prefix string, leaderArgs, followerArgs []string) (*exec.Cmd, string, [2]string, <-chan string) {
	t.Helper()
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	args := []string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-leader-ttl", "1s", "-store", storeURL(ec, prefix)}
	leader, rest := startBinary(t, bin, append(args, leaderArgs...)...)
	_, following, running := launchReplica(t, bin, append(args, followerArgs...)...)
	return leader, rest, awaitFollowing(t, following), running
}

// storeURL is -store for ec's members and prefix: etcds:// over TLS.
func storeURL(ec *etcdtest.Cluster, prefix string) string {
	if ec.TLS != nil {
		return "etcds://" + ec.Hosts() + prefix
	}
	return "etcd://" + ec.Hosts() + prefix
}

// takeOver SIGKILLs the leader and waits until the follower whose
// running channel this is leads.
func takeOver(t *testing.T, leader *exec.Cmd, running <-chan string) string {
	t.Helper()
	leader.Process.Kill()
	leader.Wait()
	select {
	case rest := <-running:
		return rest
	case <-time.After(30 * time.Second):
		t.Fatal("the follower did not take over")
		return ""
	}
}

// awaitFollowing waits until a replica follows and returns its REST and
// control addresses.
func awaitFollowing(t *testing.T, following <-chan [2]string) [2]string {
	t.Helper()
	select {
	case f := <-following:
		return f
	case <-time.After(30 * time.Second):
		t.Fatal("the second Central does not follow")
		return [2]string{}
	}
}

// TestFollowerRelaysToLeader starts two Centrals on one etcd prefix. The
// follower binds its ports and relays: a health check through it is the
// leader's, a client registered through its REST port is welcomed on its
// control port, and a chat server registered through it heartbeats to the
// leader directly. SIGKILLing the leader drops the relayed control
// connection; the follower then leads on the same ports and knows both.
func TestFollowerRelaysToLeader(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	leader, rest, f, running := startPair(t, ec, "/relay", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	via := centralapi.NewClient("http://"+f[0], nil)
	testkit.WaitFor(t, 10*time.Second, "a health check through the follower", func() bool {
		h, err := via.Health(ctx)
		return err == nil && h.REST == rest
	})
	reg, err := via.Register(ctx, centralapi.RegisterServerRequest{ID: "serv1", Addr: "127.0.0.1:1", Secret: "s"})
	if err != nil {
		t.Fatalf("registering a server through the follower: %v", err)
	}
	if _, err := centralapi.NewClient("http://"+rest, nil).Heartbeat(ctx, "serv1", reg.Token, centralapi.HeartbeatRequest{}); err != nil {
		t.Fatalf("the leader does not know the server registered through the follower: %v", err)
	}
	sess, err := via.RegisterClient(ctx, "alice", "")
	if err != nil {
		t.Fatalf("registering a client through the follower: %v", err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	pc, w, err := proto.Dial(dctx, nil, f[1], &proto.Hello{Agent: "test", Token: sess.Token})
	dcancel()
	if err != nil {
		t.Fatalf("control connection through the follower: %v", err)
	}
	defer pc.Close()
	if w.Server != proto.CentralName {
		t.Fatalf("welcomed as %q", w.Server)
	}
	// Records are written behind: a SIGKILL loses the last batch.
	awaitKey(t, ec, "/relay/servers/serv1")
	awaitKey(t, ec, "/relay/users/alice")
	start := time.Now()
	leader.Process.Kill()
	leader.Wait()
	_ = pc.NetConn().SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, err := pc.Recv(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the relayed control connection outlived the leader")
			}
			break
		}
	}
	t.Logf("relayed control connection closed %v after the leader's SIGKILL", time.Since(start))
	select {
	case got := <-running:
		if got != f[0] {
			t.Fatalf("the follower leads on %s, not on its REST port %s", got, f[0])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the follower did not take over")
	}
	t.Logf("the follower leads %v after the leader's SIGKILL (lease TTL 1s)", time.Since(start))
	if _, err := via.Heartbeat(ctx, "serv1", reg.Token, centralapi.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat to the new leader: %v", err)
	}
	dctx, dcancel = context.WithTimeout(ctx, 10*time.Second)
	pc2, _, err := proto.Dial(dctx, nil, f[1], &proto.Hello{Agent: "test", Token: sess.Token})
	dcancel()
	if err != nil {
		t.Fatalf("control connection to the new leader: %v", err)
	}
	pc2.Close()
}

// TestReplicasOverEtcdTLS runs a leader and a follower on an etcd that
// serves TLS and requires client certificates (-store etcds:// with
// -etcd-ca, -etcd-cert, -etcd-key): a server registered through the
// follower is written to etcd, and the follower takes over when the
// leader is SIGKILLed. A replica without a client certificate says why it
// cannot reach etcd.
func TestReplicasOverEtcdTLS(t *testing.T) {
	f, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ec := etcdtest.StartTLS(t, 1, f)
	certs := []string{"-etcd-ca", f.CA, "-etcd-cert", f.ClientCert, "-etcd-key", f.ClientKey}
	leader, _, fol, running := startPair(t, ec, "/tls", certs, certs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	via := centralapi.NewClient("http://"+fol[0], nil)
	reg, err := via.Register(ctx, centralapi.RegisterServerRequest{ID: "serv1", Addr: "127.0.0.1:1", Secret: "s"})
	if err != nil {
		t.Fatalf("registering a server through the follower: %v", err)
	}
	awaitKey(t, ec, "/tls/servers/serv1")
	takeOver(t, leader, running)
	if _, err := via.Heartbeat(ctx, "serv1", reg.Token, centralapi.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat to the new leader: %v", err)
	}

	// No client certificate: etcd refuses the handshake, and the log says so.
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	cmd := exec.Command(bin, "-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-store", storeURL(ec, "/tls"), "-etcd-ca", f.CA)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l := <-lines:
			t.Logf("replica without a client certificate: %s", l)
			if strings.Contains(l, "certificate") {
				return
			}
		case <-deadline:
			t.Fatal("a replica without a client certificate did not say why etcd refuses it")
		}
	}
}

// TestFollowerLimitsConnections: a follower applies -max-conns-per-source
// itself (here 1, the leader's 100): a client's control connection through
// it is welcomed, a second one from the same address is closed unwelcomed.
func TestFollowerLimitsConnections(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	_, rest, f, _ := startPair(t, ec, "/limit", []string{"-max-conns-per-source", "100"}, []string{"-max-conns-per-source", "1"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := centralapi.NewClient("http://"+rest, nil)
	var conns []error
	for _, name := range []string{"alice", "bob"} {
		sess, err := api.RegisterClient(ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		pc, _, err := proto.Dial(dctx, nil, f[1], &proto.Hello{Agent: "test", Token: sess.Token})
		dcancel()
		if err == nil {
			defer pc.Close()
		}
		conns = append(conns, err)
	}
	if conns[0] != nil {
		t.Fatalf("the first control connection through the follower: %v", conns[0])
	}
	if conns[1] == nil {
		t.Fatal("a second connection from one address was relayed past -max-conns-per-source 1")
	}
	t.Logf("the second connection: %v", conns[1])
}

// TestDeposedLeaderFollowsAgain revokes the leader's lease (what etcd does
// when a starved or cut-off leader misses its keep-alives): the follower
// leads, and the old leader steps down without exiting and relays to it.
func TestDeposedLeaderFollowsAgain(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	args := []string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-leader-ttl", "1s", "-store", "etcd://" + ec.Hosts() + "/depose"}
	_, oldFollowing, oldRunning := launchReplica(t, bin, args...)
	var oldREST string
	select {
	case oldREST = <-oldRunning:
	case <-time.After(30 * time.Second):
		t.Fatal("the first Central does not lead")
	}
	<-oldFollowing // it followed before it led
	_, following, running := launchReplica(t, bin, args...)
	var f [2]string
	select {
	case f = <-following:
	case <-time.After(30 * time.Second):
		t.Fatal("the second Central does not follow")
	}
	cli := ec.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/depose/leader", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("leader key: %v %v", resp, err)
	}
	start := time.Now()
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-running:
		if got != f[0] {
			t.Fatalf("the follower leads on %s, not %s", got, f[0])
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the follower did not take over")
	}
	t.Logf("the follower leads %v after the lease was revoked", time.Since(start))
	select {
	case <-oldFollowing:
	case <-time.After(30 * time.Second):
		t.Fatal("the deposed leader does not follow again")
	}
	api := centralapi.NewClient("http://"+oldREST, nil)
	testkit.WaitFor(t, 20*time.Second, "the deposed leader to relay to the new one", func() bool {
		h, err := api.Health(ctx)
		return err == nil && h.REST == f[0]
	})
}
