package chaos

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

// waitingFor lists the scenarios that fail on main today, each with the
// fix it waits for (the engineer's branch that carries it). The short run
// in make test skips them; make chaos runs them all. Re-enable one by
// deleting its line once its fix has merged and it passes.
var waitingFor = map[string]string{
	// A member partitioned from Central while its room moves, its old
	// server still up, is never told: the room splits for good
	// (reliability review finding 1).
	"partition-during-move": "converge (placement on Hello and on a stale heartbeat)",
	// Central forgets a room whose server dies while Central is down: the
	// members stay on the dead server and their messages wait unreported.
	"kill-server-central-down": "converge (Central rebuilds rooms after a restart)",
	// A client restarted with its token is never told its room's
	// placement (reliability review finding 1).
	"client-kill-restart": "converge (Central sends the current placement on Hello)",
	// The same, for the sender; then its numbering restarts at 1 and the
	// receivers drop its messages as duplicates (finding 4).
	"member-restart-midstream": "converge (placement on Hello), then delivery (sender incarnations)",
	// One member's Unreachable and a 500 ms echo check evict every room
	// from a live but slow server (finding 7).
	"slow-server-checks": "converge (more than one failed check before down)",
	// A reader at 1/10 of the send rate is cut off and told it missed
	// hundreds of messages (finding 5): no back-pressure reaches the
	// senders.
	"slow-reader": "delivery (flow control before cut-off)",
}

// bins builds central, chatserver and chat once per test run, so the
// harness runs what this tree holds whatever make built, and returns their
// directory.
func bins(t *testing.T) string {
	testkit.BuildOnce(t, "nearchat/cmd/central")
	testkit.BuildOnce(t, "nearchat/cmd/chat")
	return filepath.Dir(testkit.BuildOnce(t, "nearchat/cmd/chatserver"))
}

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// TestScenarios runs every scenario once (seed $CHAOS_SEED, default 1)
// except those waiting for a fix, and fails on any violation.
func TestScenarios(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Bin = bins(t)
	seed := uint64(1)
	if s, err := strconv.ParseUint(os.Getenv("CHAOS_SEED"), 10, 64); err == nil {
		seed = s
	}
	for _, sc := range Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			if why, ok := waitingFor[sc.Name]; ok {
				t.Skipf("fails on main today; waits for %s (make chaos runs it)", why)
			}
			cfg.Dir = t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r := RunScenario(ctx, cfg, sc, seed, t.Logf)
			if !r.Pass {
				t.Error(r.Line())
			}
		})
	}
}

// TestWaitingForNamesScenarios keeps the skip list honest.
func TestWaitingForNamesScenarios(t *testing.T) {
	for name := range waitingFor {
		if _, ok := Find(name); !ok {
			t.Errorf("waitingFor names %q, which is no scenario", name)
		}
	}
}
