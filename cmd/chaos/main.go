// Command chaos is nearchat's fault-injection harness: it runs each
// scenario of bench/chaos on a fresh cluster of real processes (Central,
// three chat servers, a room of three bots) with a fault proxy on every
// link, then checks the invariants: convergence, exactly-once in-order
// delivery or an explicit Missed, and RSS caps. One line per scenario, a
// JSON summary at the end; the exit status is 1 on any violation, and
// 128 plus the signal's number (130, 143) when SIGINT or SIGTERM cut the
// run short: it stops the processes it started first.
//
//	chaos -bin bin -runs 3 -seed 42 -run 'kill|restart'
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"nearchat/bench/chaos"
	"nearchat/pkg/bounds"
	"nearchat/pkg/interrupt"
)

func main() {
	cfg := chaos.DefaultConfig()
	flag.StringVar(&cfg.Bin, "bin", cfg.Bin, "`directory` holding central, chatserver and chat")
	envRuns, runsErr := envRuns()
	envSeed, seedErr := envSeed()
	runs := flag.Int("runs", envRuns, "how many seeds to run every scenario with, 1 to 1000 (default $CHAOS_RUNS or 1)")
	seed := flag.Uint64("seed", envSeed, "first seed; run i uses seed+i (default $CHAOS_SEED; 0: from the clock)")
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
	cfg.Bin = absBin(cfg.Bin)
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chaos: unexpected argument %q: every setting is a flag\n", flag.Arg(0))
		os.Exit(2)
	}
	// A malformed variable used to be ignored silently (the default ran
	// instead) or read in part ("3x" as 3, "-1" as a huge seed); it
	// matters only where its flag is not given.
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if runsErr != nil && !set["runs"] {
		bounds.Exit("chaos", runsErr)
	}
	if seedErr != nil && !set["seed"] {
		bounds.Exit("chaos", seedErr)
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
	if err := checkPaths(cfg.Bin, *dir, *jsonOut); err != nil {
		bounds.Exit("chaos", err)
	}
	re := regexp.MustCompile(*only) // checkFlags compiled it
	if err := checkEtcd(re, exec.LookPath); err != nil {
		bounds.Exit("chaos", err)
	}
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
	ctx, stop := interrupt.Notify(context.Background())
	defer stop()

	fmt.Printf("nearchat chaos: seeds %d..%d, logs in %s\n", *seed, *seed+uint64(*runs)-1, *dir)
	var results []chaos.Result
	var interrupted []string
	failed := 0
	for i := range *runs {
		for _, sc := range chaos.Scenarios {
			if !re.MatchString(sc.Name) || ctx.Err() != nil {
				continue
			}
			r := chaos.RunScenario(ctx, cfg, sc, *seed+uint64(i), nil)
			fmt.Println(r.Line())
			if ctx.Err() != nil && !r.Pass {
				// Cut short by the signal: its logs are kept, but it
				// is no verdict on the scenario.
				interrupted = append(interrupted, r.Scenario)
			} else if !r.Pass {
				failed++
			} else if !*keep {
				os.RemoveAll(r.Logs)
			}
			results = append(results, r)
		}
	}
	summary := map[string]any{"runs": len(results), "failed": failed, "results": results}
	if ctx.Err() != nil {
		summary["interrupted"] = interrupted
	}
	b, _ := json.MarshalIndent(summary, "", "  ")
	fmt.Println(string(b))
	jsonErr := writeSummary(*jsonOut, b)
	if jsonErr != nil {
		fmt.Fprintln(os.Stderr, "chaos:", jsonErr)
	}
	if failed == 0 && !*keep {
		os.Remove(*dir)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "chaos: %d of %d scenario runs violated an invariant\n", failed, len(results))
	}
	sigStatus := interrupt.Status(ctx)
	if sigStatus != 0 {
		fmt.Fprintf(os.Stderr, "chaos: %v; the children are stopped, logs in %s\n", context.Cause(ctx), *dir)
	}
	os.Exit(exitStatus(failed, sigStatus, jsonErr))
}

// writeSummary writes the JSON summary to the -json file, if any. The
// check before the run found the file writable, but a disk that filled
// up or a path replaced by a directory since still fails the write here.
func writeSummary(path string, b []byte) error {
	if path == "" {
		return nil
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("the JSON summary was not written, only printed above: %w", err)
	}
	return nil
}

