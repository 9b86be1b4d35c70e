package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"nearchat/bench/chaos"
	"nearchat/pkg/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// TestCheckFlags: -runs 0 and a -run matching no scenario used to run
// nothing and pass; -hold 0 made every long fault last no time; each is
// now refused naming its flag.
func TestCheckFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*chaos.Config)
		runs int
		only string
		flag string // "" means valid
	}{
		{"defaults", nil, 1, "", ""},
		{"a scenario", nil, 1, "^kill", ""},
		{"no runs", nil, 0, "", "runs"},
		{"negative runs", nil, -3, "", "runs"},
		{"too many runs", nil, maxRuns + 1, "", "runs"},
		{"bad regexp", nil, 1, "(", "run"},
		{"matches nothing", nil, 1, "no-such-scenario", "run"},
		{"hold 0", func(c *chaos.Config) { c.Hold = 0 }, 1, "", "hold"},
		{"converge negative", func(c *chaos.Config) { c.Converge = -time.Second }, 1, "", "converge"},
		{"central rss 0", func(c *chaos.Config) { c.CentralRSS = 0 }, 1, "", "central-rss"},
		{"server rss negative", func(c *chaos.Config) { c.ServerRSS = -1 << 20 }, 1, "", "server-rss"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := chaos.DefaultConfig()
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			testkit.ExpectFlagError(t, checkFlags(&cfg, tc.runs, tc.only), tc.flag)
		})
	}
}

// TestBadFlagsRefused: the binary exits 2 with one line, before running
// a scenario.
func TestBadFlagsRefused(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chaos")
	dir := t.TempDir()
	testkit.ExpectRefused(t, bin, []string{"-bin", dir, "-dir", dir, "-runs", "0"}, "chaos: invalid value 0 for -runs: want 1 to 1000")
	testkit.ExpectRefused(t, bin, []string{"-bin", dir, "-dir", dir, "-run", "no-such-scenario"}, `invalid value "no-such-scenario" for -run`)
	testkit.ExpectRefused(t, bin, []string{"-bin", dir, "-dir", dir, "-server-rss", "99999999999999"}, "invalid value 99999999999999 for -server-rss")
}

