// Package abuse attacks real Central and chat server processes on loopback
// and measures whether they stay up, what they cost, and whether an honest
// room beside the attack loses anything: idle connection floods up to the
// descriptor limit, slowloris frames, clients that never read, and
// oversized unauthenticated bodies.
//
// The targets run as child processes under prlimit, so a test can lower
// their descriptor limit and reach it with a few hundred connections. The
// tests in this package run these attacks at that reduced scale; the
// benchmark BenchmarkIdleFlood runs the 20,000-attempt flood.
package abuse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"nearchat/bench/cluster"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Build compiles central and chatserver into dir.
func Build(dir string) error {
	for _, p := range []string{"central", "chatserver"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, p), "nearchat/cmd/"+p).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build %s: %v\n%s", p, err, out)
		}
	}
	return nil
}

// FreeAddr returns a loopback address with a port free at the time, for
// a target process to bind when it starts. It is cluster.FreeAddr: a port
// below the kernel's ephemeral range, never handed out twice. A port a
// :0 listener had just given up was free to the kernel again, and in the
// window before the target bound it any :0 listener on the machine (a
// test of another package running beside these), a second FreeAddr, or
// an outgoing connection once even ports ran short could be given it:
// the target then exited on "address already in use", or WaitDial
// reached whatever had taken the port.
func FreeAddr() (string, error) { return cluster.FreeAddr() }

