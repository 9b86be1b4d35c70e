package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nearchat/chatserver"
)

// TestMetricsOverhead compares fan-out with the chat server's metrics on
// (counters recorded on the event loops, and a Prometheus scrape every
// second) against metrics off, in rounds that alternate between the two
// servers so that the machine's background load falls on both alike. It
// prints both figures and their ratio. Run it with
//
//	NEARCHAT_BENCH=1 go test -run TestMetricsOverhead -v ./bench/
//
// (NEARCHAT_BENCH_ROUNDS and NEARCHAT_BENCH_ROUND tune the rounds, default
// 6 of 2s per server and room size; NEARCHAT_BENCH_MEMBERS picks one room
// size instead of 16 and 256).
func TestMetricsOverhead(t *testing.T) {
	if os.Getenv(benchEnv) == "" {
		t.Skipf("set %s=1 to run the metrics overhead comparison", benchEnv)
	}
	rounds, round := 6, 2*time.Second
	if v, err := strconv.Atoi(os.Getenv("NEARCHAT_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if v, err := time.ParseDuration(os.Getenv("NEARCHAT_BENCH_ROUND")); err == nil && v > 0 {
		round = v
	}
	fmt.Printf("Fan-out with metrics on and off, one sender, 64 B messages, 64 in flight, %d alternating rounds of %v each.\n\n", rounds, round)
	fmt.Println("| members | off msgs/s | on msgs/s | on / off | off p99 | on p99 | allocs/msg off / on |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|")
	sizes := []int{16, 256}
	if v, err := strconv.Atoi(os.Getenv("NEARCHAT_BENCH_MEMBERS")); err == nil && v > 1 {
		sizes = []int{v}
	}
	for _, members := range sizes {
		on, off := overheadSession(t, true, members), overheadSession(t, false, members)
		var sums [2]struct {
			delivered uint64
			elapsed   time.Duration
			p99       []time.Duration
			allocs    float64
		}
		for i := range 2 * rounds {
			k := i % 2 // 0: on, 1: off; on goes first in even rounds, off in odd ones
			if (i/2)%2 == 1 {
				k = 1 - k
			}
			s := []*Session{on, off}[k]
			c, err := measureFor(s, round)
			if err != nil {
				t.Fatalf("members=%d: %v", members, err)
			}
			sums[k].delivered += c.res.Delivered
			sums[k].elapsed += c.res.Elapsed
			sums[k].p99 = append(sums[k].p99, time.Duration(c.res.Latency.Quantile(0.99)))
			sums[k].allocs += c.allocsPerMsg / float64(rounds)
			t.Logf("members=%d round %d metrics=%v: %.0f msgs/s, p99 %v", members, i/2, k == 0, c.res.MsgsPerSec(),
				time.Duration(c.res.Latency.Quantile(0.99)).Round(time.Microsecond))
		}
		rate := func(k int) float64 { return float64(sums[k].delivered) / sums[k].elapsed.Seconds() }
		median := func(k int) time.Duration {
			slices.Sort(sums[k].p99)
			return sums[k].p99[len(sums[k].p99)/2]
		}
		fmt.Printf("| %d | %.0f | %.0f | %.3f | %v | %v | %.1f / %.1f |\n", members, rate(1), rate(0), rate(0)/rate(1),
			median(1).Round(time.Microsecond), median(0).Round(time.Microsecond), sums[1].allocs, sums[0].allocs)
		// No tight bound on a shared machine: this only catches a gross
		// regression; the figures above are the result.
		if r := rate(0) / rate(1); r < 0.8 {
			t.Errorf("members=%d: metrics on deliver %.2f of metrics off", members, r)
		}
	}
}

// overheadSession starts a chat server with metrics on (and a scraper) or
// off, and a session of members on it, all torn down in Cleanup.
func overheadSession(t *testing.T, metrics bool, members int) *Session {
	t.Helper()
	cfg := chatserver.DefaultConfig()
	cfg.Listen, cfg.ID = "127.0.0.1:0", fmt.Sprintf("bench-metrics-%v", metrics)
	cfg.MaxMembers = 10_000
	cfg.Metrics = metrics
	srv, err := chatserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { srv.Close(); cancel(); <-done })
	if metrics {
		reg := prometheus.NewRegistry()
		reg.MustRegister(srv.Collector())
		go func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if _, err := reg.Gather(); err != nil {
						t.Errorf("scrape: %v", err)
					}
				}
			}
		}()
	}
	s, err := Open(srv.Addr(), Workload{Members: members, Size: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
