package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"
)

// frozenCentral is a Central that can be frozen as seen by one client:
// its control port and its REST API are reached through proxies that,
// frozen, take what the client sends and answer nothing, as a stopped
// leader does (rel7 sweep, 2026-12-03, R7-1).
type frozenCentral struct {
	ctrl, rest string
	// ctrlFrozen: the control proxy drops every byte both ways. thaw: the
	// next control connection made while frozen thaws it (the client
	// gave up on the silent one; a new leader answers). restFrozen: REST
	// requests hang until the client gives up; the first DELETE thaws it
	// (it is answered when sent again).
	ctrlFrozen, restFrozen, thaw atomic.Bool
	deletes                      atomic.Int64 // DELETEs that reached Central
}

func startFrozenCentral(t *testing.T, c *cluster) *frozenCentral {
	f := &frozenCentral{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ctrl = ln.Addr().String()
	testkit.Serve(t, ln, func(down net.Conn) {
		if f.ctrlFrozen.Load() && f.thaw.Load() {
			f.ctrlFrozen.Store(false)
		}
		up, err := net.Dial("tcp", c.ctrl)
		if err != nil {
			return
		}
		defer up.Close()
		done := make(chan struct{})
		go func() { defer close(done); f.copy(down, up); down.Close() }()
		f.copy(up, down)
		up.Close()
		<-done
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: c.rest})
	rp.Transport = tr
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.restFrozen.Load() {
			if r.Method == http.MethodDelete {
				f.restFrozen.Store(false)
			}
			<-r.Context().Done()
			return
		}
		if r.Method == http.MethodDelete {
			f.deletes.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.rest = strings.TrimPrefix(srv.URL, "http://")
	return f
}

// copy copies src to dst, dropping what comes while the control proxy is
// frozen.
func (f *frozenCentral) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !f.ctrlFrozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestBotQuitWaitsForCentral (rel7 sweep, 2026-12-03, R7-1): a bot that
// quit while its Central was frozen sent its LeaveRoom once, made one 2 s
// attempt to deregister and exited: both were lost, and Central kept it in
// its room for good. It now waits, within 10 s, for Central to confirm the
// leave (giving up on a silent control connection and connecting again)
// and retries the deregistration; what it cannot get confirmed it says in
// an "unconfirmed" event.
func TestBotQuitWaitsForCentral(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	for _, thaw := range []bool{true, false} {
		t.Run(fmt.Sprintf("thaw=%v", thaw), func(t *testing.T) {
			c := startCluster(t)
			c.startServer("serv1", 0)
			bob := c.peer("bob")
			f := startFrozenCentral(t, c)
			f.thaw.Store(thaw)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-bot", "-name", "alice", "-accept", "-rate", "5",
				"-central", f.rest, "-control", f.ctrl, "-probe-every", "300ms")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var events []map[string]any
			read := make(chan struct{})
			go func() {
				defer close(read)
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					var m map[string]any
					if json.Unmarshal(sc.Bytes(), &m) == nil {
						mu.Lock()
						events = append(events, m)
						mu.Unlock()
					}
				}
			}()
			event := func(kind string) map[string]any {
				mu.Lock()
				defer mu.Unlock()
				for _, e := range events {
					if e["ev"] == kind {
						return e
					}
				}
				return nil
			}
			testkit.WaitFor(t, 20*time.Second, "alice ready", func() bool { return event("ready") != nil })
			if err := bob.c.Request("alice"); err != nil {
				t.Fatal(err)
			}
			testkit.WaitFor(t, 20*time.Second, "alice in a room with bob", func() bool { return event("joined") != nil })
			room := fmt.Sprint(event("joined")["room"])
			f.ctrlFrozen.Store(true)
			f.restFrozen.Store(true)
			start := time.Now()
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			<-read
			werr := cmd.Wait()
			t.Logf("alice exited %v after SIGTERM: %v", time.Since(start).Round(time.Millisecond), werr)
			if ctx.Err() != nil {
				t.Fatalf("alice did not exit within a minute\n%s", stderr.String())
			}
			api := centralapi.NewClient(c.rest, nil)
			info, err := api.LookupClient(context.Background(), "alice")
			if err == nil && slices.Contains(info.Rooms, room) {
				t.Errorf("alice quit, yet Central lists her in %s", room)
			}
			if err != nil && !centralapi.IsUnknownClient(err) {
				t.Errorf("lookup alice: %v", err)
			}
			if f.deletes.Load() == 0 {
				t.Errorf("no deregistration reached Central")
			}
			un := event("unconfirmed")
			switch {
			case thaw && un != nil:
				t.Errorf("a new control connection was answered, yet: %v", un)
			case !thaw && (un == nil || un["what"] != "leave" || !strings.Contains(fmt.Sprint(un["rooms"]), room)):
				t.Errorf("the leave was never confirmed, and the bot said %v; want an unconfirmed event for %s\n%s", un, room, stderr.String())
			}
		})
	}
}