// Proc is a target process.
type Proc struct {
	cmd        *exec.Cmd
	statusFile *os.File // /proc/pid/status, opened at start: a flood may leave no descriptor to open it later
	log        *bytes.Buffer
	mu         *sync.Mutex
	done       chan struct{}
	err        error
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Start runs bin with args under a descriptor limit of nofile (soft and
// hard; 0 leaves the limit alone).
func Start(bin string, nofile int, args ...string) (*Proc, error) {
	var cmd *exec.Cmd
	if nofile > 0 {
		cmd = exec.Command("prlimit", append([]string{"--nofile=" + strconv.Itoa(nofile), bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	p := &Proc{cmd: cmd, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	cmd.Stdout = lockedBuf{p.mu, p.log}
	cmd.Stderr = lockedBuf{p.mu, p.log}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.statusFile, _ = os.Open(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Alive reports whether the process is still running.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Log returns what the process wrote so far.
func (p *Proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// status reads a field of /proc/pid/status, in bytes.
func (p *Proc) status(field string) int64 {
	if p.statusFile == nil {
		return 0
	}
	buf := make([]byte, 8192)
	n, err := p.statusFile.ReadAt(buf, 0)
	if n == 0 && err != nil {
		return 0
	}
	b := buf[:n]
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line[len(field)+1:])
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// RSS is the process's resident set now; PeakRSS its high-water mark.
func (p *Proc) RSS() int64     { return p.status("VmRSS") }
func (p *Proc) PeakRSS() int64 { return p.status("VmHWM") }

// FDs counts the process's open descriptors.
func (p *Proc) FDs() int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	return len(es)
}

// Stop sends SIGTERM, then SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) {
	if !p.Alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// WaitDial waits until addr accepts a TCP connection.
func WaitDial(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // polling a port that is coming up
	}
}

// Member is one honest chat connection.
type Member struct {
	c    net.Conn
	r    *wire.Reader
	user string
}

// Join dials addr, says Hello and joins room as user (no ticket: the
// target runs -insecure).
func Join(addr, room, user string) (*Member, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	m := &Member{c: c, r: wire.NewReader(bufio.NewReader(c), wire.MaxFrame), user: user}
	if err := m.send(&proto.Hello{V: wire.Version, Agent: "abuse-honest"}); err != nil {
		c.Close()
		return nil, err
	}
	if err := m.send(&proto.Join{Room: room, User: user, Epoch: 1}); err != nil {
		c.Close()
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		t, body, err := m.r.Next()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%s joining: %w", user, err)
		}
		if t == proto.TJoined {
			break
		}
		if t == proto.TError {
			var e proto.Error
			_ = wire.Unmarshal(body, &e)
			c.Close()
			return nil, fmt.Errorf("%s joining: refused: %w", user, &e)
		}
	}
	c.SetReadDeadline(time.Time{})
	return m, nil
}

func (m *Member) send(msg wire.Message) error {
	b, err := wire.AppendFrame(nil, msg)
	if err != nil {
		return err
	}
	m.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = m.c.Write(b)
	return err
}

// RoomStats is what an honest room saw.
type RoomStats struct {
	Sent, Delivered, Lost int
	P50, P99, Max         time.Duration
	Err                   error
}

func (s RoomStats) String() string {
	return fmt.Sprintf("sent %d, delivered %d, lost %d, p50 %v, p99 %v, max %v, err %v", s.Sent, s.Delivered, s.Lost, s.P50, s.P99, s.Max, s.Err)
}

// Room is an honest two-member room: each member sends a message every
// Every and counts what the other delivers.
type Room struct {
	a, b    *Member
	stop    chan struct{}
	senders sync.WaitGroup
	wg      sync.WaitGroup // receivers
	sent    atomic.Int64
	mu      sync.Mutex
	lat     []time.Duration
	got     map[string]uint64 // highest number delivered, by sender
	gotN    int
	errs    []error
}

// StartRoom joins two members to room on addr and starts the chat.
func StartRoom(addr, room string, every time.Duration) (*Room, error) {
	a, err := Join(addr, room, "honest-a")
	if err != nil {
		return nil, err
	}
	b, err := Join(addr, room, "honest-b")
	if err != nil {
		a.c.Close()
		return nil, err
	}
	r := &Room{a: a, b: b, stop: make(chan struct{}), got: map[string]uint64{}}
	for _, pair := range [][2]*Member{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		r.senders.Add(1)
		r.wg.Add(1)
		go r.sender(from, every)
		go r.receiver(to, from.user)
	}
	return r, nil
}

func (r *Room) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *Room) sender(m *Member, every time.Duration) {
	defer r.senders.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for n := uint64(1); ; n++ {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		if err := m.send(&proto.Chat{Num: n, At: time.Now().UnixNano(), Text: "honest"}); err != nil {
			r.fail(fmt.Errorf("%s send: %w", m.user, err))
			return
		}
		r.sent.Add(1)
	}
}

func (r *Room) receiver(m *Member, from string) {
	defer r.wg.Done()
	for {
		t, body, err := m.r.Next()
		if err != nil {
			select {
			case <-r.stop:
			default:
				r.fail(fmt.Errorf("%s receive: %w", m.user, err))
			}
			return
		}
		switch t {
		case proto.TDeliver:
			var d proto.Deliver
			if err := wire.Unmarshal(body, &d); err != nil || d.From != from {
				continue
			}
			lat := time.Duration(time.Now().UnixNano() - d.At)
			r.mu.Lock()
			r.lat = append(r.lat, lat)
			r.gotN++
			r.got[from] = max(r.got[from], d.Num)
			r.mu.Unlock()
		case proto.TPing:
			var p proto.Ping
			if wire.Unmarshal(body, &p) == nil {
				_ = m.send((*proto.Pong)(&p))
			}
		case proto.TError:
			var e proto.Error
			_ = wire.Unmarshal(body, &e)
			if e.Fatal {
				r.fail(fmt.Errorf("%s: server error %v", m.user, &e))
				return
			}
		}
	}
}

// Stop ends the chat, waits up to settle for messages in flight, and
// reports. The senders are waited for first: a sender whose tick raced
// the stop may still send one more, and counting the deliveries before
// it is counted reported that message lost.
func (r *Room) Stop(settle time.Duration) RoomStats {
	close(r.stop)
	r.senders.Wait()
	deadline := time.Now().Add(settle)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		done := r.gotN >= int(r.sent.Load())
		r.mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling for the last deliveries
	}
	r.a.c.Close()
	r.b.c.Close()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := RoomStats{Sent: int(r.sent.Load()), Delivered: r.gotN, Err: errors.Join(r.errs...)}
	st.Lost = st.Sent - st.Delivered
	st.P50, st.P99, st.Max = quantiles(r.lat)
	return st
}

// quantiles sorts d and returns its median, 99th percentile and maximum
// (zeros when d is empty).
func quantiles(d []time.Duration) (p50, p99, hi time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100], d[len(d)-1]
}

// Flood holds connections an attack opened.
type Flood struct {
	mu    sync.Mutex
	conns []net.Conn
	// Opened counts connections established and held; Refused those the
	// target closed at once (only counted when Open is asked to check);
	// Failed dials that failed.
	Opened, Refused, Failed int
}

// Close closes every held connection.
func (f *Flood) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// Alive counts held connections the target has not closed: a read with a
// short deadline that times out means open.
func (f *Flood) Alive() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	buf := make([]byte, 4096)
	for _, c := range f.conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		for {
			_, err := c.Read(buf)
			if err == nil {
				continue // the target's error frame, say: read on
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				n++
			}
			break
		}
	}
	return n
}

// Open dials n connections to addr with up to par dials at once, writes
// first (if not nil) on each, and holds them.
func Open(ctx context.Context, addr string, n, par int, first []byte) *Flood {
	return open(ctx, addr, n, par, first, 0)
}

// OpenShed is Open, but waits up to check after each dial and drops (as
// Refused) the connections the target closed by then, so that a flood far
// past the target's limit does not exhaust the attacker's descriptors.
func OpenShed(ctx context.Context, addr string, n, par int, check time.Duration) *Flood {
	return open(ctx, addr, n, par, nil, check)
}

func open(ctx context.Context, addr string, n, par int, first []byte, check time.Duration) *Flood {
	f := &Flood{}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := 0; i < n && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err == nil && first != nil {
				c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				_, err = c.Write(first)
			}
			if err == nil && check > 0 {
				c.SetReadDeadline(time.Now().Add(check))
				if _, rerr := c.Read(make([]byte, 512)); !isTimeout(rerr) {
					c.Close()
					f.mu.Lock()
					f.Refused++
					f.mu.Unlock()
					return
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if err != nil {
				f.Failed++
				if c != nil {
					c.Close()
				}
				return
			}
			f.Opened++
			f.conns = append(f.conns, c)
		}()
	}
	wg.Wait()
	return f
}

// HelloFrame is a client's Hello.
func HelloFrame() []byte {
	b, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "abuse"})
	return b
}

