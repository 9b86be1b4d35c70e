package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/bounds"
)

// defaults are the options and list flags as run() leaves them with no
// flag given.
func defaults() (options, flagValues) {
	return options{rounds: 3, rooms: 1000, rate: 2000, idle: 10_000, serverCPU: "0", loadCPU: "1"},
		flagValues{members: "2,16,256,1024", sizes: "64,1024", servers: "nearchat,nats,nearchat-tls,nats-tls", baseline: "2,16"}
}

// TestCheckFlags: each value the run cannot use is refused naming its
// flag, on one line, before any server starts. Before, -rate 0 divided
// by zero and an empty -sizes panicked in the fixed-rate pattern, an
// unknown server or -idle 1 failed minutes into the run, -members 1 or
// -sizes 8 measured something else than asked, a negative -cell was
// silently the default, and a malformed list named no flag.
func TestCheckFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		edit func(*options, *flagValues)
		flag string // "" means accepted
	}{
		{"defaults", nil, ""},
		{"no baseline, no rooms, no idle", func(o *options, v *flagValues) { v.baseline, o.rooms, o.idle = "", 0, 0 }, ""},
		{"cell", func(o *options, v *flagValues) { v.cell = 500 * time.Millisecond }, ""},
		{"cell negative", func(o *options, v *flagValues) { v.cell = -time.Second }, "cell"},
		{"cell too short", func(o *options, v *flagValues) { v.cell = time.Millisecond }, "cell"},
		{"rounds 0", func(o *options, v *flagValues) { o.rounds = 0 }, "rounds"},
		{"rounds 101", func(o *options, v *flagValues) { o.rounds = 101 }, "rounds"},
		{"members of one", func(o *options, v *flagValues) { v.members = "1,16" }, "members"},
		{"members past the servers' room cap", func(o *options, v *flagValues) { v.members = "10001" }, "members"},
		{"members malformed", func(o *options, v *flagValues) { v.members = "2,x" }, "members"},
		{"members empty entry", func(o *options, v *flagValues) { v.members = "2,,16" }, "members"},
		{"sizes empty", func(o *options, v *flagValues) { v.sizes = "" }, "sizes"},
		{"sizes below the NATS header", func(o *options, v *flagValues) { v.sizes = "8" }, "sizes"},
		{"sizes past a message", func(o *options, v *flagValues) { v.sizes = "4097" }, "sizes"},
		{"servers unknown", func(o *options, v *flagValues) { v.servers = "nearchat,redis" }, "servers"},
		{"servers twice", func(o *options, v *flagValues) { v.servers = "nats,nats" }, "servers"},
		{"servers empty", func(o *options, v *flagValues) { v.servers = "" }, "servers"},
		{"baseline of one", func(o *options, v *flagValues) { v.baseline = "1" }, "baseline"},
		{"rooms negative", func(o *options, v *flagValues) { o.rooms = -1 }, "rooms"},
		{"rooms past the connection cap", func(o *options, v *flagValues) { o.rooms = 15_001 }, "rooms"},
		{"rate 0", func(o *options, v *flagValues) { o.rate = 0 }, "rate"},
		{"idle odd", func(o *options, v *flagValues) { o.idle = 1 }, "idle"},
		{"idle negative", func(o *options, v *flagValues) { o.idle = -2 }, "idle"},
		{"idle past the connection cap", func(o *options, v *flagValues) { o.idle = 30_002 }, "idle"},
		{"window negative", func(o *options, v *flagValues) { o.window = -1 }, "window"},
		{"batch too big", func(o *options, v *flagValues) { o.batch = maxWindow + 1 }, "batch"},
		{"server cpu malformed", func(o *options, v *flagValues) { o.serverCPU = "zero" }, "server-cpu"},
		{"load cpu range", func(o *options, v *flagValues) { o.loadCPU = "1-3,5" }, ""},
		{"load cpu unpinned", func(o *options, v *flagValues) { o.loadCPU = "" }, ""},
		{"load cpu malformed", func(o *options, v *flagValues) { o.loadCPU = "1-" }, "load-cpu"},
		{"out in a missing directory", func(o *options, v *flagValues) { o.out = filepath.Join(dir, "no", "t.md") }, "o"},
		{"out a directory", func(o *options, v *flagValues) { o.out = dir }, "o"},
		{"out new", func(o *options, v *flagValues) { o.out = filepath.Join(dir, "t.md") }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, v := defaults()
			if tc.edit != nil {
				tc.edit(&o, &v)
			}
			err := checkFlags(&o, v)
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var be *bounds.Error
			if !bounds.Is(err) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line refusing -%s", err, tc.flag)
			}
			if be = err.(*bounds.Error); be.Name != tc.flag {
				t.Fatalf("got %v, want it to name -%s", err, tc.flag)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "t.md")); !os.IsNotExist(err) {
		t.Errorf("the check of -o left a file behind: %v", err)
	}
	o, v := defaults()
	if err := checkFlags(&o, v); err != nil || len(o.members) != 4 || len(o.sizes) != 2 || len(o.servers) != 4 || len(o.baselineM) != 2 {
		t.Errorf("defaults parsed to %+v (%v)", o, err)
	}
}

// TestBadFlagsExit2: the program exits 2 with one line naming the flag,
// before any server starts, for an out-of-range value and for one that
// does not parse (which printed the error and the whole usage).
func TestBadFlagsExit2(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "compare")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A short run, should a value not be refused: one server, one cell
	// of 100 ms, no fixed-rate pattern, no memory table.
	short := []string{"-servers", "nearchat", "-members", "2", "-sizes", "64", "-baseline", "", "-rounds", "1", "-cell", "100ms", "-rooms", "0", "-idle", "0", "-server-cpu", "", "-load-cpu", ""}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-rate", "0"}, "compare: invalid value 0 for -rate: want 1 to 1000000"},
		{[]string{"-sizes", "64,abc"}, `compare: invalid value "64,abc" for -sizes`},
		{[]string{"-servers", "nearchat,redis"}, `invalid value "nearchat,redis" for -servers`},
		{[]string{"-rooms", "many"}, "-rooms"},
		{[]string{"-cell", "-1s"}, "invalid value -1s for -cell"},
		{[]string{"-o", t.TempDir()}, "for -o"},
		{[]string{"stray"}, `unexpected argument "stray"`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, append(append([]string{}, short...), tc.args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		out := strings.TrimSuffix(stderr.String(), "\n")
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || strings.Contains(out, "\n") || !strings.Contains(out, tc.want) {
			t.Errorf("compare %q: %v, stderr:\n%s\nwant status 2 and one line with %q", tc.args, err, out, tc.want)
		}
	}
}
