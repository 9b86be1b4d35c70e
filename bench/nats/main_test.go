package main

import (
	"os/exec"
	"slices"
	"testing"
)

// TestChildPinnedApartOncePinned: the server child is pinned to
// -server-cpu when the load generator has pinned itself (pinSelf), though
// runtime.NumCPU then says 1. Before, it was not pinned at all and ran
// on the load generator's CPU.
func TestChildPinnedApartOncePinned(t *testing.T) {
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("no taskset")
	}
	defer func(f func() int) { numCPU = f }(numCPU)
	numCPU = func() int { return 1 } // what a process pinned to one CPU sees
	tests := []struct {
		name   string
		pinned string // pinnedEnv
		cpus   string
		want   bool
	}{
		{"pinned by pinSelf", "1", "0", true},
		{"not pinned, one CPU", "", "0", false},
		{"no -server-cpu", "1", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(pinnedEnv, tt.pinned)
			cmd := childCommand([]string{"/bin/server", "-serve", "nearchat"}, tt.cpus)
			i := slices.Index(cmd.Args, "-c")
			got := i >= 0 && i+1 < len(cmd.Args) && cmd.Args[i+1] == tt.cpus
			if got != tt.want {
				t.Errorf("command %q: pinned to %q is %v, want %v", cmd.Args, tt.cpus, got, tt.want)
			}
			if last := cmd.Args[len(cmd.Args)-3:]; !slices.Equal(last, []string{"/bin/server", "-serve", "nearchat"}) {
				t.Errorf("command %q does not end with the child's arguments", cmd.Args)
			}
		})
	}
}
