// Command chaos is nearchat's fault-injection harness: it runs each
// scenario of bench/chaos on a fresh cluster of real processes (Central,
// three chat servers, a room of three bots) with a fault proxy on every
// link, then checks the invariants: convergence, exactly-once in-order
// delivery or an explicit Missed, and RSS caps. One line per scenario, a
// JSON summary at the end; the exit status is 1 on any violation.
//
//	chaos -bin bin -runs 3 -seed 42 -run 'kill|restart'
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"syscall"
	"time"

	"nearchat/bench/chaos"
	"nearchat/pkg/bounds"
)

func main() {
	cfg := chaos.DefaultConfig()
	flag.StringVar(&cfg.Bin, "bin", cfg.Bin, "`directory` holding central, chatserver and chat")
	runs := flag.Int("runs", envInt("CHAOS_RUNS", 1), "how many seeds to run every scenario with, 1 to 1000 (default $CHAOS_RUNS or 1)")
	seed := flag.Uint64("seed", uint64(envInt("CHAOS_SEED", 0)), "first seed; run i uses seed+i (default $CHAOS_SEED; 0: from the clock)")
	only := flag.String("run", "", "run only the scenarios whose name matches this `regexp` (it must match at least one: see -list)")
	list := flag.Bool("list", false, "list the scenarios and exit")
	jsonOut := flag.String("json", "", "also write the JSON summary to this `file`")
	dir := flag.String("dir", "", "log `directory` (default: a temporary one; logs of passing runs are removed unless -keep-logs)")
	keep := flag.Bool("keep-logs", false, "keep the logs of passing runs too")
	flag.DurationVar(&cfg.Hold, "hold", cfg.Hold, "how long the long faults last (a slow reader; a stalled one stops for half of it), 1s to 1h")
	flag.DurationVar(&cfg.Converge, "converge", cfg.Converge, "every room must converge this soon after the last fault, 10ms to 1h")
	cmib := flag.Int64("central-rss", cfg.CentralRSS>>20, "Central's RSS cap in `MiB`, 1 to 1048576")
	smib := flag.Int64("server-rss", cfg.ServerRSS>>20, "each chat server's RSS cap in `MiB`, 1 to 1048576")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chaos: unexpected argument %q: every setting is a flag\n", flag.Arg(0))
		os.Exit(2)
	}
	// The caps are checked in MiB before they are shifted into bytes,
	// where a huge one would wrap around.
	if err := bounds.First(
		bounds.Range("central-rss", *cmib, 1, chaos.MaxRSSCap>>20),
		bounds.Range("server-rss", *smib, 1, chaos.MaxRSSCap>>20),
	); err != nil {
		bounds.Exit("chaos", err)
	}
	cfg.CentralRSS, cfg.ServerRSS = *cmib<<20, *smib<<20
	if err := checkFlags(&cfg, *runs, *only); err != nil {
		bounds.Exit("chaos", err)
	}

	if *list {
		for _, s := range chaos.Scenarios {
			fmt.Printf("%-28s %s\n", s.Name, s.Doc)
		}
		return
	}
	re := regexp.MustCompile(*only) // checkFlags compiled it
	var err error
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano() % 1_000_000_000)
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "nearchat-chaos-"); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			os.Exit(1)
		}
	}
	cfg.Dir = *dir
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("nearchat chaos: seeds %d..%d, logs in %s\n", *seed, *seed+uint64(*runs)-1, *dir)
	var results []chaos.Result
	failed := 0
	for i := range *runs {
		for _, sc := range chaos.Scenarios {
			if !re.MatchString(sc.Name) || ctx.Err() != nil {
				continue
			}
			r := chaos.RunScenario(ctx, cfg, sc, *seed+uint64(i), nil)
			fmt.Println(r.Line())
			if !r.Pass {
				failed++
			} else if !*keep {
				os.RemoveAll(r.Logs)
			}
			results = append(results, r)
		}
	}
	summary := map[string]any{"runs": len(results), "failed": failed, "results": results}
	b, _ := json.MarshalIndent(summary, "", "  ")
	fmt.Println(string(b))
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
		}
	}
	if failed == 0 && !*keep {
		os.Remove(*dir)
	}
	if failed > 0 || ctx.Err() != nil {
		fmt.Fprintf(os.Stderr, "chaos: %d of %d scenario runs violated an invariant\n", failed, len(results))
		os.Exit(1)
	}
}

// maxRuns bounds -runs: a thousand seeds of every scenario is days.
const maxRuns = 1000

// checkFlags refuses settings no run can be made with: -runs 0 or
// negative and a -run matching no scenario ran nothing and passed.
func checkFlags(cfg *chaos.Config, runs int, only string) error {
	var match error
	if re, err := regexp.Compile(only); err != nil {
		match = bounds.Fail("run", only, "a Go regexp ("+err.Error()+")")
	} else if !slices.ContainsFunc(chaos.Scenarios, func(s chaos.Scenario) bool { return re.MatchString(s.Name) }) {
		match = bounds.Fail("run", only, "a regexp matching at least one scenario name (chaos -list)")
	}
	return bounds.First(bounds.Range("runs", runs, 1, maxRuns), match, cfg.Validate())
}

func envInt(name string, def int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(name), &v); err == nil {
		return v
	}
	return def
}
