package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"nearchat/central/store"
	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/selection"
	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
)

func open(t *testing.T, endpoints []string, prefix string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, endpoints, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func flush(t *testing.T, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	t.Logf("flush took %v", time.Since(start))
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, prefix string
		eps        []string
		bad        bool
	}{
		{in: "etcd://a:2379", prefix: DefaultPrefix, eps: []string{"http://a:2379"}},
		{in: "etcd://a:1,b:2/chat/eu", prefix: "/chat/eu/", eps: []string{"http://a:1", "http://b:2"}},
		{in: "etcds://a:2379,b:2379/x", prefix: "/x/", eps: []string{"https://a:2379", "https://b:2379"}},
		{in: "http://a:2379", bad: true},
		{in: "etcd://user:pw@a:2379", bad: true},
		{in: "etcd://a:2379?tls=1", bad: true},
		{in: "etcd://", bad: true},
		{in: "etcd://a:1,,b:2", bad: true},
	} {
		eps, prefix, err := ParseURL(tc.in)
		if (err != nil) != tc.bad || (!tc.bad && (prefix != tc.prefix || !slices.Equal(eps, tc.eps))) {
			t.Errorf("ParseURL(%q) = %v %q %v", tc.in, eps, prefix, err)
		}
	}
}

// TestTLS reaches an etcd that serves TLS and asks for client
// certificates: a Store with the CA and a client certificate writes and
// reloads; one without a client certificate, one trusting another CA, and
// one without TLS settings at all are refused.
func TestTLS(t *testing.T) {
	f, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ec := etcdtest.StartTLS(t, 1, f)
	eps, prefix, err := ParseURL("etcds://" + ec.Hosts() + "/tls")
	if err != nil {
		t.Fatal(err)
	}
	good, err := tlsconfig.Client(f.CA, f.ClientCert, f.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, eps, prefix, WithTLS(good))
	if err != nil {
		t.Fatal(err)
	}
	s.PutUser(store.User{Name: "alice", Token: "tok"})
	flush(t, s)
	s.Close(ctx)
	s2, err := Open(ctx, eps, prefix, WithTLS(good))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(ctx)
	if u, ok := s2.User("alice"); !ok || u.Token != "tok" {
		t.Fatalf("alice over TLS: %+v %v", u, ok)
	}

	noCert, _ := tlsconfig.Client(f.CA, "", "")
	other, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := tlsconfig.Client(other.CA, other.ClientCert, other.ClientKey)
	for _, bad := range []struct {
		name string
		opts []Option
	}{{"no client certificate", []Option{WithTLS(noCert)}}, {"another CA", []Option{WithTLS(otherCA)}}, {"no TLS settings", nil}} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		s, err := Open(ctx, eps, prefix, bad.opts...)
		cancel()
		if err == nil {
			s.Close(context.Background())
			t.Errorf("%s: opened", bad.name)
			continue
		}
		t.Logf("%s: %v", bad.name, err)
	}
	// Unreachable names what the etcd client's retries keep quiet: a
	// refused certificate (this replica said nothing in its log before).
	if why := Unreachable(eps, good, 2*time.Second); why != "" {
		t.Errorf("the good certificate counted refused: %s", why)
	}
	for name, tc := range map[string]*tls.Config{"no client certificate": noCert, "another CA": otherCA} {
		why := Unreachable(eps, tc, 2*time.Second)
		if !strings.Contains(why, "certificate") {
			t.Errorf("%s: Unreachable said %q", name, why)
		}
		t.Logf("Unreachable, %s: %s", name, why)
	}
	// An etcd:// endpoint with TLS settings would send them nowhere.
	plainEps, _, _ := ParseURL("etcd://" + ec.Hosts())
	if _, err := Open(ctx, plainEps, prefix, WithTLS(good)); err == nil {
		t.Error("TLS settings taken for an http:// endpoint")
	}
}

