package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/chatserver"
	"nearchat/client"
	"nearchat/pkg/delaynet"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// The tests in this file run the real bin/chat in a tmux pane, type into it
// with send-keys and read the screen with capture-pane, against a Central,
// chat servers and peer users run in the test process.

func testLog(t *testing.T) *slog.Logger { return testkit.LoggerAt(t, slog.LevelWarn) }

func needTmux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed: skipping the terminal integration test (apt-get install tmux)")
	}
}

// cluster is a Central and its chat servers, in this process.
type cluster struct {
	t      *testing.T
	rest   string
	ctrl   string
	delays *delaynet.Delays
}

const testSecret = "tui-test-secret"

func startCluster(t *testing.T) *cluster {
	t.Helper()
	cfg := central.DefaultConfig()
	cfg.RESTListen, cfg.ControlListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.OfflineAfter = 1500 * time.Millisecond
	cfg.ScanInterval = 500 * time.Millisecond
	cfg.AssignRetry = 300 * time.Millisecond
	cfg.AwaitingEvery = 300 * time.Millisecond
	cfg.RequestTimeout = time.Minute
	cfg.Policy.MinDwell = time.Second
	cfg.ClusterSecret = testSecret
	cfg.Logger = testLog(t)
	cen, err := central.New(cfg)
	if err != nil {
		t.Fatalf("central.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cen.Run(ctx) }()
	t.Cleanup(func() { cancel(); cen.Close(); <-done })
	return &cluster{t: t, rest: cen.RESTAddr(), ctrl: cen.ControlAddr(), delays: &delaynet.Delays{}}
}

// startServer runs chat server id, and returns its address; in-process
// peers see rtt to it.
func (c *cluster) startServer(id string, rtt time.Duration) string {
	c.t.Helper()
	cfg := chatserver.DefaultConfig()
	cfg.Listen, cfg.ID, cfg.Loops = "127.0.0.1:0", id, 1
	cfg.Central, cfg.Secret, cfg.Heartbeat = c.rest, testSecret, 200*time.Millisecond
	cfg.Logger = testLog(c.t)
	s, err := chatserver.New(cfg)
	if err != nil {
		c.t.Fatalf("chatserver.New %s: %v", id, err)
	}
	c.delays.Set(s.Advertised(), rtt/2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	c.t.Cleanup(func() { cancel(); <-done })
	return s.Addr()
}

// peer is a user driven by the test through the client library.
type peer struct {
	t    *testing.T
	name string
	c    *client.Client

	mu       sync.Mutex
	got      []client.Message
	statuses []client.Status
	incoming []client.Incoming
	sess     *client.Session
}

func (c *cluster) peer(name string) *peer {
	c.t.Helper()
	opts := client.DefaultConfig()
	opts.Central, opts.Control, opts.User = c.rest, c.ctrl, name
	opts.Dialer = &delaynet.Dialer{Delay: c.delays.Get}
	opts.ProbeEvery = 300 * time.Millisecond
	opts.Probe.Samples = 3
	opts.BackoffMin, opts.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	opts.Logger = testLog(c.t)
	cl, err := client.New(opts)
	if err != nil {
		c.t.Fatal(err)
	}
	p := &peer{t: c.t, name: name, c: cl}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = cl.Run(ctx) }()
	go func() { defer wg.Done(); p.pump(ctx) }()
	c.t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-cl.Reported():
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s: no latency report within 10s", name)
	}
	return p
}

func (p *peer) pump(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-p.c.Events():
			p.mu.Lock()
			switch ev := ev.(type) {
			case client.Status:
				p.statuses = append(p.statuses, ev)
			case client.Incoming:
				p.incoming = append(p.incoming, ev)
			case client.RoomReady:
				p.sess = ev.Session
			case client.Message:
				p.got = append(p.got, ev)
			}
			p.mu.Unlock()
		}
	}
}

func (p *peer) received(from, text string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.got {
		if m.From == from && m.Text == text {
			return true
		}
	}
	return false
}

func (p *peer) session() *client.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sess
}

func (p *peer) hasStatus(code proto.StatusCode) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.statuses {
		if s.Code == code {
			return true
		}
	}
	return false
}

