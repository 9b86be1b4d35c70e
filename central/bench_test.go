package central

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nearchat/central/store"
	"nearchat/central/store/etcdstore"
	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/selection"
	"nearchat/pkg/testkit"
)

// BenchmarkScan times one relocation scan over 100,000 two-member rooms and
// 64 servers, every room outside its dwell time (so every room is fully
// evaluated) and already on its best server (so the steady state is timed,
// not a burst of moves).
func BenchmarkScan(b *testing.B) { benchStores(b, benchScan) }

// benchStores runs bench with Central's records in memory, then in a real
// etcd (one member on loopback; skipped when etcd is not installed).
func benchStores(b *testing.B, bench func(*testing.B, Config)) {
	b.Run("store=memory", func(b *testing.B) { bench(b, testConfig(b)) })
	b.Run("store=etcd", func(b *testing.B) {
		ec := etcdtest.Start(b, 1)
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := etcdstore.Open(c, ec.Endpoints(), etcdstore.DefaultPrefix)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close(context.Background())
		cfg := testConfig(b)
		cfg.Store = st
		bench(b, cfg)
		b.ReportMetric(float64(st.Pending()), "etcd-pending-keys")
	})
}

func benchScan(b *testing.B, cfg Config) {
	const servers, rooms = 64, 100_000
	cfg.Logger = nil
	clk := newFakeClock()
	cfg.Clock = clk.Now
	c, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	rnd := rand.New(rand.NewPCG(1, 2))
	now := clk.Now()
	c.mu.Lock()
	for i := range servers {
		c.addServerLocked(store.Server{ID: fmt.Sprintf("serv%d", i), Addr: "127.0.0.1:1", LastSeen: now})
	}
	for i := range 2 * rooms {
		u := c.newUserLocked(fmt.Sprintf("u%d", i), fmt.Sprintf("t%d", i), now)
		u.lat = map[string]selection.Sample{}
		for s := range servers {
			u.lat[fmt.Sprintf("serv%d", s)] = selection.Sample{Median: time.Duration(5+rnd.IntN(200)) * time.Millisecond, Count: 5}
		}
	}
	c.syncSelLocked()
	c.refreshDirtyLocked()
	for i := range rooms {
		r := &room{id: fmt.Sprintf("r%d", i), epoch: 1, created: now, lastMove: now.Add(-time.Hour),
			members: []*user{c.users[fmt.Sprintf("u%d", 2*i)], c.users[fmt.Sprintf("u%d", 2*i+1)]}}
		c.refreshMatrix(r)
		ch, err := selection.ChooseMatrix(c.sel, r.m, c.rnd)
		if err != nil {
			b.Fatal(err)
		}
		r.srv = c.servers[ch.Index]
		c.insertRoomLocked(r)
	}
	if moved := c.scanLocked(); moved != 0 {
		b.Fatalf("warm-up scan moved %d rooms", moved)
	}
	c.mu.Unlock()
	// Settle the garbage of the setup, so that the timed loop measures
	// the scan rather than a collector sweeping 200,000 fresh maps.
	runtime.GC()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		c.mu.Lock()
		c.scanLocked()
		c.mu.Unlock()
	}
	// Wall time suffers from whatever else shares the machine; the CPU
	// time the process spent is reported beside it.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/scan")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/scan")
	b.ReportMetric(float64(rooms), "rooms")
}

// cpuTime returns the user+system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMatch measures complete chat requests (Request with a key, as
// the client library sends it, ACK_CONN, REQ_SENT, Incoming, Answer,
// REQ_ACCEPTED, Assign to both, AssignAck) over the real control port, with
// 64 pairs of clients working concurrently.
func BenchmarkMatch(b *testing.B) { benchStores(b, benchMatch) }

