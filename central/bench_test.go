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

	"nearchat/central/store"
	"nearchat/central/store/etcdstore"
	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/selection"
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