// waitIncoming returns the first chat request from from.
func (p *peer) waitIncoming(from string) client.Incoming {
	p.t.Helper()
	var in client.Incoming
	testkit.WaitFor(p.t, 10*time.Second, p.name+" to get a request from "+from, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, i := range p.incoming {
			if i.From == from {
				in = i
				return true
			}
		}
		return false
	})
	return in
}

func (p *peer) send(text string) {
	p.t.Helper()
	s := p.session()
	if s == nil {
		p.t.Fatalf("%s is in no room", p.name)
	}
	if _, err := s.Send(text); err != nil {
		p.t.Fatalf("%s send: %v", p.name, err)
	}
}

// pane is one tmux session with a private server socket.
type pane struct {
	t    *testing.T
	sock string
	log  string
}

// startPane runs command in a detached tmux session of w x h.
func startPane(t *testing.T, w, h int, command, log string) *pane {
	t.Helper()
	p := &pane{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock"), log: log}
	p.tmux("new-session", "-d", "-s", "chat", "-x", fmt.Sprint(w), "-y", fmt.Sprint(h), command)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last screen:\n%s", p.screen())
			if b, err := os.ReadFile(p.log); err == nil {
				t.Logf("client log:\n%s", b)
			}
		}
		_ = p.cmd("kill-server").Run()
	})
	return p
}

func (p *pane) cmd(args ...string) *exec.Cmd {
	c := exec.Command("tmux", append([]string{"-S", p.sock}, args...)...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TMUX=") {
			env = append(env, kv)
		}
	}
	c.Env = env
	return c
}

