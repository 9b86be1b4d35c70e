package baseline

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

func startServer(t *testing.T) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.History = 4
	cfg.WriteTimeout = 5 * time.Second
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// client is a raw protocol peer of the baseline server.
type client struct {
	*wiretest.Peer
	t *testing.T
}

func dial(t *testing.T, s *Server) *client {
	t.Helper()
	return &client{Peer: wiretest.Dial(t, s.Addr()), t: t}
}

func (c *client) sendRaw(b []byte) { c.t.Helper(); c.Raw(b) }

func (c *client) send(ms ...wire.Message) {
	c.t.Helper()
	var b []byte
	for _, m := range ms {
		var err error
		if b, err = wire.AppendFrame(b, m); err != nil {
			c.t.Fatal(err)
		}
	}
	c.sendRaw(b)
}

func expect[T wire.Message](c *client) T {
	c.t.Helper()
	return wiretest.Expect[T](c.Peer, nil)
}

// expectClosed wants the connection closed with no frame before the end.
func (c *client) expectClosed() {
	c.t.Helper()
	if m, err := c.Next(wiretest.Timeout); err == nil {
		c.t.Fatalf("want the connection closed, got %#v", m)
	} else if !wiretest.Closed(err) {
		c.t.Fatalf("connection still open: %v", err)
	}
}

func (c *client) hello() {
	c.t.Helper()
	c.send(&proto.Hello{V: wire.Version, Agent: "test"})
	w := expect[*proto.Welcome](c)
	if w.V != wire.Version || w.Server == "" || w.Max <= wire.HeaderSize {
		c.t.Fatalf("welcome %+v", w)
	}
}

func (c *client) join(room, user string, since uint64) *proto.Joined {
	c.t.Helper()
	c.hello()
	c.send(&proto.Join{Room: room, User: user, LastSent: 3, Since: since})
	return expect[*proto.Joined](c)
}

func TestChatFlow(t *testing.T) {
	s := startServer(t)
	a := dial(t, s)
	a.join("room1", "alice", 0)
	a.send(&proto.Ping{ID: 7, At: 99})
	if p := expect[*proto.Pong](a); p.ID != 7 || p.At != 99 {
		t.Fatalf("pong %+v", p)
	}
	b := dial(t, s)
	j := b.join("room1", "bob", 0)
	if len(j.Members) != 2 || j.Room != "room1" {
		t.Fatalf("joined %+v", j)
	}
	if p := expect[*proto.Presence](a); p.User != "bob" || !p.Here || p.LastSent != 3 {
		t.Fatalf("presence %+v", p)
	}
	for i := uint64(1); i <= 3; i++ {
		a.send(&proto.Chat{Num: i, At: 5, Text: "hi"})
		if d := expect[*proto.Deliver](b); d.Seq != i || d.From != "alice" || d.Num != i || d.Text != "hi" || d.At != 5 {
			t.Fatalf("deliver %+v", d)
		}
		if k := expect[*proto.Ack](a); k.Num != i || k.Seq != i {
			t.Fatalf("ack %+v", k)
		}
	}
	b.send(&proto.Leave{})
	b.expectClosed()
	if p := expect[*proto.Presence](a); p.User != "bob" || p.Here {
		t.Fatalf("presence %+v", p)
	}
}

func TestHistoryAndConflict(t *testing.T) {
	s := startServer(t)
	a := dial(t, s)
	a.join("r", "alice", 0)
	b := dial(t, s)
	b.join("r", "bob", 0)
	expect[*proto.Presence](a)
	for i := uint64(1); i <= 6; i++ {
		a.send(&proto.Chat{Num: i, Text: "m"})
		expect[*proto.Deliver](b)
		expect[*proto.Ack](a)
	}
	tests := []struct {
		name      string
		since     uint64
		truncated bool
		first     uint64
	}{
		{"recent", 4, false, 5},
		{"beyond history", 1, true, 3},
	}
	// One after the other on the same room: each rejoin replaces the
	// previous connection of bob, so these are steps, not subtests.
	for _, tt := range tests {
		b2 := dial(t, s)
		j := b2.join("r", "bob", tt.since)
		if j.Seq != 6 || j.Truncated != tt.truncated {
			t.Fatalf("%s: joined %+v", tt.name, j)
		}
		for q := tt.first; q <= 6; q++ {
			if d := expect[*proto.Deliver](b2); d.Seq != q {
				t.Fatalf("%s: replayed seq %d, want %d", tt.name, d.Seq, q)
			}
		}
		if e := expect[*proto.Error](b); e.Code != proto.CodeConflict || !e.Fatal {
			t.Fatalf("%s: old connection got %+v", tt.name, e)
		}
		b.expectClosed()
		expect[*proto.Presence](a)
		b = b2
	}
}