// exitStatus is chaos's exit status: 128 plus the signal's number when
// one cut the run short (interrupted, from interrupt.Status), else 1 when
// a run violated an invariant or the -json summary was not written, else
// 0. An unwritten summary used to leave the status 0: a caller that
// reads the file (make chaos writes chaos.json) found it stale or
// missing after a run that looked clean.
func exitStatus(failed, interrupted int, jsonErr error) int {
	switch {
	case interrupted != 0:
		return interrupted
	case failed > 0 || jsonErr != nil:
		return 1
	}
	return 0
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

// envRuns is -runs' default: $CHAOS_RUNS, or 1 when it is unset or
// empty; an error if it is set to anything but 1 to maxRuns.
func envRuns() (int, error) {
	v := os.Getenv("CHAOS_RUNS")
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxRuns {
		return 1, fmt.Errorf("invalid value %q for $CHAOS_RUNS (the default of -runs): want an integer 1 to %d", v, maxRuns)
	}
	return n, nil
}

// envSeed is -seed's default: $CHAOS_SEED, or 0 (from the clock) when it
// is unset or empty; an error if it is set to anything but a decimal
// 0 to 2^64-1.
func envSeed() (uint64, error) {
	v := os.Getenv("CHAOS_SEED")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid value %q for $CHAOS_SEED (the default of -seed): want an integer 0 to %d (0: from the clock)", v, uint64(1<<64-1))
	}
	return n, nil
}

// programs are what every scenario starts from -bin.
var programs = []string{"central", "chatserver", "chat"}

// checkPaths refuses, before anything starts, a -bin without the
// programs, a -dir the logs cannot go in and a -json file that cannot be
// written. Each used to surface only once the run was under way: a
// harness error for every scenario, or, for -json, the summary lost at
// the end of a run of hours. It creates -dir when it does not exist (the
// run would), and leaves no -json file behind that was not there.
func checkPaths(bin, dir, jsonOut string) error {
	return bounds.First(checkBin(bin), checkJSON(jsonOut), checkDir(dir))
}

// absBin makes -bin absolute, so it names the same directory wherever a
// process is started from. Joined with a program's name, a relative one
// such as "." gave a bare "central", which os/exec looks up in $PATH:
// every scenario failed at once, or ran some other central.
func absBin(bin string) string {
	if abs, err := filepath.Abs(bin); err == nil {
		return abs
	}
	return bin // the working directory is gone: checkBin says so
}

func checkBin(bin string) error {
	const want = "the directory holding central, chatserver and chat (make build puts them in bin/)"
	if fi, err := os.Stat(bin); err != nil {
		return bounds.Fail("bin", bin, want+": "+reason(err))
	} else if !fi.IsDir() {
		return bounds.Fail("bin", bin, want+": it is not a directory")
	}
	for _, prog := range programs {
		fi, err := os.Stat(filepath.Join(bin, prog))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return bounds.Fail("bin", bin, want+": no executable "+prog+" there")
		}
	}
	return nil
}

func checkDir(dir string) error {
	if dir == "" {
		return nil // a temporary one
	}
	const want = "a directory the logs can be written in, or empty for a temporary one"
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return bounds.Fail("dir", dir, want+": it is not a directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return bounds.Fail("dir", dir, want+": "+reason(err))
	}
	f, err := os.CreateTemp(dir, ".chaos-probe-")
	if err != nil {
		return bounds.Fail("dir", dir, want+": "+reason(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

func checkJSON(path string) error {
	if path == "" {
		return nil
	}
	const want = "a file the JSON summary can be written to"
	_, statErr := os.Stat(path)
	// Opened without truncating: an existing file keeps what it holds
	// until the run's end replaces it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return bounds.Fail("json", path, want+": "+reason(err))
	}
	f.Close()
	if errors.Is(statErr, fs.ErrNotExist) {
		return os.Remove(path)
	}
	return nil
}

// checkEtcd refuses, before anything starts, a run of scenarios with
// Central replicas (Scenario.Replicas) where no etcd can be found, as
// bench/cluster finds it: each such scenario used to fail as a harness
// error, a long run reporting "violations" that were only a missing
// program.
func checkEtcd(re *regexp.Regexp, lookPath func(string) (string, error)) error {
	var need []string
	for _, s := range chaos.Scenarios {
		if s.Replicas && re.MatchString(s.Name) {
			need = append(need, s.Name)
		}
	}
	if len(need) == 0 {
		return nil
	}
	if _, err := lookPath("etcd"); err == nil {
		return nil
	}
	which := need[0]
	if len(need) > 1 {
		which = fmt.Sprintf("%s and %d more", need[0], len(need)-1)
	}
	return fmt.Errorf("no etcd in $PATH, and the scenarios selected with Central replicas (%s) need it: make deps installs Debian's etcd-server (as root), or -run can leave them out", which)
}

// reason is what the system said about a path, without the path the
// refusal already quotes: "no such file or directory".
func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
