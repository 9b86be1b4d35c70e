// Command compare runs nearchat's chat server and nats-server (embedded as
// a library, which is why this is a module of its own) side by side under
// the same load, and prints one markdown table.
//
// Each server runs in a child process of this binary pinned to one CPU
// (taskset -c, -server-cpu) while the load generator runs pinned to
// another (-load-cpu), so neither steals the other's core. Both servers
// are driven by the same client code (load.go); only the framing differs
// (protocol.go). The patterns:
//
//   - one room of M members (-members), one sender keeping 64 messages in
//     flight (closed loop), at each payload size (-sizes);
//   - many rooms of two (-rooms) at a fixed total rate (-rate), each message
//     timed from when it was due.
//
// For each cell it reports delivered messages per second, the latency
// percentiles at the receivers, deliveries per second of server CPU time
// (utime+stime of the server process over the cell), the server's read
// and write system calls per 100 deliveries (/proc/PID/io: how well it
// batches, which is most of what the CPU figure comes down to while a
// server is not saturated, as in rooms of two) and the server's peak RSS
// (VmHWM; each server process serves one member count). Then the
// resident memory of idle members (-idle connections in rooms of two,
// after a GC). Ratios are nearchat over NATS, TLS against TLS.
//
//	make bench                    # the default: 2 s cells, a few minutes
//	bin/compare -full             # 10 s cells
//	bin/compare -profile /tmp/p   # CPU profile of every server process
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"nearchat/pkg/bounds"
	"nearchat/pkg/tlsconfig"
)

const pinnedEnv = "NEARCHAT_COMPARE_PINNED"

func main() { os.Exit(run()) }

type options struct {
	cell       time.Duration
	rounds     int
	members    []int
	sizes      []int
	servers    []string
	baselineM  []int
	rooms      int
	rate       int
	rateTime   time.Duration
	idle       int
	serverCPU  string
	loadCPU    string
	profile    string
	out        string
	certs      tlsconfig.Files
	window     int
	batch      int
	fullRun    bool
	skipFanout bool
}

func run() int {
	serve := flag.String("serve", "", "child mode: serve this `kind` (nearchat, nats, baseline; -tls suffix for TLS)")
	certDir := flag.String("certs", "", "child mode: development certificates `dir`")
	childProfile := flag.String("cpuprofile", "", "child mode: write a CPU profile to `file`")
	var o options
	full := flag.Bool("full", false, "10 s per cell (the default is 2 s)")
	cell := flag.Duration("cell", 0, "measuring time per cell, 100ms to 1h (overrides -full; 0: -full decides)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds each cell is measured in, taken in turn across the servers and summed (1 to 100)")
	members := flag.String("members", "", "room sizes of the one-room pattern, 2 to 10000 each (default 2,16,256,1024)")
	sizes := flag.String("sizes", "64,1024", "payload sizes in bytes, 16 to 4096 each")
	servers := flag.String("servers", "nearchat,nats,nearchat-tls,nats-tls", "servers to compare: nearchat, nats, nearchat-tls, nats-tls, baseline")
	baselineM := flag.String("baseline", "2,16", "room sizes at which the goroutine-per-connection baseline runs too, 2 to 10000 each (empty: never)")
	flag.IntVar(&o.rooms, "rooms", 1000, "rooms of two in the fixed-rate pattern, 0 to 15000 (0: skip it)")
	flag.IntVar(&o.rate, "rate", 2000, "total messages a second in the fixed-rate pattern, 1 to 1000000")
	flag.IntVar(&o.idle, "idle", 10_000, "idle connections for the memory table, an even number up to 30000 (0: skip it)")
	flag.IntVar(&o.window, "window", 0, "messages in flight in the one-room pattern (0: 1,024, fewer in rooms past 64 members so that at most 65,536 deliveries are in flight, never under 64)")
	flag.IntVar(&o.batch, "batch", 0, "most messages the one-room sender writes in one system call (0: all it may send, like a client that buffers its writes; 1: one write per message)")
	flag.StringVar(&o.serverCPU, "server-cpu", "0", "CPU list the servers are pinned to, as taskset -c takes it (empty: not pinned)")
	flag.StringVar(&o.loadCPU, "load-cpu", "1", "CPU list the load generator is pinned to (empty: not pinned)")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of each server process into `dir`")
	flag.StringVar(&o.out, "o", "", "also write the table to `file`")
	bounds.Parse("compare", flag.CommandLine, os.Args[1:])
	if *serve != "" {
		kind, tlsOn := strings.CutSuffix(*serve, "-tls")
		return serveChild(kind, tlsOn, *certDir, *childProfile)
	}
	if *members == "" {
		// A room of 1,024 joins in a few seconds since the chat server
		// gathers joins into Presences frames (it took a minute or more
		// with a Presence frame per member per join).
		*members = "2,16,256,1024"
	}
	// Checked before pinSelf runs this program again, so a refusal is
	// printed once.
	if err := checkFlags(&o, flagValues{cell: *cell, members: *members, sizes: *sizes, servers: *servers, baseline: *baselineM}); err != nil {
		return usage(err)
	}
	if os.Getenv(pinnedEnv) == "" && o.loadCPU != "" {
		if err := pinSelf(o.loadCPU); err != nil {
			fmt.Fprintln(os.Stderr, "compare: not pinned:", err)
		}
	}
	o.fullRun = *full
	o.cell = 2 * time.Second
	if *full {
		o.cell = 10 * time.Second
	}
	if *cell > 0 {
		o.cell = *cell
	}
	o.rateTime = max(o.cell, 5*time.Second)
	dir, err := os.MkdirTemp("", "nearchat-compare-")
	if err != nil {
		return usage(err)
	}
	defer os.RemoveAll(dir)
	if o.certs, err = tlsconfig.WriteDev(dir, nil, 24*time.Hour); err != nil {
		return usage(err)
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return usage(err)
		}
	}
	return compare(&o)
}

