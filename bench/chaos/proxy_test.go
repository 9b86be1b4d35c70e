package chaos

import (
	"net"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// sink accepts one connection and returns it.
func sink(t *testing.T) (addr string, conns chan net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conns = make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			conns <- c
		}
	}()
	return l.Addr().String(), conns
}

func frame(t *testing.T, m wire.Message) []byte {
	t.Helper()
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	readersMu sync.Mutex
	readers   = map[net.Conn]*wire.Reader{}
)

// readFrame reads one frame from c, through one wire.Reader per conn.
func readFrame(t *testing.T, c net.Conn, timeout time.Duration) (wire.Type, error) {
	t.Helper()
	readersMu.Lock()
	r := readers[c]
	if r == nil {
		r = wire.NewReader(c, 0)
		readers[c] = r
	}
	readersMu.Unlock()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	typ, _, err := r.Next()
	return typ, err
}

// TestProxyRulesHitOneMember: the proxy learns the member from its Join,
// stalls only that member's direction, duplicates chosen frame types and
// cuts only that member's connection.
func TestProxyRulesHitOneMember(t *testing.T) {
	addr, conns := sink(t)
	p, err := NewProxy("s", addr, true, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func(user string) (net.Conn, net.Conn) {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(frame(t, &proto.Join{Room: "r", User: user})); err != nil {
			t.Fatal(err)
		}
		srv := <-conns
		if typ, err := readFrame(t, srv, 5*time.Second); err != nil || typ != proto.TJoin {
			t.Fatalf("server got %v, %v; want the Join", typ, err)
		}
		return c, srv
	}
	bob, bobSrv := dial("bob")
	carol, carolSrv := dial("carol")

	p.Set("bob", Down, Rule{Stall: true})
	p.Set("", Up, Rule{Dup: []wire.Type{proto.TUnreachable}})
	ping := frame(t, &proto.Ping{ID: 1})
	for _, s := range []net.Conn{bobSrv, carolSrv} {
		if _, err := s.Write(ping); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := readFrame(t, carol, 5*time.Second); err != nil {
		t.Fatalf("carol, not stalled, got nothing: %v", err)
	}
	if typ, err := readFrame(t, bob, 300*time.Millisecond); err == nil {
		t.Fatalf("bob's direction is stalled, yet he read a frame of type %v", typ)
	}
	p.Heal()
	if _, err := readFrame(t, bob, 5*time.Second); err != nil {
		t.Fatalf("bob got nothing after the heal: %v", err)
	}

	p.Set("", Up, Rule{Dup: []wire.Type{proto.TUnreachable}})
	if _, err := carol.Write(frame(t, &proto.Unreachable{Room: "r", Server: "s", Epoch: 1})); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if typ, err := readFrame(t, carolSrv, 5*time.Second); err != nil || typ != proto.TUnreachable {
			t.Fatalf("copy %d of the doubled Unreachable: %v, %v", i+1, typ, err)
		}
	}
	if n := p.Replay("carol", Up, proto.TUnreachable, 1); n != 1 {
		t.Fatalf("Replay sent %d frames, want 1", n)
	}
	if typ, err := readFrame(t, carolSrv, 5*time.Second); err != nil || typ != proto.TUnreachable {
		t.Fatalf("the replayed Unreachable: %v, %v", typ, err)
	}

	if n := p.Cut("bob"); n != 1 {
		t.Fatalf("Cut(bob) closed %d connections, want 1", n)
	}
	if _, err := readFrame(t, bob, 5*time.Second); err == nil {
		t.Fatal("bob's connection still works after the cut")
	}
	if _, err := carolSrv.Write(ping); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(t, carol, 5*time.Second); err != nil {
		t.Fatalf("carol's connection broke with bob's cut: %v", err)
	}
}

// TestProxyRateLimitsOneDirection: a Rate rule on Down lets through about
// Rate bytes a second.
func TestProxyRateLimitsOneDirection(t *testing.T) {
	addr, conns := sink(t)
	p, err := NewProxy("s", addr, true, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(frame(t, &proto.Join{Room: "r", User: "bob"})); err != nil {
		t.Fatal(err)
	}
	srv := <-conns
	if _, err := readFrame(t, srv, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Set("bob", Down, Rule{Rate: 20_000})
	msg := frame(t, &proto.Chat{Num: 1, Text: string(make([]byte, 1000))})
	go func() {
		for range 40 {
			if _, err := srv.Write(msg); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	for i := range 40 {
		if _, err := readFrame(t, c, 10*time.Second); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	took := time.Since(start)
	t.Logf("40 KB through a 20 KB/s rule in %v", took)
	if took < time.Second {
		t.Errorf("40 KB at 20 KB/s took %v, want about 2 s", took)
	}
}

// TestProxyPassesHalfClose: a dialer that sends its request and closes its
// writing side still gets the answer (the bot's check of the control port
// does that), on a frame link and on a raw one.
func TestProxyPassesHalfClose(t *testing.T) {
	for _, frames := range []bool{true, false} {
		addr, conns := sink(t)
		p, err := NewProxy("s", addr, frames, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(frame(t, &proto.Hello{V: wire.Version})); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		srv := <-conns
		if typ, err := readFrame(t, srv, 5*time.Second); err != nil || typ != proto.THello {
			t.Fatalf("frames=%v: server got %v, %v; want the Hello", frames, typ, err)
		}
		if _, err := srv.Write(frame(t, &proto.Welcome{V: wire.Version})); err != nil {
			t.Fatal(err)
		}
		if typ, err := readFrame(t, c, 5*time.Second); err != nil || typ != proto.TWelcome {
			t.Fatalf("frames=%v: after its half-close the dialer got %v, %v; want the Welcome", frames, typ, err)
		}
	}
}

// TestProxyDeliversBeforeReset: a target that answers and then resets the
// connection (Central does, closing a control connection with unread
// bytes after its fatal Error) must have its answer delivered first, as a
// network delivers the segments sent before a RST. The bot's check of the
// control port read EOF instead, now and then on a loaded machine, and
// the bot exited ("alice never joined the room").
func TestProxyDeliversBeforeReset(t *testing.T) {
	for _, frames := range []bool{true, false} {
		addr, conns := sink(t)
		p, err := NewProxy("s", addr, frames, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		// The rule holds every frame back a while, so the reset reaches
		// the proxy before its writer has passed the answer on.
		p.Set("", Down, Rule{Delay: 200 * time.Millisecond})
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(frame(t, &proto.Hello{V: wire.Version})); err != nil {
			t.Fatal(err)
		}
		srv := <-conns
		if typ, err := readFrame(t, srv, 5*time.Second); err != nil || typ != proto.THello {
			t.Fatalf("frames=%v: server got %v, %v; want the Hello", frames, typ, err)
		}
		if _, err := srv.Write(frame(t, &proto.Error{Code: proto.CodeUnauthorized, Reason: "no", Fatal: true})); err != nil {
			t.Fatal(err)
		}
		_ = srv.(*net.TCPConn).SetLinger(0) // Close sends a RST
		srv.Close()
		if typ, err := readFrame(t, c, 5*time.Second); err != nil || typ != proto.TError {
			t.Fatalf("frames=%v: the dialer got %v, %v; want the Error sent before the reset", frames, typ, err)
		}
	}
}

// TestProxyDelaysOneRoundInN: with Rule.Rounds, only the first of every n
// bursts of Up frames (rounds, roundGap apart) has its answers delayed.
func TestProxyDelaysOneRoundInN(t *testing.T) {
	addr, conns := sink(t)
	p, err := NewProxy("s", addr, true, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const delay = 300 * time.Millisecond // under roundGap, as a probe round's RTT is
	p.Set("", Down, Rule{Delay: delay, Rounds: 3})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var srv net.Conn
	for round := 1; round <= 4; round++ {
		if round > 1 {
			time.Sleep(roundGap + 100*time.Millisecond) // the silence that ends a round
		}
		var took []time.Duration
		for i := range 2 { // two exchanges per round
			start := time.Now()
			if _, err := c.Write(frame(t, &proto.Ping{ID: uint64(2*round + i)})); err != nil {
				t.Fatal(err)
			}
			if srv == nil {
				srv = <-conns
			}
			if typ, err := readFrame(t, srv, 5*time.Second); err != nil || typ != proto.TPing {
				t.Fatalf("round %d: server got %v, %v; want a Ping", round, typ, err)
			}
			if _, err := srv.Write(frame(t, &proto.Pong{ID: uint64(2*round + i)})); err != nil {
				t.Fatal(err)
			}
			if typ, err := readFrame(t, c, 5*time.Second); err != nil || typ != proto.TPong {
				t.Fatalf("round %d: got %v, %v; want the Pong", round, typ, err)
			}
			took = append(took, time.Since(start))
		}
		stalled := round == 1 || round == 4
		t.Logf("round %d: %v (stalled: %v)", round, took, stalled)
		for _, d := range took {
			if stalled != (d >= delay) {
				t.Errorf("round %d: an exchange took %v; want delayed by %v: %v", round, d, delay, stalled)
			}
		}
	}
}
