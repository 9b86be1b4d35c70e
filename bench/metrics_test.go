package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
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
// (NEARCHAT_BENCH_ROUNDS and NEARCHAT_BENCH_ROUND tune the pairs of
// rounds, default 16 pairs of 1s rounds per room size; NEARCHAT_BENCH_MEMBERS
// picks one room size instead of 16 and 256). msgs/s and p99 are medians
// over the rounds.
func TestMetricsOverhead(t *testing.T) {
	if os.Getenv(benchEnv) == "" {
		t.Skipf("set %s=1 to run the metrics overhead comparison", benchEnv)
	}
	rounds, round := 16, time.Second
	if v, err := strconv.Atoi(os.Getenv("NEARCHAT_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if v, err := time.ParseDuration(os.Getenv("NEARCHAT_BENCH_ROUND")); err == nil && v > 0 {
		round = v
	}
	fmt.Printf("Fan-out with metrics on and off, one sender, 64 B messages, 64 in flight, %d pairs of rounds of %v each (ABBA order).\n", rounds, round)
	fmt.Printf("The ratio is the median over the pairs of on/off, each pair run back to back, so that the load of a shared machine cancels out.\n\n")
	fmt.Printf("CPU is the whole process's (server and the benchmark's reader) user+system time per 1000 deliveries.\n\n")
	fmt.Println("| members | off msgs/s | on msgs/s | on / off (median of pairs) | pair ratios p25-p75 | CPU µs/1000 off / on | CPU on / off (median of pairs) | off p99 | on p99 | allocs/msg off / on |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	sizes := []int{16, 256}
	if v, err := strconv.Atoi(os.Getenv("NEARCHAT_BENCH_MEMBERS")); err == nil && v > 1 {
		sizes = []int{v}
	}
	for _, members := range sizes {
		sessions := [2]*Session{overheadSession(t, true, members), overheadSession(t, false, members)} // 0: on, 1: off
		var rates, p99s, cpus [2][]float64
		var allocs [2]float64
		var ratios, cpuRatios []float64
		for i := range rounds {
			var pair, cpu [2]float64
			for j := range 2 {
				k := j
				if i%2 == 1 {
					k = 1 - j // off first in odd pairs
				}
				before := cpuTime()
				c, err := measureFor(sessions[k], round)
				if err != nil {
					t.Fatalf("members=%d: %v", members, err)
				}
				cpu[k] = float64((cpuTime() - before).Microseconds()) * 1000 / float64(max(c.res.Delivered, 1))
				cpus[k] = append(cpus[k], cpu[k])
				pair[k] = c.res.MsgsPerSec()
				rates[k] = append(rates[k], pair[k])
				p99s[k] = append(p99s[k], float64(c.res.Latency.Quantile(0.99)))
				allocs[k] += c.allocsPerMsg / float64(rounds)
			}
			ratios = append(ratios, pair[0]/pair[1])
			cpuRatios = append(cpuRatios, cpu[0]/cpu[1])
			t.Logf("members=%d pair %d: on %.0f, off %.0f msgs/s, on/off %.3f", members, i, pair[0], pair[1], pair[0]/pair[1])
		}
		q := func(v []float64, p float64) float64 {
			v = slices.Clone(v)
			slices.Sort(v)
			return v[int(p*float64(len(v)-1)+0.5)]
		}
		ratio := q(ratios, 0.5)
		fmt.Printf("| %d | %.0f | %.0f | %.3f | %.3f-%.3f | %.1f / %.1f | %.3f | %v | %v | %.1f / %.1f |\n", members,
			q(rates[1], 0.5), q(rates[0], 0.5), ratio, q(ratios, 0.25), q(ratios, 0.75),
			q(cpus[1], 0.5), q(cpus[0], 0.5), q(cpuRatios, 0.5),
			time.Duration(q(p99s[1], 0.5)).Round(time.Microsecond), time.Duration(q(p99s[0], 0.5)).Round(time.Microsecond),
			allocs[1], allocs[0])
		// No tight bound on a shared machine: this only catches a gross
		// regression; the figures above are the result.
		if ratio < 0.8 {
			t.Errorf("members=%d: metrics on deliver %.2f of metrics off", members, ratio)
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
