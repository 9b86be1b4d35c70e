package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/chatserver"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// startChat runs a chat server on a free loopback port until the test ends.
func startChat(t testing.TB, id string) *chatserver.Server {
	t.Helper()
	return startChatWith(t, id, nil)
}

// startChatWith is startChat with tune applied to the configuration.
func startChatWith(t testing.TB, id string, tune func(*chatserver.Config)) *chatserver.Server {
	t.Helper()
	cfg := chatserver.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.ID = id
	cfg.Loops = 2
	cfg.Logger = testkit.LoggerAt(t, slog.LevelWarn)
	if tune != nil {
		tune(&cfg)
	}
	s, err := chatserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("chat server %s: %v", id, err)
		}
	})
	return s
}

func ref(s *chatserver.Server) proto.ServerRef { return proto.ServerRef{ID: s.ID(), Addr: s.Addr()} }

// member is a Session plus everything its events told.
type member struct {
	t       testing.TB
	s       *Session
	check   *Checker
	mu      sync.Mutex
	moves   []Moved
	drained []Drained
	miss    []Missed
	broke   []Broken
	resumed []Resumed
	here    map[string]bool // members present, from Presence events
	pres    []Presence      // every Presence event, in order
	errs    []error
	last    map[string]Message
	incs    map[string][]uint64 // incarnations seen, by sender, in order
	done    chan struct{}
}

// key names the checker's sender for from's incarnation inc: from itself
// for the first incarnation seen, "from/2", "from/3"... for later ones.
// Caller holds m.mu.
func (m *member) key(from string, inc uint64) string {
	incs := m.incs[from]
	i := slices.Index(incs, inc)
	if i < 0 {
		i = len(incs)
		m.incs[from] = append(incs, inc)
	}
	if i == 0 {
		return from
	}
	return fmt.Sprintf("%s/%d", from, i+1)
}

// settle bounds how long a test waits for the primary delivery paths to
// finish: wide, for a loaded 2-core CI under -race.
const settle = 15 * time.Second

func testConfig(t testing.TB) SessionConfig {
	cfg := DefaultSessionConfig()
	cfg.Logger = testkit.LoggerAt(t, slog.LevelInfo)
	// Far longer than settle, so that the gap timers (the fallback)
	// cannot rescue a test within its waits: the primary paths must do
	// the work.
	cfg.HoldBack = 4 * settle
	cfg.GapTimeout = 8 * settle
	cfg.DrainTimeout = time.Second
	return cfg
}

// configFor returns testConfig for timers "test", and the production
// timers (DefaultSessionConfig) for "default": the paths must work with the
// timers users run, too.
func configFor(t testing.TB, timers string) SessionConfig {
	if timers == "default" {
		cfg := DefaultSessionConfig()
		cfg.Logger = testkit.LoggerAt(t, slog.LevelInfo)
		return cfg
	}
	return testConfig(t)
}

// open opens a session for user on srv in epoch 1, within 5 s.
func open(t testing.TB, cfg SessionConfig, srv proto.ServerRef, room, user string) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg, srv, room, user, 1, nil)
	if err != nil {
		t.Fatalf("open %s: %v", user, err)
	}
	return s
}

// join opens a session for user on srv and drains its events.
func join(t testing.TB, cfg SessionConfig, srv proto.ServerRef, room, user string) *member {
	t.Helper()
	s := open(t, cfg, srv, room, user)
	m := &member{t: t, s: s, check: NewChecker(), last: map[string]Message{}, incs: map[string][]uint64{}, here: map[string]bool{}, done: make(chan struct{})}
	go m.drain()
	t.Cleanup(func() {
		s.Close()
		<-m.done
	})
	return m
}