// SlowlorisFrame is a Hello and then the header of a frame that never
// finishes.
func SlowlorisFrame() []byte {
	b := HelloFrame()
	return append(b, 0, 0, 0x10, 0, byte(proto.TPing))
}

// NonReader says Hello and sends pings for d without ever reading; it
// returns the bytes it got out and whether the target cut it off.
func NonReader(addr string, d time.Duration) (sent int64, cut bool) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, true
	}
	defer c.Close()
	batch := HelloFrame()
	for i := range 1024 {
		batch, _ = wire.AppendFrame(batch, &proto.Ping{ID: uint64(i), At: 1})
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Write(batch)
		sent += int64(n)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return sent, true
		}
	}
	return sent, false
}

// BigBody posts a body of size bytes to url with the given bearer token,
// sending it as fast as the target reads it; it returns the status.
func BigBody(url, token string, size int) (int, error) {
	host, path, _ := strings.Cut(strings.TrimPrefix(url, "http://"), "/")
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	hdr := fmt.Sprintf("POST /%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nAuthorization: Bearer %s\r\n\r\n", path, host, size, token)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		_, _ = c.Write([]byte(hdr))
		body := append([]byte(`{"conns":1,"rooms":[`), bytes.Repeat([]byte(`{"id":"r","epoch":1,"members":["a"]},`), size/40)...)
		_, _ = c.Write(body[:min(len(body), size)])
	}()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	n, _ := strconv.Atoi(f[1])
	return n, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Newcomers measures whether a target still serves new honest clients
// during an attack: every Every it runs one arrival (dial, handshake,
// first exchange) and records how long it took or that it failed.
type Newcomers struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	took []time.Duration
	errs []error
	own  int // arrivals this process could not start: it was out of descriptors itself
}

// NewcomerStats is what Newcomers saw. Skipped arrivals found this
// process, not the target, out of descriptors (the flood holds as many as
// the target does, under the same limit), and count as neither served nor
// failed.
type NewcomerStats struct {
	N, Failed, Skipped int
	P50, P99, Max      time.Duration
	FirstErr           error
}

func (s NewcomerStats) String() string {
	return fmt.Sprintf("%d arrivals, %d failed, %d skipped (the attacker out of descriptors), p50 %v, p99 %v, max %v, first error %v",
		s.N, s.Failed, s.Skipped, s.P50, s.P99, s.Max, s.FirstErr)
}

// StartNewcomers runs arrive every every until Stop; each arrival gets
// timeout.
func StartNewcomers(every, timeout time.Duration, arrive func(ctx context.Context) error) *Newcomers {
	n := &Newcomers{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(n.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			start := time.Now()
			err := arrive(ctx)
			took := time.Since(start)
			cancel()
			n.mu.Lock()
			if errors.Is(err, syscall.EMFILE) {
				n.own++
			} else if err != nil {
				n.errs = append(n.errs, err)
			} else {
				n.took = append(n.took, took)
			}
			n.mu.Unlock()
		}
	}()
	return n
}

// Stop ends the arrivals and reports.
func (n *Newcomers) Stop() NewcomerStats {
	close(n.stop)
	<-n.done
	n.mu.Lock()
	defer n.mu.Unlock()
	st := NewcomerStats{N: len(n.took) + len(n.errs), Failed: len(n.errs), Skipped: n.own}
	if len(n.errs) > 0 {
		st.FirstErr = n.errs[0]
	}
	st.P50, st.P99, st.Max = quantiles(n.took)
	return st
}

// Greet is one newcomer on a chat server or Central's control port: it
// dials addr (through dial, which may add TLS), says Hello (with token, on
// Central) and waits for Welcome.
func Greet(ctx context.Context, dial func(ctx context.Context, addr string) (net.Conn, error), addr, token string) error {
	c, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "abuse-newcomer", Token: token})
	if _, err := c.Write(b); err != nil {
		return err
	}
	t, body, err := wire.NewReader(bufio.NewReader(c), wire.MaxFrame).Next()
	if err != nil {
		return err
	}
	if t != proto.TWelcome {
		var e proto.Error
		_ = wire.Unmarshal(body, &e)
		return fmt.Errorf("frame 0x%02x instead of Welcome: %v", byte(t), &e)
	}
	return nil
}

// DialTCP is a plain dialer for Greet.
func DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}
