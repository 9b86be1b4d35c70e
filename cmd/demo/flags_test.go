package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckFlags: a value the demo cannot run with is refused before any
// process starts, naming the flag; good values pass.
func TestCheckFlags(t *testing.T) {
	bin := t.TempDir()
	for _, p := range []string{"central", "chatserver", "chat"} {
		if err := os.WriteFile(filepath.Join(bin, p), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkFlags(bin, 10, 4*time.Second, "", nil); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, c := range []struct {
		name  string
		bin   string
		rate  float64
		hold  time.Duration
		dash  string
		rest  []string
		wants string
	}{
		{"zero rate", bin, 0, 4 * time.Second, "", nil, "-rate 0"},
		{"negative rate", bin, -3, 4 * time.Second, "", nil, "-rate -3"},
		{"NaN rate", bin, math.NaN(), 4 * time.Second, "", nil, "-rate NaN"},
		{"huge rate", bin, 1e6, 4 * time.Second, "", nil, "-rate"},
		{"zero hold", bin, 10, 0, "", nil, "-hold 0s"},
		{"bad dashboard", bin, 10, 4 * time.Second, "nohost", nil, "-dashboard"},
		{"no binaries", t.TempDir(), 10, 4 * time.Second, "", nil, "no central there"},
		{"stray argument", bin, 10, 4 * time.Second, "", []string{"x"}, "unexpected arguments"},
	} {
		err := checkFlags(c.bin, c.rate, c.hold, c.dash, c.rest)
		if err == nil || !strings.Contains(err.Error(), c.wants) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.wants)
		}
	}
}