func (m *member) drain() {
	defer close(m.done)
	for ev := range m.s.Events() {
		m.mu.Lock()
		switch ev := ev.(type) {
		case Message:
			if !m.check.Observe(m.key(ev.From, ev.Inc), ev.Num) {
				m.t.Errorf("%s: message %s#%d breaks the guarantee", m.s.User(), ev.From, ev.Num)
			}
			m.last[ev.From] = ev
		case Moved:
			m.moves = append(m.moves, ev)
		case Drained:
			m.drained = append(m.drained, ev)
		case Missed:
			m.miss = append(m.miss, ev)
			m.check.Missed(m.key(ev.From, ev.Inc), ev.First, ev.Last)
		case Broken:
			m.broke = append(m.broke, ev)
		case Resumed:
			m.resumed = append(m.resumed, ev)
		case Presence:
			m.here[ev.User] = ev.Here
			m.pres = append(m.pres, ev)
		case Error:
			m.errs = append(m.errs, ev.Err)
		}
		m.mu.Unlock()
	}
}

func (m *member) got(from string) int { return m.check.Count(from) }

func (m *member) lastFrom(from string) Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[from]
}

func (m *member) drains() []Drained {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Drained(nil), m.drained...)
}

func (m *member) movesSoFar() []Moved {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Moved(nil), m.moves...)
}

// present returns the members m's Presence events say are here.
func (m *member) present() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for u, here := range m.here {
		if here {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

func (m *member) brokenCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.broke)
}

func (m *member) missed() []Missed {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Missed(nil), m.miss...)
}

func (m *member) send(t testing.TB, text string) uint64 {
	t.Helper()
	n, err := m.s.Send(text)
	if err != nil {
		t.Fatalf("%s send: %v", m.s.User(), err)
	}
	return n
}

func (m *member) move(t testing.TB, srv proto.ServerRef, epoch uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.s.Move(ctx, srv, epoch, nil); err != nil {
		t.Fatalf("%s move: %v", m.s.User(), err)
	}
}

// verify checks that every member got every other member's messages
// exactly once and in order.
func verify(t testing.TB, members []*member, sent map[string]uint64) {
	t.Helper()
	for _, m := range members {
		for from, n := range sent {
			if from != m.s.User() {
				m.check.Expect(from, n)
			}
		}
		r := m.check.Report()
		t.Logf("%s: %v; stats %+v", m.s.User(), r, m.s.Stats())
		if !r.OK() {
			t.Errorf("%s: delivery check failed: %v", m.s.User(), r)
		}
	}
}

// proxy sits between members and a chat server (or Central's control
// port): it can drop the Deliver
// frames it relays to clients (drop), hold back every frame (hole: a path
// that went dark without a reset; as over TCP, what the server sent
// meanwhile arrives, in order, once the path is back), and sever every
// connection at once, which to the members looks like the server dying.
type proxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	drop   atomic.Bool
	hole   atomic.Bool
	mute   atomic.Int32  // a frame type +1 never relayed to the client while set
	muteUp atomic.Int32  // a frame type +1 never relayed to the target while set
	joins  atomic.Int64  // Join frames relayed to the server
	lats   atomic.Int64  // Latency frames relayed to the target
	delay  atomic.Int64  // nanoseconds each frame to the client waits
	sentAt atomic.Int64  // Unix nanoseconds of the last frame written to the client
	pings  atomic.Int64  // Ping frames relayed to the server
	beats  atomic.Int64  // beats (empty Pongs) relayed to the client
	gate   chan struct{} // if set, no connection reaches the target before it is closed
	mu     sync.Mutex
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	return startGatedProxy(t, target, nil)
}

// startGatedProxy is startProxy whose connections are accepted at once
// but reach target only once gate is closed (a nil gate: at once).
func startGatedProxy(t testing.TB, target string, gate chan struct{}) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target, gate: gate, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.kill()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) ref(id string) proto.ServerRef {
	return proto.ServerRef{ID: id, Addr: p.ln.Addr().String()}
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.gate != nil {
			<-p.gate
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		if !p.track(down) || !p.track(up) {
			down.Close()
			up.Close()
			continue
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			p.relayUp(down, up)
			up.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.relayDown(up, down)
			down.Close()
		}()
	}
}

// appendRaw appends a frame of type t with body as it came off the wire.
func appendRaw(b []byte, t wire.Type, body []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(1+len(body)))
	return append(append(b, byte(t)), body...)
}

func write(c net.Conn, b []byte) bool {
	_, err := c.Write(b)
	return err == nil
}