// TestBadPathsAndEnvRefused: a -bin without the programs, an unusable
// -dir, a -json file that cannot be written and a malformed $CHAOS_RUNS
// or $CHAOS_SEED each used to start the run anyway (a harness error per
// scenario, the summary lost at the end, the variable ignored or read in
// part); each now exits 2 with one line before anything starts.
func TestBadPathsAndEnvRefused(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chaos")
	fake := testkit.FakeBin(t)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	noChat := t.TempDir()
	for _, p := range []string{"central", "chatserver"} {
		if err := os.WriteFile(filepath.Join(noChat, p), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	notExec := testkit.FakeBin(t)
	if err := os.Chmod(filepath.Join(notExec, "chatserver"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(tmp, "missing")
	// One cheap scenario: before the fix, a run that was not refused
	// failed at once on the empty programs instead of starting anything.
	one := []string{"-run", "^resend-storm$"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"bin missing", nil, []string{"-bin", missing}, []string{"chaos: invalid value", "for -bin", "no such file or directory"}},
		{"bin a file", nil, []string{"-bin", file}, []string{"for -bin", "not a directory"}},
		{"bin empty", nil, []string{"-bin", tmp}, []string{"for -bin", "no executable central there"}},
		{"bin without chat", nil, []string{"-bin", noChat}, []string{"for -bin", "no executable chat there"}},
		{"bin not executable", nil, []string{"-bin", notExec}, []string{"for -bin", "no executable chatserver there"}},
		{"dir a file", nil, []string{"-bin", fake, "-dir", file}, []string{"for -dir", "not a directory"}},
		{"dir under a file", nil, []string{"-bin", fake, "-dir", filepath.Join(file, "logs")}, []string{"for -dir", "not a directory"}},
		{"json in a missing directory", nil, []string{"-bin", fake, "-json", filepath.Join(missing, "out.json")}, []string{"for -json", "no such file or directory"}},
		{"json a directory", nil, []string{"-bin", fake, "-json", tmp}, []string{"for -json", "is a directory"}},
		{"runs not a number", map[string]string{"CHAOS_RUNS": "three"}, []string{"-bin", fake}, []string{`invalid value "three" for $CHAOS_RUNS`}},
		{"runs trailing junk", map[string]string{"CHAOS_RUNS": "3x"}, []string{"-bin", fake}, []string{`"3x" for $CHAOS_RUNS`}},
		{"runs zero", map[string]string{"CHAOS_RUNS": "0"}, []string{"-bin", fake}, []string{`"0" for $CHAOS_RUNS`, "1 to 1000"}},
		{"seed negative", map[string]string{"CHAOS_SEED": "-1"}, []string{"-bin", fake}, []string{`invalid value "-1" for $CHAOS_SEED`}},
		{"seed past uint64", map[string]string{"CHAOS_SEED": "18446744073709551616"}, []string{"-bin", fake}, []string{"for $CHAOS_SEED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CHAOS_RUNS", "")
			t.Setenv("CHAOS_SEED", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append(append([]string{}, one...), tc.args...)
			if !slices.Contains(args, "-dir") {
				args = append(args, "-dir", t.TempDir())
			}
			testkit.ExpectRefused(t, bin, args, tc.want...)
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("a refused run created %s", missing)
	}
}

// TestCheckPathsAccepts: what a run can use passes, a -dir that does not
// exist yet is made, and a -json file that was not there is not left
// behind by the check.
func TestCheckPathsAccepts(t *testing.T) {
	fake, tmp := testkit.FakeBin(t), t.TempDir()
	dir, out := filepath.Join(tmp, "logs", "today"), filepath.Join(tmp, "out.json")
	if err := checkPaths(fake, dir, out); err != nil {
		t.Fatalf("refused: %v", err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Errorf("-dir %s not made: %v", dir, err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("-json %s left behind by the check: %v", out, err)
	}
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkPaths(fake, "", out); err != nil {
		t.Fatalf("an existing -json file refused: %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "old" {
		t.Errorf("the check changed an existing -json file to %q", b)
	}
	if err := checkPaths(fake, dir, out); err != nil {
		t.Fatalf("an existing -dir refused: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the check left %d files in -dir", len(ents))
	}
}

// TestCheckEtcd: a run that selects a scenario with Central replicas is
// refused when no etcd can be found, naming the scenarios; one that
// selects none, or finds etcd, is not.
func TestCheckEtcd(t *testing.T) {
	missing := func(string) (string, error) { return "", exec.ErrNotFound }
	found := func(string) (string, error) { return "/usr/bin/etcd", nil }
	for _, tc := range []struct {
		name, run string
		look      func(string) (string, error)
		want      []string // nil: accepted
	}{
		{"no replica scenario", "^resend-storm$", missing, nil},
		{"one replica scenario", "^replica-kill-follower$", missing, []string{"no etcd in $PATH", "(replica-kill-follower)", "make deps"}},
		{"every scenario", "", missing, []string{"no etcd in $PATH", "more)", "-run can leave them out"}},
		{"etcd found", "", found, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkEtcd(regexp.MustCompile(tc.run), tc.look)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
		})
	}
}

// TestMissingEtcdRefused: without etcd, a run of a replica scenario
// exits 2 with one line before anything starts; it used to start, and
// report each such scenario as a violation.
func TestMissingEtcdRefused(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chaos")
	fake := testkit.FakeBin(t)
	t.Setenv("PATH", t.TempDir()) // after the build, which needs go
	testkit.ExpectRefused(t, bin, []string{"-bin", fake, "-dir", t.TempDir(), "-run", "^quit-etcd-lost$"},
		"chaos: no etcd in $PATH", "(quit-etcd-lost)")
}

// TestSummaryWriteFailureFails: a -json summary that cannot be written at
// the end of the run (the disk full, the path now a directory) makes the
// exit status 1 even when every run passed; it was 0, with one line on
// stderr a caller would not read. A signal's status still wins.
func TestSummaryWriteFailureFails(t *testing.T) {
	dir := t.TempDir()
	paths := []string{dir} // a directory
	if _, err := os.Stat("/dev/full"); err == nil {
		paths = append(paths, "/dev/full") // every write: no space left on device
	}
	for _, p := range paths {
		err := writeSummary(p, []byte("{}"))
		if err == nil {
			t.Fatalf("writing the summary to %s did not fail", p)
		}
		if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "JSON summary was not written") {
			t.Errorf("%s: %q: want one line saying the summary was not written", p, err)
		}
		if got := exitStatus(0, 0, err); got != 1 {
			t.Errorf("every run passed, summary not written to %s: status %d, want 1", p, got)
		}
		if got := exitStatus(0, 130, err); got != 130 {
			t.Errorf("interrupted, summary not written: status %d, want 130", got)
		}
	}
	out := filepath.Join(dir, "out.json")
	if err := writeSummary(out, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "{}\n" {
		t.Errorf("summary file holds %q", b)
	}
	if err := writeSummary("", []byte("{}")); err != nil {
		t.Errorf("no -json: %v", err)
	}
	for _, tc := range []struct{ failed, interrupted, want int }{{0, 0, 0}, {2, 0, 1}, {2, 143, 143}} {
		if got := exitStatus(tc.failed, tc.interrupted, nil); got != tc.want {
			t.Errorf("%d failed, interrupted %d: status %d, want %d", tc.failed, tc.interrupted, got, tc.want)
		}
	}
}
