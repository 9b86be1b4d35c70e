package central

import (
	"testing"
	"time"
)

// TestQuietLog: a kind of routine event writes logBurst lines a window,
// then none, and the first line of a later window says how many were left
// out (40,000 registrations wrote 40,000 lines in 14 s before: black-box
// sweep, 2026-12-04).
func TestQuietLog(t *testing.T) {
	var q quietLog
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	lines := 0
	for i := range 1000 {
		if ok, hushed := q.allow(t0.Add(time.Duration(i) * time.Millisecond)); ok {
			lines++
			if hushed != 0 {
				t.Fatalf("line %d: %d left out within the first window", lines, hushed)
			}
		}
	}
	if lines != logBurst {
		t.Fatalf("%d lines for 1,000 events in a second, want %d", lines, logBurst)
	}
	ok, hushed := q.allow(t0.Add(logWindow))
	if !ok || hushed != 1000-logBurst {
		t.Fatalf("first event of the next window: ok %v, %d left out before it; want true, %d", ok, hushed, 1000-logBurst)
	}
	if got := q.attrs(hushed, "user", "bob"); len(got) != 4 || got[2] != "not_logged_before" {
		t.Fatalf("attrs %v", got)
	}
	if got := q.attrs(0, "user", "bob"); len(got) != 2 {
		t.Fatalf("attrs with nothing left out: %v", got)
	}
}