func usage(err error) int {
	fmt.Fprintln(os.Stderr, "compare:", err)
	return 2
}

// pinSelf re-executes this program under taskset, pinned to cpus.
func pinSelf(cpus string) error {
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return err
	}
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("%d CPU: nothing to pin apart", runtime.NumCPU())
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	env := append(os.Environ(), pinnedEnv+"=1")
	return syscall.Exec(ts, append([]string{"taskset", "-c", cpus, self}, os.Args[1:]...), env)
}

// numCPU is runtime.NumCPU, replaced in tests.
var numCPU = runtime.NumCPU

// childCommand returns the command that runs args, the server child,
// pinned to cpus when there is a CPU to pin it apart from the load
// generator. Once pinSelf has pinned this process, runtime.NumCPU counts
// the CPUs it may use, one, not the machine's: asking it alone left every
// child unpinned, on the load generator's CPU with it, from the first
// version of this harness (2026-11-30) on.
func childCommand(args []string, cpus string) *exec.Cmd {
	apart := os.Getenv(pinnedEnv) != "" || numCPU() > 1
	if ts, err := exec.LookPath("taskset"); err == nil && cpus != "" && apart {
		return exec.Command(ts, append([]string{"-c", cpus}, args...)...)
	}
	return exec.Command(args[0], args[1:]...)
}

// child is a server process under test.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	addr  string
	kind  string
}

func startChild(o *options, kind, tag string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{self, "-serve", kind, "-certs", o.certs.Dir}
	if o.profile != "" {
		args = append(args, "-cpuprofile", filepath.Join(o.profile, kind+"-"+tag+".pprof"))
	}
	cmd := childCommand(args, o.serverCPU)
	cmd.Stderr = os.Stderr
	c := &child{cmd: cmd, kind: kind, lines: make(chan string, 4)}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	l, err := c.line("ADDR ")
	if err != nil {
		c.stop()
		return nil, err
	}
	c.addr = l
	return c, nil
}

func (c *child) line(prefix string) (string, error) {
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("%s: server exited before %q", c.kind, prefix)
			}
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				return rest, nil
			}
		case <-deadline:
			return "", fmt.Errorf("%s: no %q line in 30 s", c.kind, prefix)
		}
	}
}

// heapProfile makes the child write a heap profile to path.
func (c *child) heapProfile(path string) error {
	if _, err := io.WriteString(c.stdin, "heap "+path+"\n"); err != nil {
		return err
	}
	_, err := c.line("ok")
	return err
}

// gc makes the child collect garbage and return free memory to the OS.
func (c *child) gc() error {
	if _, err := io.WriteString(c.stdin, "gc\n"); err != nil {
		return err
	}
	_, err := c.line("ok")
	return err
}

func (c *child) stop() {
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "compare: %s exited: %v\n", c.kind, err)
		}
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// cpu is the child's user+system CPU time so far.
func (c *child) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("odd /proc stat %q", s)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// syscalls is how many read-like and write-like system calls the child
// has made so far (/proc/PID/io syscr and syscw: read, readv, recvmsg...;
// write, writev, sendmsg...; not epoll_wait).
func (c *child) syscalls() (reads, writes int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", c.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "syscr":
			reads, err = strconv.ParseInt(v, 10, 64)
		case "syscw":
			writes, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("odd /proc io line %q", line)
		}
	}
	return reads, writes, nil
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// status reads one kB field of the child's /proc status (VmRSS, VmHWM).
func (c *child) status(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, c.cmd.Process.Pid)
}
