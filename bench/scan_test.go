package bench

import (
	"math"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

func TestDeliverInfo(t *testing.T) {
	tests := []struct {
		name string
		d    proto.Deliver
	}{
		{"zero", proto.Deliver{}},
		{"small", proto.Deliver{Seq: 1, From: "u1", Num: 2, At: 3, Text: "hi"}},
		{"now", proto.Deliver{Seq: 70000, From: "sender", Num: 1 << 33, At: time.Now().UnixNano(), Text: strings.Repeat("x", 1024)}},
		{"negative at", proto.Deliver{Seq: 255, From: "a", Num: 256, At: -5, Text: strings.Repeat("y", 40)}},
		{"max", proto.Deliver{Seq: math.MaxUint64, From: strings.Repeat("z", 32), Num: math.MaxUint64 - 1, At: math.MinInt64, Text: strings.Repeat("q", proto.MaxText)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame, err := wire.AppendFrame(nil, &tt.d)
			if err != nil {
				t.Fatal(err)
			}
			typ, body, _, err := wire.ParseFrame(frame, 0)
			if err != nil || typ != proto.TDeliver {
				t.Fatalf("ParseFrame: type 0x%02x, %v", byte(typ), err)
			}
			seq, num, at, ok := DeliverInfo(body)
			if !ok || seq != tt.d.Seq || num != tt.d.Num || at != tt.d.At {
				t.Errorf("DeliverInfo = %d, %d, %d, %v; want %d, %d, %d, true", seq, num, at, ok, tt.d.Seq, tt.d.Num, tt.d.At)
			}
		})
	}
	for _, bad := range [][]byte{nil, {0x91, 0x01}, {0x81, 0xa2, 'a', 't', 0x90}, {0x81, 0xa2, 'a'}, {0x81, 0xa2, 'a', 't', 0x01, 0x00}} {
		if _, _, _, ok := DeliverInfo(bad); ok {
			t.Errorf("DeliverInfo(% x) ok, want not ok", bad)
		}
	}
}

func TestAppendChat(t *testing.T) {
	for _, size := range []int{0, 1, 31, 32, 64, 255, 256, 1024, proto.MaxText} {
		text := strings.Repeat("t", size)
		frame := AppendChat([]byte("junk"), 42, -7, text)[4:]
		typ, body, n, err := wire.ParseFrame(frame, 0)
		if err != nil || typ != proto.TChat || n != len(frame) {
			t.Fatalf("size %d: ParseFrame: type 0x%02x, n %d of %d, %v", size, byte(typ), n, len(frame), err)
		}
		var c proto.Chat
		if err := wire.Unmarshal(body, &c); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if c.Num != 42 || c.At != -7 || c.Text != text {
			t.Errorf("size %d: decoded num %d at %d text of %d bytes", size, c.Num, c.At, len(c.Text))
		}
	}
	if a := testing.AllocsPerRun(100, func() { _ = AppendChat(make([]byte, 0, 2048)[:0], 1, 2, "hello") }); a > 1 {
		t.Errorf("AppendChat: %.0f allocations, want only the caller's buffer", a)
	}
}

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
