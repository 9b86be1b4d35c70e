package bench

import (
	"errors"
	"fmt"
	"nearchat/bench/abuse"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"nearchat/pkg/connlimit"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// TestBudgetRSS runs bin/chatserver as its own process with small memory
// budgets and prints its resident set beside them: first with many idle
// members (NEARCHAT_BUDGET_MEMBERS, default 100,000, in rooms of four),
// then, on a fresh server, with 1,000 rooms each holding a full history
// (256 messages of 256 bytes; the history budget is sized to admit them,
// since a server at its budget refuses new rooms). It fails when the RSS
// with full histories passes the history budget plus a fixed allowance
// for the runtime and the connections themselves.
//
//	NEARCHAT_BENCH=1 go test -run TestBudgetRSS -v -timeout 10m ./bench/
func TestBudgetRSS(t *testing.T) {
	if os.Getenv("NEARCHAT_BENCH") == "" {
		t.Skip("set NEARCHAT_BENCH=1 to run the budget RSS measurement")
	}
	const (
		historyBudget  = 256 << 20
		outboundBudget = 32 << 20
		history        = 256
		rooms          = 1000
		textSize       = 256
	)
	want := 100_000
	if v, err := strconv.Atoi(os.Getenv("NEARCHAT_BUDGET_MEMBERS")); err == nil && v > 0 {
		want = v
	}
	// Each member is a descriptor here and one in the server (which
	// inherits this limit): raise it if allowed, or measure what fits.
	members := raiseNoFile(t, want)
	if members < want {
		t.Logf("descriptor limit: measuring %d idle members, not %d", members, want)
	}
	bin := filepath.Join(t.TempDir(), "chatserver")
	if out, err := exec.Command("go", "build", "-o", bin, "nearchat/cmd/chatserver").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	args := []string{"-history-budget", strconv.Itoa(historyBudget), "-outbound-budget", strconv.Itoa(outboundBudget),
		"-history", strconv.Itoa(history), "-idle-timeout", "0", "-max-conns", strconv.Itoa(members + 100),
		"-insecure", "-max-conns-per-source", "0"} // raw members with no tickets, all from loopback

	// Idle members.
	srv := startChatServer(t, bin, args)
	base := srv.rss(t)
	start := time.Now()
	cs, err := openIdleMembers(srv.addr, members, 4)
	idleSetup := time.Since(start)
	if err != nil {
		t.Errorf("idle members: %d of %d joined: %v", len(cs), members, err)
	}
	idle := srv.rss(t)
	t.Logf("idle: %d members joined in %v", len(cs), idleSetup.Round(time.Millisecond))
	for _, c := range cs {
		c.Close()
	}
	srv.stop(t)

	// Full histories.
	srv = startChatServer(t, bin, args)
	start = time.Now()
	writers, err := fillHistories(srv.addr, rooms, history, textSize)
	if err != nil {
		t.Fatalf("histories: %v", err)
	}
	fill := time.Since(start)
	full := srv.rss(t)
	for _, c := range writers {
		c.Close()
	}
	srv.stop(t)

	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	fmt.Printf("\nchat server RSS under its budgets (-history-budget %s, -outbound-budget %s, -history %d)\n",
		mib(historyBudget), mib(outboundBudget), history)
	fmt.Printf("  %-44s %12s %12s\n", "load", "RSS", "budgets sum")
	fmt.Printf("  %-44s %12s %12s\n", "none (after start)", mib(base), mib(historyBudget+outboundBudget))
	fmt.Printf("  %-44s %12s %12s   (%.0f bytes/member, %v to join)\n", fmt.Sprintf("%d idle members, rooms of 4", len(cs)),
		mib(idle), mib(historyBudget+outboundBudget), float64(idle-base)/float64(max(len(cs), 1)), idleSetup.Round(time.Second))
	fmt.Printf("  %-44s %12s %12s   (%s of message text, %v to send)\n", fmt.Sprintf("%d rooms x %d messages of %d B", rooms, history, textSize),
		mib(full), mib(historyBudget+outboundBudget), mib(int64(rooms*history*textSize)), fill.Round(time.Second))

	// The histories must stay within their budget: 64 MiB covers the
	// runtime, the loops and the connections' buffers.
	if limit := int64(historyBudget + 64<<20); full > limit {
		t.Errorf("RSS with full histories %s, over the history budget + 64 MiB (%s)", mib(full), mib(limit))
	}
}

// raiseNoFile lifts RLIMIT_NOFILE so that this process and the server can
// each hold members connections, and returns how many members fit.
func raiseNoFile(t *testing.T, members int) int {
	lim, err := connlimit.RaiseNoFile(uint64(members) + 1000)
	if err != nil {
		t.Fatal(err)
	}
	return min(members, int(lim)-1000)
}

type chatProc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan error
}

