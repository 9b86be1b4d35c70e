package mono

import (
	"testing"
	"time"
)

func TestNowAdvancesAndIsNeverZero(t *testing.T) {
	a := Now()
	time.Sleep(time.Millisecond) // elapsed time is what is measured
	b := Now()
	if a <= 0 || b-a < int64(time.Millisecond) {
		t.Fatalf("Now %d then %d, want positive readings at least 1 ms apart", a, b)
	}
}
