package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"nearchat/pkg/bounds"
	"nearchat/pkg/proto"
)

// The bounds of compare's flags. Each server process is configured for
// 30,000 connections and rooms of up to 10,000 (nearchatConfig, the NATS
// and baseline options in serve.go): past them a run fails midway, after
// minutes of cells, instead of being refused.
const (
	maxMembers = 10_000
	maxConns   = 30_000
	// minSize: the NATS framing carries the message's number and send
	// time in its first 16 bytes and pads a smaller payload up to them,
	// so below it the two servers would be measured at different sizes.
	minSize   = 16
	maxWindow = 65_536
	maxRate   = 1_000_000
)

// serverKinds are what -servers takes.
var serverKinds = []string{kindNearchat, kindNATS, kindNearchat + "-tls", kindNATS + "-tls", kindBaseline}

// cpuList is the form taskset -c takes: 0, 0-3, 0,2,4-5.
var cpuList = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)

// flagValues are compare's flags as given, the lists unparsed.
type flagValues struct {
	cell                              time.Duration
	members, sizes, servers, baseline string
}

// checkFlags parses the list flags into o and refuses, before any server
// starts, a value the run cannot use, naming the flag, the value and what
// it takes on one line. Unchecked, a -rate 0 divided by zero in the
// fixed-rate pattern, an empty -sizes panicked there, an unknown -servers
// kind or an -idle of 1 failed after minutes of cells, and a negative
// -cell was silently the default.
func checkFlags(o *options, v flagValues) error {
	var err error
	errs := []error{
		bounds.Range("rounds", o.rounds, 1, 100),
	}
	if v.cell != 0 {
		errs = append(errs, bounds.Range("cell", v.cell, 100*time.Millisecond, time.Hour))
	}
	if o.members, err = intList("members", v.members, 2, maxMembers, false); err != nil {
		errs = append(errs, err)
	}
	if o.sizes, err = intList("sizes", v.sizes, minSize, proto.MaxText, false); err != nil {
		errs = append(errs, err)
	}
	if o.servers, err = serverList(v.servers); err != nil {
		errs = append(errs, err)
	}
	if o.baselineM, err = intList("baseline", v.baseline, 2, maxMembers, true); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs,
		bounds.Range("rooms", o.rooms, 0, maxConns/2),
		bounds.Range("rate", o.rate, 1, maxRate),
		checkIdle(o.idle),
		bounds.Range("window", o.window, 0, maxWindow),
		bounds.Range("batch", o.batch, 0, maxWindow),
		checkCPUs("server-cpu", o.serverCPU),
		checkCPUs("load-cpu", o.loadCPU),
		checkOut(o.out),
	)
	return bounds.First(errs...)
}

// intList parses a comma-separated list of whole numbers lo to hi; with
// optional it may be empty.
func intList(name, s string, lo, hi int, optional bool) ([]int, error) {
	want := fmt.Sprintf("a comma-separated list of whole numbers, each %d to %d", lo, hi)
	if optional {
		want += ", or empty for none"
	}
	if optional && strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo || n > hi {
			return nil, bounds.Fail(name, s, want)
		}
		out = append(out, n)
	}
	return out, nil
}

// serverList parses -servers: known kinds, each once (two of a kind
// would share their rows of the table).
func serverList(s string) ([]string, error) {
	want := "a comma-separated list of distinct servers from " + strings.Join(serverKinds, ", ")
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(serverKinds, f) || slices.Contains(out, f) {
			return nil, bounds.Fail("servers", s, want)
		}
		out = append(out, f)
	}
	return out, nil
}

// checkIdle: the idle members join in rooms of two, and the table
// divides by their number.
func checkIdle(n int) error {
	if n == 0 || (n%2 == 0 && n >= 2 && n <= maxConns) {
		return nil
	}
	return bounds.Fail("idle", n, fmt.Sprintf("0 (no memory table) or an even number 2 to %d", maxConns))
}

// checkCPUs refuses a CPU list taskset would not take; empty means not
// pinned. Which CPUs exist is not checked: once pinSelf has pinned this
// process, it runs again and sees only its own CPU.
func checkCPUs(name, s string) error {
	if s == "" || cpuList.MatchString(s) {
		return nil
	}
	return bounds.Fail(name, s, "a CPU list as taskset -c takes it (0, 0-3, 0,2), or empty for no pinning")
}

// checkOut refuses a -o file that cannot be written, before the run
// rather than after minutes of it, and leaves no file behind that was
// not there.
func checkOut(path string) error {
	if path == "" {
		return nil
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return bounds.Fail("o", path, "a file the table can be written to: "+err.Error())
	}
	f.Close()
	if errors.Is(statErr, fs.ErrNotExist) {
		return os.Remove(path)
	}
	return nil
}
