package bench

import (
	"math"
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Count() != 0 {
		t.Fatal("empty histogram reports values")
	}
	for i := 1; i <= 100_000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	h.Record(-time.Second)
	tests := []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}, {1, 100 * time.Millisecond}}
	for _, tt := range tests {
		got := h.Quantile(tt.q)
		if rel := math.Abs(float64(got-tt.want)) / float64(tt.want); rel > 0.035 {
			t.Errorf("Quantile(%v) = %v, want %v within 3.5%% (off by %.1f%%)", tt.q, got, tt.want, 100*rel)
		}
	}
	if h.Max() != 100*time.Millisecond {
		t.Errorf("Max = %v", h.Max())
	}
	var m Histogram
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 2*h.Count() || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Errorf("merged: count %d, p50 %v; want %d, %v", m.Count(), m.Quantile(0.5), 2*h.Count(), h.Quantile(0.5))
	}
	for v := uint64(0); v < 1<<20; v = v*9/8 + 1 {
		i := histIndex(v)
		if got := histValue(i); histIndex(got) != i {
			t.Fatalf("bucket %d of %d has midpoint %d in bucket %d", i, v, got, histIndex(got))
		}
	}
	h.Record(time.Hour)
	if i := histIndex(uint64(time.Hour)); i != histBuckets-1 {
		t.Errorf("an hour lands in bucket %d, want the last (%d)", i, histBuckets-1)
	}
}