func startChatServer(t *testing.T, bin string, args []string) *chatProc {
	t.Helper()
	// A port below the ephemeral range: one a :0 listener gave up could
	// be taken, before the process binds it, by any outgoing connection
	// on the machine (the idle members below open thousands).
	addr, err := abuse.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"-listen", addr, "-id", "budget"}, args...)...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "chatserver.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &chatProc{cmd: cmd, addr: addr, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() { p.stop(t) })
	if err := abuse.WaitDial(addr, 30*time.Second); err != nil {
		t.Fatalf("chatserver never listened on %s: %v (log %s)", addr, err, logf.Name())
	}
	return p
}

// rss reads the server's resident set once it has stopped growing (two
// reads a second apart within 1%), so a measurement is not taken while
// the loops still work through the last frames.
func (p *chatProc) rss(t *testing.T) int64 {
	t.Helper()
	prev := int64(-1)
	for range 30 {
		v, err := vmRSS(p.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if prev > 0 && v-prev < prev/100 {
			return v
		}
		prev = v
		time.Sleep(time.Second)
	}
	return prev
}

func (p *chatProc) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.exited <- nil // a later stop returns at once
}

// openIdleMembers joins n members, per rooms of size, from as many
// loopback source addresses as the ephemeral port range needs, and leaves
// them idle. It returns the members that joined.
func openIdleMembers(addr string, n, size int) ([]net.Conn, error) {
	cs := make([]net.Conn, n)
	var next atomic.Int64
	var mu sync.Mutex
	var errs error
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				// 20,000 connections per source address stays inside the
				// default ephemeral port range.
				src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i/20_000))}
				c, err := joinFrom(src, addr, fmt.Sprintf("idle-%d", i/size), "u"+strconv.Itoa(i%size))
				if err != nil {
					mu.Lock()
					if errs == nil {
						errs = err
					}
					mu.Unlock()
					return
				}
				cs[i] = c
			}
		}()
	}
	wg.Wait()
	out := cs[:0]
	for _, c := range cs {
		if c != nil {
			out = append(out, c)
		}
	}
	return out, errs
}

func joinFrom(src *net.TCPAddr, addr, room, user string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	var c net.Conn
	var err error
	// Dozens of dials at once can overflow the listener's backlog for a
	// moment; a refused dial is tried again, a refused Join is not.
	for try := range 5 {
		if c, err = d.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(time.Duration(try+1) * 20 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	b, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "bench-idle/1"})
	b, _ = wire.AppendFrame(b, &proto.Join{Room: room, User: user})
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, err
	}
	// Read until Joined; the Presence frames of later joiners stay in the
	// kernel, as an idle client's would.
	rd := wire.NewReader(c, wire.MaxFrame)
	for {
		t, body, err := rd.Next()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%s/%s: %w", room, user, err)
		}
		switch t {
		case proto.TJoined:
			c.SetDeadline(time.Time{})
			return c, nil
		case proto.TError:
			c.Close()
			return nil, fmt.Errorf("%s/%s: %w", room, user, decodeError(body))
		}
	}
}

// fillHistories sends history messages of textSize bytes into each of
// rooms rooms (one member each, who stays, so the room and its history
// stay) and waits for every Ack. It returns the members' connections.
func fillHistories(addr string, rooms, history, textSize int) ([]net.Conn, error) {
	var next atomic.Int64
	cs := make([]net.Conn, rooms)
	errc := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= rooms {
					return
				}
				c, err := fillRoom(addr, fmt.Sprintf("hist-%d", i), history, textSize)
				if err != nil {
					errc <- err
					return
				}
				cs[i] = c
			}
		}()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	out := cs[:0]
	for _, c := range cs {
		if c != nil {
			out = append(out, c)
		}
	}
	return out, errors.Join(errs...)
}

func fillRoom(addr, room string, n, textSize int) (c net.Conn, err error) {
	if c, err = joinFrom(nil, addr, room, "writer"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	text := strings.Repeat("h", textSize)
	var b []byte
	for i := 1; i <= n; i++ {
		b, _ = wire.AppendFrame(b, &proto.Chat{Num: uint64(i), Text: text})
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	go c.Write(b) // the Acks are read below while the frames go out
	rd := wire.NewReader(c, wire.MaxFrame)
	for acked := 0; acked < n; {
		t, body, err := rd.Next()
		if err != nil {
			return nil, fmt.Errorf("%s: %d of %d acked: %w", room, acked, n, err)
		}
		switch t {
		case proto.TAck:
			acked++
		case proto.TError:
			return nil, fmt.Errorf("%s: %w", room, decodeError(body))
		}
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
