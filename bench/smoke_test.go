package bench

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"nearchat/pkg/testkit"
)

// TestBroadcastSmoke runs the benchmark harness briefly against both
// servers so it cannot rot between benchmark runs: every message must reach
// every other member, in sequence order, with a latency recorded for each.
func TestBroadcastSmoke(t *testing.T) {
	defer testkit.VerifyNone(t, goleak.IgnoreCurrent())
	const members, msgs = 16, 300
	for _, kind := range []string{Gnet, Baseline} {
		t.Run("server="+kind, func(t *testing.T) {
			s := openSession(t, kind, Workload{Members: members, Size: 64, Window: 16})
			warm(t, s)
			for range msgs {
				if err := s.Send(); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Drain(); err != nil {
				t.Fatal(err)
			}
			r := s.Result()
			if r.Messages != msgs || r.Delivered != msgs*(members-1) {
				t.Errorf("%d messages completed, %d delivered; want %d and %d", r.Messages, r.Delivered, msgs, msgs*(members-1))
			}
			p50, p99 := r.Latency.Quantile(0.5), r.Latency.Quantile(0.99)
			if p50 <= 0 || p99 < p50 || p99 > 30*time.Second {
				t.Errorf("latency p50 %v p99 %v: want 0 < p50 <= p99 < 30s", p50, p99)
			}
			if r.MsgsPerSec() <= 0 {
				t.Errorf("throughput %.0f msgs/s", r.MsgsPerSec())
			}
			t.Logf("%s: %.0f msgs/s, p50 %v, p99 %v, p999 %v", kind, r.MsgsPerSec(), p50, p99, r.Latency.Quantile(0.999))
		})
	}
}

// TestOpenRejects checks the harness refuses workloads it cannot run and
// reports a server that is not there.
func TestOpenRejects(t *testing.T) {
	tests := []struct {
		name string
		addr string
		w    Workload
	}{
		{"one member", "127.0.0.1:1", Workload{Members: 1}},
		{"oversized text", "127.0.0.1:1", Workload{Members: 2, Size: 1 << 20}},
		{"nobody listening", "127.0.0.1:1", Workload{Members: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.addr, tt.w)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
		})
	}
	if _, err := StartServer("nope", nil); err == nil {
		t.Error("StartServer accepted an unknown kind")
	}
}