func TestBadInput(t *testing.T) {
	hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version})
	tooLarge := binary.BigEndian.AppendUint32(nil, wire.MaxFrame+1)
	tests := []struct {
		name string
		raw  []byte
		msgs []wire.Message
		code proto.Code
	}{
		{"no hello", nil, []wire.Message{&proto.Ping{ID: 1}}, proto.CodeNoHello},
		{"old version", nil, []wire.Message{&proto.Hello{V: 99}}, proto.CodeVersion},
		{"too large", append(append([]byte{}, hello...), tooLarge...), nil, proto.CodeTooLarge},
		{"unknown type", append(append([]byte{}, hello...), 0, 0, 0, 1, 0x7f), nil, proto.CodeUnknownType},
		{"bad body", append(append([]byte{}, hello...), 0, 0, 0, 2, byte(proto.TChat), 0x01), nil, proto.CodeBadBody},
		{"chat before join", hello, []wire.Message{&proto.Chat{Num: 1}}, proto.CodeNotJoined},
		{"empty room", hello, []wire.Message{&proto.Join{User: "u"}}, proto.CodeBadJoin},
		{"bad user", hello, []wire.Message{&proto.Join{Room: "r", User: "no spaces"}}, proto.CodeBadJoin},
		{"second join", hello, []wire.Message{&proto.Join{Room: "r", User: "u1"}, &proto.Join{Room: "r", User: "u1"}}, proto.CodeBadJoin},
		{"central frame", hello, []wire.Message{&proto.Request{To: []string{"x"}}}, proto.CodeUnknownType},
	}
	s := startServer(t)
	bystander := dial(t, s)
	bystander.join("calm", "b", 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s)
			b := tt.raw
			for _, m := range tt.msgs {
				b, _ = wire.AppendFrame(b, m)
			}
			c.sendRaw(b)
			var e *proto.Error
			for e == nil {
				m, err := c.Next(wiretest.Timeout)
				if err != nil {
					t.Fatalf("no error frame before %v", err)
				}
				e, _ = m.(*proto.Error)
			}
			if e.Code != tt.code || !e.Fatal {
				t.Fatalf("got %+v, want fatal %v", e, tt.code)
			}
			c.expectClosed()
			bystander.send(&proto.Ping{ID: 1})
			expect[*proto.Pong](bystander)
		})
	}
}

func TestShutdown(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c := dial(t, s)
	c.join("r", "u", 0)
	cancel()
	if e := expect[*proto.Error](c); e.Code != proto.CodeShutdown || !e.Fatal {
		t.Fatalf("got %+v", e)
	}
	c.expectClosed()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"frame too small", func(c *Config) { c.MaxFrame = 2 }},
		{"frame too big", func(c *Config) { c.MaxFrame = wire.MaxFrame + 1 }},
		{"no members", func(c *Config) { c.MaxMembers = 0 }},
		{"bad address", func(c *Config) { c.Listen = "nowhere" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Listen = "127.0.0.1:0"
			tt.mod(&cfg)
			if s, err := New(cfg); err == nil {
				s.Close()
				t.Fatal("New accepted the config")
			}
		})
	}
}

func TestJoinedSplit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MaxFrame = 2048
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	defer func() {
		s.Close()
		<-done
	}()
	const n = 80
	for i := range n - 1 {
		dial(t, s).join("big", fmt.Sprintf("member-%02d", i), 0)
	}
	last := dial(t, s)
	j := last.join("big", "zz-last", 0)
	if len(j.Members) >= n || len(j.Members) < 2 || j.Members[0].User != "zz-last" {
		t.Fatalf("Joined lists %d members (first %q); want the joiner first and fewer than %d", len(j.Members), j.Members[0].User, n)
	}
	seen := map[string]bool{}
	for _, m := range j.Members {
		seen[m.User] = true
	}
	for len(seen) < n {
		p := expect[*proto.Presence](last)
		if !p.Here || seen[p.User] {
			t.Fatalf("presence %+v after %d members known", p, len(seen))
		}
		seen[p.User] = true
	}
	t.Logf("Joined listed %d of %d members, Presence frames the rest", len(j.Members), n)
}