func (p *pane) tmux(args ...string) string {
	p.t.Helper()
	out, err := p.cmd(args...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// keys sends key names (Enter, Down, Escape, C-c...).
func (p *pane) keys(keys ...string) {
	p.t.Helper()
	p.tmux(append([]string{"send-keys", "-t", "chat"}, keys...)...)
}

// typeText types s literally.
func (p *pane) typeText(s string) {
	p.t.Helper()
	p.tmux("send-keys", "-t", "chat", "-l", s)
}

func (p *pane) screen() string {
	out, err := p.cmd("capture-pane", "-p", "-t", "chat").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(capture-pane: %v: %s)", err, out)
	}
	return string(out)
}

// waitScreen polls the screen until it contains every one of want.
func (p *pane) waitScreen(want ...string) string {
	p.t.Helper()
	var s string
	testkit.WaitFor(p.t, 15*time.Second, fmt.Sprintf("the screen to show %q", want), func() bool {
		s = p.screen()
		for _, w := range want {
			if !strings.Contains(s, w) {
				return false
			}
		}
		return true
	})
	return s
}

// chatCommand runs bin/chat, then reports its exit status and whether the
// terminal settings came back as they were.
func chatCommand(t *testing.T, bin string, args ...string) (string, string) {
	dir := t.TempDir()
	log := filepath.Join(dir, "chat.log")
	before, after := filepath.Join(dir, "stty.before"), filepath.Join(dir, "stty.after")
	// stty -g: the settings without the window size, which the test changes.
	return fmt.Sprintf("stty -g > %s; %s %s -log %s; echo EXIT=$?; stty -g > %s; "+
		"if cmp -s %s %s; then echo TTY=RESTORED; else echo TTY=CHANGED; fi; sleep 120",
		before, bin, strings.Join(args, " "), log, after, before, after), log
}

func TestTerminalChat(t *testing.T) {
	needTmux(t)
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	cl := startCluster(t)
	cl.startServer("serv2", 100*time.Millisecond)
	bob := cl.peer("bob")

	command, log := chatCommand(t, bin, "-central", cl.rest, "-control", cl.ctrl, "-emulate-rtt", "serv1=40ms,serv2=100ms")
	p := startPane(t, 80, 24, command, log)

	p.waitScreen("Your user name:")
	p.typeText("alice")
	p.keys("Enter")
	p.waitScreen("> Begin a chat", "View chat requests (0)", "Quit", "alice · online")

	p.keys("Enter")
	p.waitScreen("Chat with", "Online now: bob")
	p.typeText("b")
	p.keys("Tab") // completes to bob, the one online user starting with b
	p.keys("Enter")
	// The status stream, live, before bob answers.
	s := p.waitScreen("Request to bob:", "Central has the request", "waiting for an answer")
	for _, jargon := range []string{"q-", "ACK_CONN", "REQ_SENT", "AWAITING_REQ", "STATUS_"} {
		if strings.Contains(s, jargon) {
			t.Errorf("protocol jargon %q on screen:\n%s", jargon, s)
		}
	}
	in := bob.waitIncoming("alice")
	if err := bob.c.Answer(in.Req, true); err != nil {
		t.Fatal(err)
	}
	s = p.waitScreen("with bob · on serv2", "* chat with bob on serv2")
	t.Logf("chat view:\n%s", s)
	if strings.Contains(s, "r-") {
		t.Errorf("a room id on screen:\n%s", s)
	}

	p.typeText("hello from tmux")
	p.keys("Enter")
	testkit.WaitFor(t, 10*time.Second, "bob to receive alice's message", func() bool { return bob.received("alice", "hello from tmux") })
	// Timestamped; pending until the server acknowledged it, then not.
	stamped := regexp.MustCompile(`\d\d:\d\d alice: hello from tmux`)
	testkit.WaitFor(t, 10*time.Second, "the timestamped line", func() bool { return stamped.MatchString(p.screen()) })
	testkit.WaitFor(t, 10*time.Second, "the pending mark to clear", func() bool {
		s := p.screen()
		return strings.Contains(s, "alice: hello from tmux") && !strings.Contains(s, "[sending]")
	})

	testkit.WaitFor(t, 10*time.Second, "bob's session", func() bool { return bob.session() != nil })
	bob.send("hi alice")
	p.waitScreen("bob: hi alice")

	// A better server starts: the room moves, and the move gets its line.
	start := time.Now()
	cl.startServer("serv1", 40*time.Millisecond)
	moved := regexp.MustCompile(`the chat moved to serv1, a closer server`)
	testkit.WaitFor(t, 20*time.Second, "the move line", func() bool { return moved.MatchString(p.screen()) })
	t.Logf("serv1 started -> move line on screen: %v; %s", time.Since(start).Round(time.Millisecond), moved.FindString(p.screen()))
	t.Logf("after the move:\n%s", p.waitScreen("on serv1"))
	p.typeText("after the move")
	p.keys("Enter")
	testkit.WaitFor(t, 10*time.Second, "bob to receive the message sent after the move", func() bool { return bob.received("alice", "after the move") })

	// Cursor editing: "abd" -> Left, Backspace... -> "xacd!".
	p.typeText("abd")
	p.keys("Left", "BSpace", "Home")
	p.typeText("x")
	p.keys("End")
	p.typeText("!")
	p.keys("Left", "Left")
	p.typeText("c")
	p.keys("Enter")
	testkit.WaitFor(t, 10*time.Second, "bob to receive the edited line", func() bool { return bob.received("alice", "xacd!") })

	// Input history: Up recalls the last line sent.
	p.keys("Up")
	testkit.WaitFor(t, 5*time.Second, "the recalled line", func() bool {
		lines := strings.Split(strings.TrimRight(p.screen(), "\n"), "\n")
		return strings.HasPrefix(lines[len(lines)-1], "> xacd!")
	})
	p.keys("C-u")

	p.tmux("resize-window", "-t", "chat", "-x", "100", "-y", "30")
	testkit.WaitFor(t, 10*time.Second, "a redraw at 100x30", func() bool {
		lines := strings.Split(strings.TrimSuffix(p.screen(), "\n"), "\n")
		return len(lines) == 30 && strings.HasPrefix(lines[29], ">") &&
			len(strings.TrimRight(lines[0], " ")) > 80 && strings.Contains(lines[0], "alice · online")
	})

	p.keys("C-c")
	p.waitScreen("EXIT=0", "TTY=RESTORED")
	// Ctrl-C gave the name back at once.
	if _, err := bob.c.API().RegisterClient(context.Background(), "alice", ""); err != nil {
		t.Errorf("alice's name after Ctrl-C: %v", err)
	}
}

func TestTerminalRequests(t *testing.T) {
	needTmux(t)
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	cl := startCluster(t)
	cl.startServer("serv1", 40*time.Millisecond)
	carol := cl.peer("carol")
	dave := cl.peer("dave")

	command, log := chatCommand(t, bin, "-central", cl.rest, "-control", cl.ctrl)
	p := startPane(t, 80, 24, command, log)

	p.waitScreen("Your user name:")
	p.typeText("a b")
	p.keys("Enter")
	p.waitScreen("a space (character 2) is not allowed")
	p.keys("C-u")
	p.typeText("carol") // held by a live session
	p.keys("Enter")
	p.waitScreen(`"carol" is taken`)
	p.keys("C-u")
	p.typeText("alice")
	p.keys("Enter")
	p.waitScreen("View chat requests (0)", "alice · online")

	if err := carol.c.Request("alice"); err != nil {
		t.Fatal(err)
	}
	p.waitScreen("View chat requests (1)")
	if err := dave.c.Request("alice"); err != nil {
		t.Fatal(err)
	}
	p.waitScreen("View chat requests (2)")

	p.keys("Down", "Enter")
	p.waitScreen("chat requests (2)", "> carol", "dave", "Enter/a: accept")
	p.keys("j", "d")
	testkit.WaitFor(t, 10*time.Second, "dave to see REQ_DECLINED", func() bool { return dave.hasStatus(proto.ReqDeclined) })
	p.waitScreen("declined dave's request", "> carol")
	p.keys("Enter")
	p.waitScreen("with carol · on serv1", "* chat with carol on serv1")
	testkit.WaitFor(t, 10*time.Second, "carol's session", func() bool { return carol.session() != nil })
	carol.send("welcome")
	p.waitScreen("carol: welcome")

	// Esc asks before it leaves; any other key stays.
	p.keys("Escape")
	p.waitScreen("Leave the chat with carol? y: leave")
	p.keys("n")
	p.waitScreen("Enter: send")
	p.keys("Escape")
	p.waitScreen("Leave the chat with carol?")
	p.keys("y")
	p.waitScreen("> View chat requests (0)", "left the chat with carol")
	p.keys("Down", "Enter") // Quit, which asks too
	p.waitScreen("Quit nearchat? y: quit")
	p.keys("y")
	p.waitScreen("EXIT=0", "TTY=RESTORED")
	// Quitting gave the name back at once: no "reserved" for a minute.
	if _, err := carol.c.API().RegisterClient(context.Background(), "alice", ""); err != nil {
		t.Errorf("alice's name after Quit: %v", err)
	}
}

// TestTerminalPaste: text pasted into the chat with line breaks in it used
// to be sent up to the first break, the rest left in the input line. With
// bracketed paste on, the breaks become spaces and nothing goes out until
// Enter; on exit the mode is off again, so the shell gets a paste as typed
// text (with the mode left on, it would echo the markers, ^[[200~).
func TestTerminalPaste(t *testing.T) {
	p, bob := aliceChattingWithBob(t)
	paste := func(s string) {
		t.Helper()
		p.tmux("set-buffer", "-b", "clip", s)
		// -p: with the markers, if the program in the pane asked for them.
		p.tmux("paste-buffer", "-p", "-b", "clip", "-t", "chat")
	}
	paste("line one\nline two\n")
	p.waitScreen("> line one line two")
	p.keys("Enter")
	testkit.WaitFor(t, 10*time.Second, "bob to receive the pasted lines as one message", func() bool { return bob.received("alice", "line one line two ") })
	// Messages arrive in order: a line sent at the paste came first.
	for _, early := range []string{"line one", "line two"} {
		if bob.received("alice", early) {
			t.Errorf("the paste sent %q on its own", early)
		}
	}
	p.keys("C-c")
	p.waitScreen("EXIT=0", "TTY=RESTORED")
	paste("after exit")
	s := p.waitScreen("after exit")
	if strings.Contains(s, "200~") {
		t.Errorf("bracketed paste still on after exit:\n%s", s)
	}
}