// TestTerminalQuitWaitsForCentral (rel7 sweep, R7-1): Ctrl-C in the
// terminal client while its Central was frozen exited 2 s later, without
// a word, and Central kept the user in the chat for good. Quitting now
// waits for Central's confirmation, says so in the bottom bar, quits at
// once on a second Ctrl-C, and then says what Central did not confirm.
func TestTerminalQuitWaitsForCentral(t *testing.T) {
	needTmux(t)
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	cl := startCluster(t)
	cl.startServer("serv1", 0)
	bob := cl.peer("bob")
	f := startFrozenCentral(t, cl)
	command, log := chatCommand(t, bin, "-name", "alice", "-central", f.rest, "-control", f.ctrl)
	p := startPane(t, 100, 24, command, log)
	chatWithBob(t, p, bob)
	f.ctrlFrozen.Store(true)
	f.restFrozen.Store(true)
	p.keys("C-c")
	p.waitScreen("leaving: waiting for Central to confirm")
	p.keys("C-c")
	s := p.waitScreen("EXIT=0", "TTY=RESTORED", "Central did not confirm that you left r-", "it may still list you")
	t.Logf("after the second Ctrl-C:\n%s", s)
}

// TestTerminalQuitConfirmed: with Central answering, Ctrl-C leaves the
// chat, has the leave confirmed and the name given back, with nothing
// to report.
func TestTerminalQuitConfirmed(t *testing.T) {
	p, bob := aliceChattingWithBob(t)
	p.keys("C-c")
	s := p.waitScreen("EXIT=0", "TTY=RESTORED")
	if strings.Contains(s, "did not confirm") {
		t.Errorf("Central answered, yet:\n%s", s)
	}
	if _, err := bob.c.API().LookupClient(context.Background(), "alice"); !centralapi.IsUnknownClient(err) {
		t.Errorf("alice after Ctrl-C: %v, want unknown", err)
	}
}

// aliceChattingWithBob starts a cluster with serv1 and the peer bob, and
// the terminal client as alice in a 100x24 pane, in a chat with bob.
func aliceChattingWithBob(t *testing.T) (*pane, *peer) {
	t.Helper()
	needTmux(t)
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	cl := startCluster(t)
	cl.startServer("serv1", 0)
	bob := cl.peer("bob")
	command, log := chatCommand(t, bin, "-name", "alice", "-central", cl.rest, "-control", cl.ctrl)
	p := startPane(t, 100, 24, command, log)
	chatWithBob(t, p, bob)
	return p, bob
}

// chatWithBob has alice, at the terminal client's first screen in p, ask
// bob for a chat, which bob accepts, and waits for the chat's screen.
func chatWithBob(t *testing.T, p *pane, bob *peer) {
	t.Helper()
	p.waitScreen("> Begin a chat", "alice · online")
	p.keys("Enter")
	p.waitScreen("Chat with")
	p.typeText("bob")
	p.keys("Enter")
	in := bob.waitIncoming("alice")
	if err := bob.c.Answer(in.Req, true); err != nil {
		t.Fatal(err)
	}
	p.waitScreen("with bob · on serv1")
}

// TestTerminalHangupQuits: closing the terminal window hangs up the
// client (SIGHUP), which used to kill it on the spot: it stayed listed in
// its chat and its name taken until Central's grace period ran out. It
// now quits as on SIGTERM: Central no longer knows it.
func TestTerminalHangupQuits(t *testing.T) {
	p, bob := aliceChattingWithBob(t)
	// Killing the pane closes its terminal: the kernel hangs up the
	// processes on it, as when a terminal window is closed.
	p.tmux("kill-pane", "-t", "chat")
	testkit.WaitFor(t, 15*time.Second, "Central to forget alice", func() bool {
		_, err := bob.c.API().LookupClient(context.Background(), "alice")
		return centralapi.IsUnknownClient(err)
	})
}

// TestBotHangupQuits: SIGHUP ends the bot as SIGTERM does, leaving its
// chat and deregistering, and exiting 0, rather than killing it.
func TestBotHangupQuits(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	cl := startCluster(t)
	cl.startServer("serv1", 0)
	bob := cl.peer("bob")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-bot", "-name", "alice", "-accept", "-rate", "5",
		"-central", cl.rest, "-control", cl.ctrl, "-probe-every", "300ms")
	cmd.Env = cleanEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, joined, read := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		seen := map[string]bool{}
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			switch ev := fmt.Sprint(m["ev"]); {
			case ev == "ready" && !seen[ev]:
				close(ready)
			case ev == "joined" && !seen[ev]:
				close(joined)
			default:
				continue
			}
			seen[fmt.Sprint(m["ev"])] = true
		}
	}()
	waitFor := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("alice never %s\n%s", what, stderr.String())
		}
	}
	waitFor(ready, "got ready")
	if err := bob.c.Request("alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(joined, "joined a room")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	<-read
	if err := cmd.Wait(); err != nil {
		t.Errorf("alice after SIGHUP: %v, want exit status 0\n%s", err, stderr.String())
	}
	if _, err := bob.c.API().LookupClient(context.Background(), "alice"); !centralapi.IsUnknownClient(err) {
		t.Errorf("alice after SIGHUP: %v, want unknown to Central", err)
	}
}