// TestReopenSeesEverything writes every kind of record, deletes some, and
// checks that a second Store opened on the same etcd loads exactly the rest,
// and that another prefix sees none of it.
func TestReopenSeesEverything(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	s := open(t, ec.Endpoints(), "/t1/")
	now := time.Now().UTC().Round(time.Millisecond)
	lat := map[string]selection.Sample{"serv1": {Median: 5 * time.Millisecond, Spread: time.Millisecond, Count: 3}}
	for _, name := range []string{"alice", "bob", "carol"} {
		s.PutUser(store.User{Name: name, Token: "tok-" + name, Latency: lat, Registered: now})
	}
	s.PutServer(store.Server{ID: "serv1", Addr: "127.0.0.1:9000", MaxRooms: 4, Registered: now, LastSeen: now})
	s.PutServer(store.Server{ID: "serv2", Addr: "127.0.0.1:9001"})
	for i := range 300 { // more than one transaction's worth
		s.PutRoom(store.Room{ID: "r" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Server: "serv1", Epoch: uint64(i), Members: []string{"alice", "bob"}, Created: now})
	}
	s.PutRoom(store.Room{ID: "raa", Server: "serv2", Epoch: 7, Members: []string{"alice", "bob"}, Created: now, LastMove: now})
	if err := s.DeleteUser("carol"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteServer("serv2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRoom("rba"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRoom("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete of a missing room: %v", err)
	}
	s.PutRequest(store.Request{ID: "q-1", From: "alice", To: []string{"bob"}, Code: 5, Room: "raa", Finished: now})
	s.PutRequest(store.Request{ID: "q-2", From: "bob", Code: 7, Detail: "alice declined", Finished: now})
	if err := s.DeleteRequest("q-2"); err != nil {
		t.Fatal(err)
	}
	flush(t, s)

	s2 := open(t, ec.Endpoints(), "/t1/")
	if u, sv, r := s2.Counts(); u != 2 || sv != 1 || r != 299 {
		t.Fatalf("reopened counts: %d users %d servers %d rooms", u, sv, r)
	}
	u, ok := s2.User("alice")
	if !ok || u.Token != "tok-alice" || u.Latency["serv1"] != lat["serv1"] || !u.Registered.Equal(now) {
		t.Fatalf("alice reopened: %+v %v", u, ok)
	}
	sv, ok := s2.Server("serv1")
	if !ok || sv.Addr != "127.0.0.1:9000" || sv.MaxRooms != 4 || !sv.LastSeen.Equal(now) {
		t.Fatalf("serv1 reopened: %+v %v", sv, ok)
	}
	r, ok := s2.Room("raa")
	if !ok || r.Server != "serv2" || r.Epoch != 7 || !slices.Equal(r.Members, []string{"alice", "bob"}) || !r.LastMove.Equal(now) {
		t.Fatalf("raa reopened: %+v %v", r, ok)
	}
	if reqs, _ := s2.Requests(); len(reqs) != 1 || !reflect.DeepEqual(reqs[0], store.Request{ID: "q-1", From: "alice", To: []string{"bob"}, Code: 5, Room: "raa", Finished: now}) {
		t.Fatalf("requests reopened: %+v", reqs)
	}
	if other := open(t, ec.Endpoints(), "/t2/"); func() bool { u, sv, r := other.Counts(); return u+sv+r != 0 }() {
		t.Fatal("another prefix sees the records")
	}
}

// TestRevocationsRoundTrip: leaves and room removals written by one Store
// are loaded by the next, the last write to a member's leave winning, and
// a deletion by the second is gone for a third.
func TestRevocationsRoundTrip(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	s := open(t, ec.Endpoints(), "/rv/")
	now := time.Now()
	leave := store.Revocation{Room: "r-1", User: "carol", Before: now.UnixNano(), Until: now.Add(10 * time.Minute).Unix()}
	again := store.Revocation{Room: "r-1", User: "carol", Before: now.Add(time.Second).UnixNano(), Until: now.Add(10*time.Minute + time.Second).Unix()}
	removed := store.Revocation{Room: "r-2", Before: now.UnixNano(), Until: leave.Until}
	gone := store.Revocation{Room: "r-3", User: "dave", Before: now.UnixNano(), Until: leave.Until}
	for _, r := range []store.Revocation{leave, again, removed, gone} {
		if err := s.PutRevocation(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRevocation(gone.ID()); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRevocation("r-9/nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete of a missing revocation: %v", err)
	}
	flush(t, s)

	s2 := open(t, ec.Endpoints(), "/rv/")
	got, err := s2.Revocations()
	if err != nil || !reflect.DeepEqual(got, []store.Revocation{again, removed}) {
		t.Fatalf("revocations reopened: %+v %v, want %+v", got, err, []store.Revocation{again, removed})
	}
	if err := s2.DeleteRevocation(removed.ID()); err != nil {
		t.Fatal(err)
	}
	flush(t, s2)
	if got, _ := open(t, ec.Endpoints(), "/rv/").Revocations(); !reflect.DeepEqual(got, []store.Revocation{again}) {
		t.Fatalf("revocations after a delete: %+v, want %+v", got, []store.Revocation{again})
	}
}

// TestWritesSurviveEtcdOutage kills the only etcd member, writes, and checks
// that Flush reports the failure, then succeeds once etcd is back, with the
// last write to each key winning.
func TestWritesSurviveEtcdOutage(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	s := open(t, ec.Endpoints(), "/out/")
	s.PutRoom(store.Room{ID: "r1", Epoch: 1})
	flush(t, s)

	ec.Members[0].Kill()
	start := time.Now()
	s.PutRoom(store.Room{ID: "r1", Epoch: 2}) // returns at once: the write waits in the queue
	s.PutRoom(store.Room{ID: "r1", Epoch: 3})
	s.PutUser(store.User{Name: "alice"})
	// Blocked writes would wait out etcd's 5 s dial timeout; 3 s is
	// headroom for a loaded machine, not a figure.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("writes blocked %v with etcd down", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := s.Flush(ctx)
	cancel()
	if err == nil {
		t.Fatal("flush succeeded with etcd down")
	}
	t.Logf("flush with etcd down: %v; pending %d", err, s.Pending())
	if got, _ := s.Room("r1"); got.Epoch != 3 {
		t.Fatalf("cache lost the write: %+v", got)
	}

	ec.Members[0].Restart()
	flush(t, s)
	s2 := open(t, ec.Endpoints(), "/out/")
	if got, _ := s2.Room("r1"); got.Epoch != 3 {
		t.Fatalf("after the outage etcd has %+v, want epoch 3", got)
	}
	if _, ok := s2.User("alice"); !ok {
		t.Fatal("alice lost in the outage")
	}
}

// TestMemberLoss writes through a three-member cluster while one member is
// killed: the other two keep quorum, so no write fails for long.
func TestMemberLoss(t *testing.T) {
	ec := etcdtest.Start(t, 3)
	s := open(t, ec.Endpoints(), "/q/")
	s.PutRoom(store.Room{ID: "r1", Epoch: 1})
	flush(t, s)
	ec.Members[0].Kill()
	for i := range 50 {
		s.PutRoom(store.Room{ID: "r1", Epoch: uint64(2 + i)})
	}
	flush(t, s)
	s2 := open(t, ec.Endpoints()[1:], "/q/")
	if got, _ := s2.Room("r1"); got.Epoch != 51 {
		t.Fatalf("after a member loss etcd has %+v, want epoch 51", got)
	}
}

func openLeader(t *testing.T, endpoints []string, prefix, name string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A lease long enough that a loaded machine renews it in time; the
	// test ends the first leader's by revoking it.
	s, err := OpenLeader(ctx, endpoints, prefix, name, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// TestDeposedLeaderCannotWrite revokes the first leader's lease (what
// etcd does when a leader dies or is cut off for the TTL): a standby takes
// over with the first leader's records, and the first leader's later
// writes are refused, its Lost channel closes, and etcd keeps the new
// leader's records.
func TestDeposedLeaderCannotWrite(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	l1 := openLeader(t, ec.Endpoints(), "/el/", "one")
	l1.PutRoom(store.Room{ID: "r1", Epoch: 1})
	flush(t, l1)
	if name, err := l1.Leader(context.Background()); err != nil || name != "one" {
		t.Fatalf("leader %q %v", name, err)
	}

	standby := make(chan *Store, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := OpenLeader(ctx, ec.Endpoints(), "/el/", "two", 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		standby <- s
	}()
	select {
	case <-standby:
		t.Fatal("the standby leads while the first leader lives")
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	if _, err := l1.cli.Revoke(context.Background(), l1.sess.Lease()); err != nil {
		t.Fatal(err)
	}
	l2 := <-standby
	if l2 == nil {
		t.FailNow()
	}
	t.Cleanup(func() { l2.Close(context.Background()) })
	t.Logf("standby led %v after the lease ended", time.Since(start))
	if r, ok := l2.Room("r1"); !ok || r.Epoch != 1 {
		t.Fatalf("the new leader loaded %+v %v", r, ok)
	}
	l2.PutRoom(store.Room{ID: "r1", Epoch: 2})
	flush(t, l2)

	l1.PutRoom(store.Room{ID: "r1", Epoch: 99})
	select {
	case <-l1.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the deposed leader does not learn it lost")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l1.Flush(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("deposed leader's flush: %v", err)
	}
	if name, err := l2.Leader(ctx); err != nil || name != "two" {
		t.Fatalf("leader %q %v", name, err)
	}
	check := open(t, ec.Endpoints(), "/el/")
	if r, _ := check.Room("r1"); r.Epoch != 2 {
		t.Fatalf("etcd has %+v, want the new leader's epoch 2", r)
	}
}

// TestStandbyFollowsWhileCampaigning: a standby loads the records (more
// than one page of them) before it campaigns and follows every change
// the leader makes after that, deletes included, so that when the leader
// resigns it leads at once with exactly the leader's records, loading
// nothing.
func TestStandbyFollowsWhileCampaigning(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	l1 := openLeader(t, ec.Endpoints(), "/hs/", "one")
	n := loadPage + loadPage/2
	for i := range n {
		l1.PutUser(store.User{Name: fmt.Sprintf("u%05d", i), Token: "t"})
	}
	l1.PutRoom(store.Room{ID: "r1", Epoch: 1, Members: []string{"u00000", "u00001"}})
	l1.PutRoom(store.Room{ID: "r2", Epoch: 1})
	l1.PutRevocation(store.Revocation{Room: "r9", User: "u00003", Before: 1, Until: 2})
	flush(t, l1)

	standby := make(chan *Store, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := OpenLeader(ctx, ec.Endpoints(), "/hs/", "two", 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		standby <- s
	}()
	// The standby campaigns (its election key appears) once it has loaded.
	testkit.WaitFor(t, 20*time.Second, "the standby to campaign", func() bool {
		resp, err := l1.cli.Get(context.Background(), "/hs/leader", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	l1.PutRoom(store.Room{ID: "r1", Epoch: 2, Members: []string{"u00000", "u00001"}})
	if err := l1.DeleteRoom("r2"); err != nil {
		t.Fatal(err)
	}
	if err := l1.DeleteUser("u00002"); err != nil {
		t.Fatal(err)
	}
	l1.PutServer(store.Server{ID: "serv1", Addr: "127.0.0.1:9"})
	l1.PutRequest(store.Request{ID: "q-1", From: "u00000", Code: 5, Room: "r1"})
	if err := l1.DeleteRevocation("r9/u00003"); err != nil {
		t.Fatal(err)
	}
	l1.PutRevocation(store.Revocation{Room: "r2", Before: 3, Until: 4})
	flush(t, l1)
	start := time.Now()
	if err := l1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	l2 := <-standby
	if l2 == nil {
		t.FailNow()
	}
	t.Cleanup(func() { l2.Close(context.Background()) })
	t.Logf("the standby leads %v after the leader resigned, with %d users", time.Since(start), n)
	if u, s, r := l2.Counts(); u != n-1 || s != 1 || r != 1 {
		t.Fatalf("the new leader holds %d users, %d servers, %d rooms; want %d, 1, 1", u, s, r, n-1)
	}
	if r, _ := l2.Room("r1"); r.Epoch != 2 {
		t.Fatalf("r1 %+v, want epoch 2", r)
	}
	if _, ok := l2.User("u00002"); ok {
		t.Fatal("a deleted user came back")
	}
	if reqs, _ := l2.Requests(); len(reqs) != 1 || reqs[0].Room != "r1" {
		t.Fatalf("requests %+v", reqs)
	}
	if revs, _ := l2.Revocations(); len(revs) != 1 || revs[0] != (store.Revocation{Room: "r2", Before: 3, Until: 4}) {
		t.Fatalf("revocations %+v, want the removal of r2 alone", revs)
	}
	// And it writes: the leadership is its own.
	l2.PutRoom(store.Room{ID: "r3", Epoch: 1})
	flush(t, l2)
}

// TestWatchLeader follows the leadership of a prefix: the first leader's
// value and the one it proclaims next, nothing new when a standby campaigns, the standby's value when
// the leader resigns, and "" when nobody leads.
func TestWatchLeader(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leaders, err := WatchLeader(ctx, ec.Endpoints(), "/wl/")
	if err != nil {
		t.Fatal(err)
	}
	next := func(want string) {
		t.Helper()
		select {
		case got := <-leaders:
			if got != want {
				t.Fatalf("leader %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no leader change to %q reported", want)
		}
	}
	next("")
	l1 := openLeader(t, ec.Endpoints(), "/wl/", "one")
	next("one")
	if err := l1.Proclaim(ctx, "one, serving"); err != nil {
		t.Fatal(err)
	}
	next("one, serving")
	standby := make(chan *Store, 1)
	go func() {
		s, err := OpenLeader(ctx, ec.Endpoints(), "/wl/", "two", 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		standby <- s
	}()
	testkit.WaitFor(t, 20*time.Second, "the standby to campaign", func() bool {
		resp, err := l1.cli.Get(ctx, "/wl/leader", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	select {
	case got := <-leaders:
		t.Fatalf("a standby's campaign reported leader %q", got)
	default:
	}
	if err := l1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	next("two")
	l2 := <-standby
	if l2 == nil {
		t.FailNow()
	}
	if err := l2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	next("")
}

// TestKeepCompacted checks that a Store compacts etcd's history, which
// otherwise keeps every old value of every key until etcd's quota refuses
// all writes, and that it keeps the interval before the current revision
// and every record.
func TestKeepCompacted(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	s := open(t, ec.Endpoints(), "/compact/")
	for i := range 20 {
		s.PutUser(store.User{Name: "alice", Token: fmt.Sprint("tok", i)})
		flush(t, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := s.key("users", "alice")
	head, err := s.cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	old := head.Header.Revision - 10
	if _, err := s.cli.Get(ctx, key, clientv3.WithRev(old)); err != nil {
		t.Fatalf("revision %d before compaction: %v", old, err)
	}
	s.KeepCompacted(200*time.Millisecond, testkit.Logger(t))
	start := time.Now()
	testkit.WaitFor(t, 20*time.Second, "an old revision compacted", func() bool {
		_, err := s.cli.Get(ctx, key, clientv3.WithRev(old))
		return errors.Is(err, rpctypes.ErrCompacted)
	})
	t.Logf("revision %d compacted after %v", old, time.Since(start).Round(time.Millisecond))
	// The newest value, in etcd and in a Store that loads afresh, is
	// untouched.
	u, ok := open(t, ec.Endpoints(), "/compact/").User("alice")
	if !ok || u.Token != "tok19" {
		t.Fatalf("after compaction alice = %+v, %v", u, ok)
	}
	// Writes go on, and what was written after the first round stays
	// readable at its revision until an interval has passed.
	s.PutUser(store.User{Name: "bob", Token: "b"})
	flush(t, s)
	r, err := s.cli.Get(ctx, s.key("users", "bob"))
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("bob after compaction: %v %v", r, err)
	}
	if _, err := s.cli.Get(ctx, key, clientv3.WithRev(r.Header.Revision)); err != nil {
		t.Fatalf("the current revision: %v", err)
	}
}

// TestRevocationsWrittenFirst: the revocations of a batch go before its
// other writes, so a batch split over several transactions never leaves a
// room's removal in etcd without the revocation queued with it.
func TestRevocationsWrittenFirst(t *testing.T) {
	s := &Store{prefix: DefaultPrefix}
	v := "x"
	batch := map[string]*string{}
	for i := range 300 {
		batch[s.key("rooms", fmt.Sprintf("r-%d", i))] = nil
		if i%3 == 0 {
			batch[s.key("revocations", fmt.Sprintf("r-%d/", i))] = &v
		}
	}
	keys := s.writeOrder(batch)
	if len(keys) != len(batch) {
		t.Fatalf("%d keys ordered of %d", len(keys), len(batch))
	}
	for i, k := range keys {
		if strings.HasPrefix(k, DefaultPrefix+"revocations/") != (i < 100) {
			t.Fatalf("key %d is %s: revocations are not all first", i, k)
		}
	}
}
