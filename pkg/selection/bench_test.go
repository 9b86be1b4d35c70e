package selection

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// Rooms in the benchmarks sit on their best server with their last move an
// hour ago: the steady state of a relocation scan, where every server is
// scored but nothing moves.

func BenchmarkDecide(b *testing.B) {
	for _, k := range []int{2, 16} {
		b.Run(fmt.Sprintf("servers=64/members=%d", k), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, uint64(k)))
			servers, members := randomRoom(r, 64, k)
			best, err := Choose(servers, members, r)
			if err != nil {
				b.Fatal(err)
			}
			p, now := DefaultPolicy(), time.Now()
			last := now.Add(-time.Hour)
			b.ReportAllocs()
			for b.Loop() {
				d, _ := p.Decide(best.ServerID, last, now, servers, members, r)
				if d.Move {
					b.Fatal("steady-state room moved")
				}
			}
		})
	}
}

func BenchmarkDecideMatrix(b *testing.B) {
	for _, k := range []int{2, 16} {
		b.Run(fmt.Sprintf("servers=64/members=%d", k), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, uint64(k)))
			servers, members := randomRoom(r, 64, k)
			m := matrixOf(servers, members)
			best, err := ChooseMatrix(servers, m, r)
			if err != nil {
				b.Fatal(err)
			}
			p, now := DefaultPolicy(), time.Now()
			last := now.Add(-time.Hour)
			b.ReportAllocs()
			for b.Loop() {
				d, _ := p.DecideMatrix(best.Index, last, now, servers, m, r)
				if d.Move {
					b.Fatal("steady-state room moved")
				}
			}
		})
	}
}

const (
	scanRooms   = 100_000
	scanServers = 64
	scanMembers = 2
)

// scanRoom is what Central would keep per room for the scan.
type scanRoom struct {
	m        Matrix
	members  []Member
	cur      int
	curID    string
	lastMove time.Time
}

// scanFixture builds 100,000 two-member rooms, each with its own latency
// vectors, and places every room on its best server.
func scanFixture(b *testing.B, withMaps bool) ([]Server, []scanRoom) {
	b.Helper()
	servers := make([]Server, scanServers)
	for i := range servers {
		servers[i] = Server{ID: fmt.Sprintf("serv%d", i+1), Up: true}
	}
	markFlags(servers)
	r := rand.New(rand.NewPCG(7, 7))
	last := time.Now().Add(-time.Hour)
	rooms := make([]scanRoom, scanRooms)
	for i := range rooms {
		room := &rooms[i]
		room.m = NewMatrix(scanServers, scanMembers)
		for s := range room.m.RTT {
			room.m.RTT[s] = randRTT(r)
		}
		if withMaps {
			room.members = make([]Member, scanMembers)
			for j := range room.members {
				v := make(map[string]Sample, scanServers)
				for s := range servers {
					v[servers[s].ID] = Sample{Median: room.m.At(j, s), Spread: ms, Count: 5}
				}
				room.members[j] = Member{User: fmt.Sprintf("u%d-%d", i, j), RTT: v}
			}
		}
		best, err := ChooseMatrix(servers, room.m, r)
		if err != nil {
			b.Fatal(err)
		}
		room.cur, room.curID, room.lastMove = best.Index, best.ServerID, last
	}
	return servers, rooms
}

// BenchmarkScan times one relocation scan: Decide for 100,000 two-member
// rooms over 64 servers. With workers=N the rooms are split into N
// contiguous shards, one per long-lived worker goroutine with its own random
// source, which is how Central should run the scan on a multi-core machine.
func BenchmarkScan(b *testing.B) {
	workerCounts := []int{1}
	if procs := runtime.GOMAXPROCS(0); procs > 1 {
		workerCounts = append(workerCounts, procs)
	}
	for _, api := range []string{"matrix", "map"} {
		var servers []Server
		var rooms []scanRoom
		for _, w := range workerCounts {
			if api == "map" && w > 1 {
				continue // one figure is enough to show why the scan uses Matrix
			}
			b.Run(fmt.Sprintf("api=%s/workers=%d", api, w), func(b *testing.B) {
				if rooms == nil {
					servers, rooms = scanFixture(b, api == "map")
				}
				p := DefaultPolicy()
				now := time.Now()
				moves := make([]int, w)
				scan := func(wi int, r *rand.Rand) {
					lo, hi := wi*len(rooms)/w, (wi+1)*len(rooms)/w
					n := 0
					for i := lo; i < hi; i++ {
						room := &rooms[i]
						var d Decision
						if api == "matrix" {
							d, _ = p.DecideMatrix(room.cur, room.lastMove, now, servers, room.m, r)
						} else {
							d, _ = p.Decide(room.curID, room.lastMove, now, servers, room.members, r)
						}
						if d.Move {
							n++
						}
					}
					moves[wi] += n
				}
				start := make([]chan struct{}, w)
				done := make(chan struct{}, w)
				for wi := range w {
					start[wi] = make(chan struct{})
					r := rand.New(rand.NewPCG(uint64(wi), 1))
					go func() {
						for range start[wi] {
							scan(wi, r)
							done <- struct{}{}
						}
					}()
				}
				b.ReportAllocs()
				for b.Loop() {
					for _, c := range start {
						c <- struct{}{}
					}
					for range w {
						<-done
					}
				}
				for _, c := range start {
					close(c)
				}
				for _, n := range moves {
					if n != 0 {
						b.Fatalf("%d steady-state rooms moved", n)
					}
				}
				b.ReportMetric(float64(b.Elapsed())/float64(b.N)/1e6, "ms/scan")
			})
		}
	}
}
