package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// memChildEnv makes the test binary serve as a child process hosting one
// chat server, so its resident memory can be read on its own.
const memChildEnv = "NEARCHAT_MEMCHILD"

// memChild runs in the child: it starts the server, prints its address,
// and then answers each "gc" line on stdin with a GC, a return of free
// memory to the OS and an "ok" line. It stops the server at EOF.
func memChild(kind string) int {
	tgt, err := StartServer(kind, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ADDR %s\n", tgt.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "gc" {
			runtime.GC()
			debug.FreeOSMemory()
			fmt.Println("ok")
		}
	}
	if err := tgt.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// idleMemory is the outcome of one idle-connection measurement.
type idleMemory struct {
	Conns         int
	Before, After int64 // child VmRSS in bytes, after a GC, without and with the connections
	BytesPerConn  float64
	SetupDuration time.Duration
}

// measureIdleMemory starts a server of kind in a child process, opens conns
// connections that each complete Hello/Welcome and Join (rooms of two), and
// reads the child's resident set before and after.
func measureIdleMemory(t testing.TB, kind string, conns int) idleMemory {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), memChildEnv+"="+kind)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			stdin.Close()
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("%s child: %v", kind, err)
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Errorf("%s child did not exit 15s after stdin closed; killed", kind)
			}
		})
	}
	t.Cleanup(stop)

	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	readLine := func(prefix string) string {
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s child: output ended before %q", kind, prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return strings.TrimPrefix(l, prefix)
				}
			case <-deadline:
				t.Fatalf("%s child: no %q line in 30s", kind, prefix)
			}
		}
	}
	rss := func() int64 {
		if _, err := io.WriteString(stdin, "gc\n"); err != nil {
			t.Fatal(err)
		}
		readLine("ok")
		v, err := vmRSS(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	addr := readLine("ADDR ")
	res := idleMemory{Conns: conns}
	res.Before = rss()
	start := time.Now()
	cs, err := openIdleMembers(addr, conns, 2)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	res.SetupDuration = time.Since(start)
	res.After = rss()
	res.BytesPerConn = float64(res.After-res.Before) / float64(conns)
	return res
}

// vmRSS reads a process's resident set size from /proc.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("odd VmRSS line %q", l)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
