package chaos

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

// waitingFor lists the scenarios that fail on main today, each with the
// fix it waits for (the engineer's branch that carries it). The short run
// in make test skips them; make chaos runs them all. Re-enable one by
// deleting its line once its fix has merged and it passes.
var waitingFor = map[string]string{}

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
	cfg.Hold = 12 * time.Second // make chaos holds a minute
	seed := uint64(1)
	if s, err := strconv.ParseUint(os.Getenv("CHAOS_SEED"), 10, 64); err == nil {
		seed = s
	}
	// Three clusters at a time keep the short run near two minutes; make
	// chaos runs them one by one. A scenario at 100 msg/s or more per bot
	// (3 KB messages, most of them) loads the machine alone: it takes
	// every slot.
	const slots = 3
	sem := make(chan struct{}, slots)
	var heavy sync.Mutex
	for _, sc := range Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			if why, ok := waitingFor[sc.Name]; ok {
				t.Skipf("fails on main today; waits for %s (make chaos runs it)", why)
			}
			if sc.Replicas {
				if _, err := exec.LookPath("etcd"); err != nil {
					t.Skip("etcd not installed (make deps installs Debian's etcd-server as root)")
				}
				// Each replica scenario costs ~15 s; make test runs the one
				// that exercises the most (takeover mid-move).
				if sc.Name != "replica-kill-leader-during-move" {
					t.Skip("make chaos runs it (keeps make test short)")
				}
			}
			t.Parallel()
			n := 1
			if sc.Rate >= 100 {
				n = slots
				heavy.Lock() // one heavy scenario gathers slots at a time
			}
			for range n {
				sem <- struct{}{}
			}
			if n > 1 {
				heavy.Unlock()
			}
			defer func() {
				for range n {
					<-sem
				}
			}()
			cfg := cfg
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