// relayUp copies frames from the client to the server, counting Pings.
func (p *proxy) relayUp(down, up net.Conn) {
	r := wire.NewReader(down, 0)
	var b []byte
	for {
		t, body, err := r.Next()
		if err != nil {
			return
		}
		if t == proto.TPing {
			p.pings.Add(1)
		}
		if t == proto.TJoin {
			p.joins.Add(1)
		}
		if t == proto.TLatency {
			p.lats.Add(1)
		}
		if p.muteUp.Load() == int32(t)+1 {
			continue
		}
		if b = appendRaw(b[:0], t, body); !write(up, b) {
			return
		}
	}
}

// relayDown copies frames from the server to the client, minus Deliver
// frames while drop is set; while hole is set it holds each frame back
// (and so stops reading: the server's writes back up as over a dark TCP
// path).
func (p *proxy) relayDown(up, down net.Conn) {
	r := wire.NewReader(up, 0)
	var b []byte
	for {
		t, body, err := r.Next()
		if err != nil {
			return
		}
		if !p.waitPath() {
			return
		}
		if p.drop.Load() && t == proto.TDeliver || p.mute.Load() == int32(t)+1 {
			continue
		}
		if t == proto.TPong && bytes.Equal(body, beatBody) {
			p.beats.Add(1)
		}
		if d := p.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d)) // an emulated long path, not synchronisation
		}
		if b = appendRaw(b[:0], t, body); !write(down, b) {
			return
		}
		p.sentAt.Store(time.Now().UnixNano())
	}
}

// waitPath waits while the path is dark; false once the proxy has been
// killed meanwhile. It polls: the hole is a test's switch, not a queue.
func (p *proxy) waitPath() bool {
	for p.hole.Load() {
		p.mu.Lock()
		killed := p.conns == nil
		p.mu.Unlock()
		if killed {
			return false
		}
		time.Sleep(time.Millisecond) // emulates the dark path, not synchronisation
	}
	return true
}

// kill closes every relayed connection at once (a reset for both ends).
func (p *proxy) kill() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

// dialRaw joins room as user over a raw protocol peer, to send what a
// correct Session would not.
func dialRaw(t testing.TB, addr, room, user string) *wiretest.Peer {
	t.Helper()
	p := wiretest.Dial(t, addr)
	p.Hello(&proto.Hello{Agent: "test"})
	p.Send(&proto.Join{Room: room, User: user, Epoch: 1})
	wiretest.Expect[*proto.Joined](p, wiretest.AllBut(proto.TJoined))
	return p
}

// stream sends n numbered messages from m, one every gap, calling at(i)
// before message i (1-based) so a test can act mid-stream.
func stream(m *member, n int, gap time.Duration, at func(i int)) error {
	for i := 1; i <= n; i++ {
		if at != nil {
			at(i)
		}
		if _, err := m.s.Send(fmt.Sprintf("%s-%d", m.s.User(), i)); err != nil {
			return err
		}
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	return nil
}

// reader is a Session whose events a test takes itself, at a pace it
// sets, counting what the guarantee is about.
type reader struct {
	s              *Session
	check          *Checker
	broken, missed atomic.Int32
	done           chan struct{}
}

// openReader opens a session for user on srv whose events are taken one
// by one, calling pause(i) before event i (1-based): a user's pace, or a
// stall. The session closes when the test ends, or at close.
func openReader(t testing.TB, cfg SessionConfig, srv proto.ServerRef, room, user string, pause func(i int)) *reader {
	t.Helper()
	s := open(t, cfg, srv, room, user)
	r := &reader{s: s, check: NewChecker(), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		i := 0
		for ev := range s.Events() {
			i++
			pause(i)
			switch ev := ev.(type) {
			case Message:
				r.check.Observe(ev.From, ev.Num)
			case Missed:
				r.missed.Add(1)
				r.check.Missed(ev.From, ev.First, ev.Last)
				t.Logf("%s told %+v", user, ev)
			case Broken:
				r.broken.Add(1)
				t.Logf("%s broken: %v", user, ev.Err)
			}
		}
	}()
	t.Cleanup(r.close)
	return r
}

// close closes the session and waits until its events are taken.
func (r *reader) close() {
	r.s.Close()
	<-r.done
}
