package linkdelay

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestFrameRingFIFOAgainstModel(t *testing.T) {
	const maxF = 100
	r := newFrameRing(1000, maxF, 16)
	type want struct {
		data     []byte
		deadline int64
	}
	var model []want
	rng := rand.New(rand.NewPCG(1, 2))
	var seq int64
	drops := 0
	for step := 0; step < 20000; step++ {
		if rng.IntN(3) != 0 { // push more often than pop, so the ring fills
			buf := r.reserve()
			if buf == nil {
				drops++
				if r.Len() == 0 {
					t.Fatal("reserve failed on an empty ring")
				}
				continue
			}
			if len(buf) != maxF {
				t.Fatalf("reserve gave %d bytes, want %d", len(buf), maxF)
			}
			n := 1 + rng.IntN(maxF)
			seq++
			for i := 0; i < n; i++ {
				buf[i] = byte(seq) + byte(i)
			}
			r.commit(n, seq)
			model = append(model, want{append([]byte(nil), buf[:n]...), seq})
		} else {
			frame, dl, ok := r.peek()
			if ok != (len(model) > 0) {
				t.Fatalf("peek ok=%v with %d modelled frames", ok, len(model))
			}
			if !ok {
				continue
			}
			if dl != model[0].deadline || !bytes.Equal(frame, model[0].data) {
				t.Fatalf("step %d: head frame (deadline %d, %d bytes) differs from model (deadline %d, %d bytes)",
					step, dl, len(frame), model[0].deadline, len(model[0].data))
			}
			r.pop()
			model = model[1:]
		}
		if r.Len() != len(model) {
			t.Fatalf("Len %d, model %d", r.Len(), len(model))
		}
		total := 0
		for _, m := range model {
			total += len(m.data)
		}
		if r.Bytes() != total || total > len(r.data) {
			t.Fatalf("Bytes %d, model %d, capacity %d", r.Bytes(), total, len(r.data))
		}
	}
	if drops == 0 {
		t.Fatal("the ring never filled up; test does not exercise tail drop")
	}
}

func TestFrameRingEntryLimit(t *testing.T) {
	r := newFrameRing(1<<16, 10, 4)
	for i := 0; i < 4; i++ {
		if r.reserve() == nil {
			t.Fatalf("reserve %d failed", i)
		}
		r.commit(1, int64(i))
	}
	if r.reserve() != nil {
		t.Fatal("reserve succeeded beyond the entry limit")
	}
	r.pop()
	if r.reserve() == nil {
		t.Fatal("reserve failed after pop")
	}
}

func TestFrameRingMinimumSize(t *testing.T) {
	r := newFrameRing(1, 50, 8)
	if len(r.data) < 2*50+1 {
		t.Fatalf("ring of %d bytes cannot hold two maximal frames", len(r.data))
	}
	for i := 0; i < 2; i++ {
		if r.reserve() == nil {
			t.Fatalf("reserve %d failed", i)
		}
		r.commit(50, 0)
	}
}

func TestFrameRingNoAllocs(t *testing.T) {
	r := newFrameRing(1<<20, 1500, 1024)
	allocs := testing.AllocsPerRun(1000, func() {
		for i := 0; i < 10; i++ {
			b := r.reserve()
			b[0] = 1
			r.commit(100, 1)
		}
		for i := 0; i < 10; i++ {
			_, _, _ = r.peek()
			r.pop()
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per run, want 0", allocs)
	}
}
