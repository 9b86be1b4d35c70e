package chatserver

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

// An idle event loop waits parked in Go's netpoller ("IO wait"), not blocked
// in an epoll_wait system call that holds its P ("syscall"), which is what
// stock gnet does and what made sysmon take the P back from every wait of a
// loop on a server pinned to one CPU (third_party/gnet/NEARCHAT.md).
func TestIdleLoopsParkInNetpoller(t *testing.T) {
	startServer(t, func(c *Config) { c.Loops = 2 })
	var states []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("event loop goroutines: %v", states)
		}
	})
	testkit.WaitFor(t, 10*time.Second, "both event loops parked in the netpoller", func() bool {
		states = loopStates()
		parked := 0
		for _, s := range states {
			if strings.HasPrefix(s, "IO wait") {
				parked++
			}
		}
		return len(states) >= 2 && parked == len(states)
	})
	t.Logf("event loop goroutines: %v", states)
}

// loopStates gives the scheduling state of every goroutine inside gnet's
// poller loop.
func loopStates() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var states []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "netpoll.(*Poller).Polling") {
			continue
		}
		head, _, _ := strings.Cut(g, "\n")
		if i, j := strings.Index(head, "["), strings.Index(head, "]"); i >= 0 && j > i {
			states = append(states, head[i+1:j])
		}
	}
	return states
}
