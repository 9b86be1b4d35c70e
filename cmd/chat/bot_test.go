package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

type botRun struct {
	events []map[string]any
	err    error
	stderr bytes.Buffer
}

func (r *botRun) last(kind string) map[string]any {
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i]["ev"] == kind {
			return r.events[i]
		}
	}
	return nil
}

// TestBots runs two real bot processes through a real Central and chat
// server: one requests, one accepts, both send a fixed count, and both must
// report every message delivered once and in order, and exit 0.
func TestBots(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	c := startCluster(t)
	c.startServer("serv1", 0)
	const count = 30
	run := func(args ...string) *botRun {
		r := &botRun{}
		cmd := exec.Command(bin, append([]string{"-bot", "-central", c.rest, "-control", c.ctrl,
			"-rate", "40", "-count", "30", "-duration", "60s", "-probe-every", "300ms"}, args...)...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = &r.stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("not a JSON line: %q", sc.Text())
				continue
			}
			r.events = append(r.events, m)
		}
		r.err = cmd.Wait()
		return r
	}
	var wg sync.WaitGroup
	var bob, alice *botRun
	wg.Add(2)
	go func() { defer wg.Done(); bob = run("-name", "bob", "-accept") }()
	time.Sleep(200 * time.Millisecond)
	go func() { defer wg.Done(); alice = run("-name", "alice", "-peer", "bob") }()
	wg.Wait()
	for name, r := range map[string]*botRun{"alice": alice, "bob": bob} {
		if r.err != nil {
			t.Errorf("%s exited with %v\n%s", name, r.err, r.stderr.String())
		}
		rep := r.last("report")
		if rep == nil {
			t.Fatalf("%s printed no report", name)
		}
		if rep["ok"] != true || rep["sent"] != float64(count) {
			t.Errorf("%s report: %v", name, rep)
		}
		if r.last("joined") == nil || r.last("ready") == nil || r.last("probe") == nil {
			t.Errorf("%s: missing ready/probe/joined events", name)
		}
		t.Logf("%s report: %v", name, rep)
	}
	recv, _ := bob.last("report")["received"].(map[string]any)
	if recv["alice"] != float64(count) {
		t.Errorf("bob received %v of alice's %d", recv["alice"], count)
	}
}

func TestBotFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"bot without name", []string{"-bot", "-accept"}},
		{"bot without peer or accept", []string{"-bot", "-name", "x"}},
		{"zero rate", []string{"-bot", "-name", "x", "-accept", "-rate", "0"}},
		{"stray argument", []string{"extra"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if _, err := parseFlags(tc.args, &out); err == nil {
				t.Fatalf("parseFlags(%q) accepted", tc.args)
			}
		})
	}
	if _, err := parseEmulation("serv1=40ms,bad"); err == nil {
		t.Fatal("a malformed -emulate-rtt was accepted")
	}
	m, err := parseEmulation("serv1=40ms, serv3=60ms")
	if err != nil || m["serv1"] != 40*time.Millisecond || m["serv3"] != 60*time.Millisecond {
		t.Fatalf("parseEmulation = %v, %v", m, err)
	}
}

// runBotProc runs bin/chat -bot with args against c and returns its events,
// its exit error and how long it ran.
func runBotProc(t *testing.T, bin string, c *cluster, args ...string) (*botRun, time.Duration) {
	t.Helper()
	r := &botRun{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-bot", "-central", c.rest, "-probe-every", "300ms"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &r.stderr
	start := time.Now()
	r.err = cmd.Run()
	took := time.Since(start)
	for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
		var m map[string]any
		if len(line) > 0 && json.Unmarshal(line, &m) == nil {
			r.events = append(r.events, m)
		}
	}
	return r, took
}

// TestBotGivesUpOnHopelessRequests: a request that can never succeed ends
// the bot with a reason, instead of a retry every second until a signal.
func TestBotGivesUpOnHopelessRequests(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	c := startCluster(t)
	c.startServer("serv1", 0)
	c.peer("bob")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"peer not registered", []string{"-name", "x1", "-peer", "nobody", "-count", "5"}, "not registered with Central after 5 tries"},
		{"invalid request", []string{"-name", "x2", "-peer", "bob,bob", "-count", "5"}, "the chat request is invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, took := runBotProc(t, bin, c, tc.args...)
			t.Logf("ended after %v: %v", took.Round(time.Millisecond), r.err)
			if r.err == nil {
				t.Errorf("exit 0")
			}
			e := r.last("error")
			if e == nil || e["fatal"] != true || !strings.Contains(fmt.Sprint(e["err"]), tc.want) {
				t.Fatalf("last error %v, want a fatal one saying %q\n%s", e, tc.want, r.stderr.String())
			}
			if rep := r.last("report"); rep == nil || rep["ok"] != false {
				t.Errorf("report %v", rep)
			}
		})
	}
}

// TestBotBacksOffAfterDecline: a person who declines is not asked again
// every second.
func TestBotBacksOffAfterDecline(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	c := startCluster(t)
	c.startServer("serv1", 0)
	dave := c.peer("dave")
	stop := make(chan struct{})
	asked := make(chan int, 1)
	go func() {
		seen := map[string]bool{}
		for {
			select {
			case <-stop:
				asked <- len(seen)
				return
			case <-time.After(20 * time.Millisecond):
			}
			dave.mu.Lock()
			var fresh []string
			for _, in := range dave.incoming {
				if !seen[in.Req] {
					seen[in.Req] = true
					fresh = append(fresh, in.Req)
				}
			}
			dave.mu.Unlock()
			for _, req := range fresh {
				_ = dave.c.Answer(req, false)
			}
		}
	}()
	r, took := runBotProc(t, bin, c, "-name", "pest", "-peer", "dave", "-duration", "7s")
	close(stop)
	n := <-asked
	t.Logf("asked dave %d times in %v (retrying each second would be about 7)", n, took.Round(time.Millisecond))
	if n == 0 {
		t.Fatalf("the bot never asked: %s", r.stderr.String())
	}
	if n > 4 {
		t.Errorf("asked %d times in 7 s after declines; want a growing pause (2 s, 4 s, ...)", n)
	}
}