func benchMatch(b *testing.B, cfg Config) {
	const pairs = 64
	cfg.Logger = nil
	h := startCentral(b, cfg)
	h.addServer(b, "serv1")
	h.addServer(b, "serv2")
	bots, err := loadClients(ctx(b), pooledAPI(h.c.RESTAddr()), h.c.ControlAddr(), "m", 2*pairs)
	defer closeBots(bots)
	if err != nil {
		b.Fatal(err)
	}
	// Each pair leaves its room right away so that Central's room count
	// stays flat however long the benchmark runs.
	work := make(chan struct{})
	errs := make([]error, pairs)
	var wg sync.WaitGroup
	for p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, z := bots[2*p], bots[2*p+1]
			for range work {
				room, err := pair(a, z)
				if err == nil {
					err = errors.Join(a.leave(room), z.leave(room))
				}
				if err != nil {
					errs[p] = err
					for range work {
					}
					return
				}
			}
		}()
	}
	start, cpu0 := time.Now(), cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	el := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "matches/s")
	// The CPU this process (Central and the bots, not an etcd server)
	// spent per match: steadier than the rate on a shared machine.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/match")
}

// BenchmarkTakeover times a standby Central's takeover at scale: a leader
// on etcd holds 50,000 two-member rooms (100,000 users, 8 servers), a
// standby campaigns on the same prefix, the leader resigns, and the
// standby's store returns leading (store-ms) and its Central is built
// (central-ms). Run it with -benchtime 1x: each iteration writes the
// records afresh.
func BenchmarkTakeover(b *testing.B) {
	const rooms, servers = 50_000, 8
	for b.Loop() {
		b.StopTimer()
		ec := etcdtest.Start(b, 1)
		c0, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		leader, err := etcdstore.OpenLeader(c0, ec.Endpoints(), "/takeover/", "one", 2*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		lat := map[string]selection.Sample{}
		for i := range servers {
			id := fmt.Sprintf("serv%d", i)
			leader.PutServer(store.Server{ID: id, Addr: "127.0.0.1:1", LastSeen: now})
			lat[id] = selection.Sample{Median: time.Duration(10+i) * time.Millisecond, Count: 5}
		}
		for i := range 2 * rooms {
			leader.PutUser(store.User{Name: fmt.Sprintf("u%d", i), Token: fmt.Sprintf("tok-%032d", i), Latency: lat, Registered: now})
		}
		for i := range rooms {
			leader.PutRoom(store.Room{ID: fmt.Sprintf("r-%06d", i), Server: fmt.Sprintf("serv%d", i%servers), Epoch: 1,
				Members: []string{fmt.Sprintf("u%d", 2*i), fmt.Sprintf("u%d", 2*i+1)}, Created: now, LastMove: now})
		}
		if err := leader.Flush(c0); err != nil {
			b.Fatal(err)
		}
		won := make(chan *etcdstore.Store, 1)
		go func() {
			s, err := etcdstore.OpenLeader(c0, ec.Endpoints(), "/takeover/", "two", 2*time.Second)
			if err != nil {
				b.Error(err)
			}
			won <- s
		}()
		// The standby campaigns (a second election key) once it has loaded.
		peek, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), DialTimeout: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		testkit.WaitFor(b, 5*time.Minute, "the standby to campaign", func() bool {
			resp, err := peek.Get(c0, "/takeover/leader", clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err == nil && resp.Count == 2
		})
		peek.Close()
		b.StartTimer()
		start := time.Now()
		if err := leader.Close(c0); err != nil {
			b.Fatal(err)
		}
		st := <-won
		if st == nil {
			b.FailNow()
		}
		stored := time.Since(start)
		cfg := testConfig(b)
		cfg.Logger, cfg.Store = nil, st
		c, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		built := time.Since(start)
		b.StopTimer()
		c.Close()
		st.Close(c0)
		cancel()
		b.ReportMetric(float64(stored.Microseconds())/1000, "store-ms")
		b.ReportMetric(float64(built.Microseconds())/1000, "central-ms")
		b.StartTimer()
	}
}
