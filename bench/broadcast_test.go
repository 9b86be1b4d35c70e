package bench

import (
	"fmt"
	"testing"
)

var (
	benchMembers = []int{2, 16, 256, 4096}
	benchSizes   = []struct {
		name  string
		bytes int
	}{{"64B", 64}, {"1KiB", 1024}}
)

// BenchmarkBroadcast measures fan-out over loopback TCP: one sender, the
// rest of the room receiving, 64 messages in flight. Each op is one message
// delivered to every other member. allocs/op counts the whole process
// (server and the allocation-free client side) per message.
func BenchmarkBroadcast(b *testing.B) {
	for _, kind := range []string{Gnet, Baseline} {
		for _, n := range benchMembers {
			// Joining is quadratic in the room size (every join is announced
			// to every member), so the sizes share one room.
			b.Run(fmt.Sprintf("server=%s/members=%d", kind, n), func(b *testing.B) {
				s := openSession(b, kind, Workload{Members: n})
				for _, size := range benchSizes {
					b.Run("size="+size.name, func(b *testing.B) { benchBroadcast(b, s, size.bytes) })
				}
			})
		}
	}
}

func benchBroadcast(b *testing.B, s *Session, size int) {
	if err := s.SetSize(size); err != nil {
		b.Fatal(err)
	}
	warm(b, s)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Send(); err != nil {
			b.Fatal(err)
		}
	}
	// The last Window messages are still on their way when b.Loop stops
	// the timer; waiting for them inside the timed region keeps ns/op,
	// allocs/op and msgs/s about the same messages, which matters at
	// members=4096 where b.N is small.
	b.StartTimer()
	if err := s.Drain(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	r := s.Result()
	b.ReportMetric(r.MsgsPerSec(), "msgs/s")
	b.ReportMetric(float64(r.Latency.Quantile(0.50)), "p50-ns")
	b.ReportMetric(float64(r.Latency.Quantile(0.99)), "p99-ns")
	b.ReportMetric(float64(r.Latency.Quantile(0.999)), "p999-ns")
}

// openSession starts a server of kind and a session on it, both torn down
// in Cleanup (session first).
func openSession(tb testing.TB, kind string, w Workload) *Session {
	tb.Helper()
	tgt, err := StartServer(kind, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := tgt.Close(); err != nil {
			tb.Errorf("close %s: %v", kind, err)
		}
	})
	s, err := Open(tgt.Addr(), w)
	if err != nil {
		tb.Fatalf("%s: %v", kind, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// warm sends a few windows' worth of messages so connections, buffers and
// pools are in steady state, then starts a fresh measurement.
func warm(tb testing.TB, s *Session) {
	tb.Helper()
	for range 4 * cap(s.tokens) {
		if err := s.Send(); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.Drain(); err != nil {
		tb.Fatal(err)
	}
	s.Reset()
}
