package central

import (
	"crypto/ed25519"
	"testing"
	"time"

	"nearchat/chatserver"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wiretest"
)

// startChatServers runs real chat servers, checking Central's tickets,
// registered with h's Central.
func startChatServers(t *testing.T, h *harness, pub ed25519.PublicKey, ids ...string) map[string]*chatserver.Server {
	t.Helper()
	out := map[string]*chatserver.Server{}
	for _, id := range ids {
		cfg := chatserver.DefaultConfig()
		cfg.ID, cfg.Listen, cfg.Central, cfg.TicketKey = id, "127.0.0.1:0", h.c.RESTAddr(), pub
		cfg.Logger = testkit.Logger(t)
		s, err := chatserver.New(cfg)
		if err != nil {
			t.Fatalf("chatserver.New: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		out[id] = s
	}
	testkit.WaitFor(t, 10*time.Second, "chat servers registered", func() bool {
		list, err := h.api.Servers(ctx(t))
		return err == nil && len(list) == len(ids)
	})
	return out
}

// heardTwice waits for two heartbeats of server id after now: the answer
// to the first has then been applied.
func (h *harness) heardTwice(t *testing.T, id string) {
	t.Helper()
	seen := func() time.Time {
		list, err := h.api.Servers(ctx(t))
		if err != nil {
			return time.Time{}
		}
		for _, s := range list {
			if s.ID == id {
				return s.LastSeen
			}
		}
		return time.Time{}
	}
	after := time.Now()
	testkit.WaitFor(t, 10*time.Second, "a heartbeat of "+id, func() bool { return seen().After(after) })
	first := seen()
	testkit.WaitFor(t, 10*time.Second, "a second heartbeat of "+id, func() bool { return seen().After(first) })
}

// joinWith dials srv and joins as user with the ticket of a.
func joinWith(t *testing.T, srv *chatserver.Server, user string, a *proto.Assign) *wiretest.Peer {
	t.Helper()
	p := wiretest.Dial(t, srv.Addr())
	p.Name = user
	p.Hello(&proto.Hello{Agent: "test/1"})
	p.Send(&proto.Join{Room: a.Room, User: user, Epoch: a.Epoch, Ticket: a.Ticket})
	return p
}

// TestTicketsRevoked replays tickets that outlived what they admitted: one
// from before a move, on the room's old server, and one of a member that
// left the room, who also must not stay connected.
func TestTicketsRevoked(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	cfg := testConfig(t)
	cfg.TicketKey = priv
	cfg.HeartbeatInterval = 50 * time.Millisecond
	h := startCentral(t, cfg)
	srv := startChatServers(t, h, pub, "serv1", "serv2")
	w := &world{harness: h} // its users favour serv1; its fake clock is not used
	a, b := w.user(t, "alice"), w.user(t, "bob")
	first := chat(t, a, b)
	if first.Server.ID != "serv1" || len(first.Ticket) == 0 {
		t.Fatalf("first placement %+v, want serv1 with a ticket", first)
	}
	// The ticket works before the move.
	p := joinWith(t, srv["serv1"], "alice", first)
	wiretest.Expect[*proto.Joined](p, wiretest.AllBut(proto.TJoined))
	p.Close()

	if err := srv["serv1"].Drain(ctx(t)); err != nil {
		t.Fatalf("drain: %v", err)
	}
	mvA := expect[*proto.Assign](a, nil)
	mvB := expect[*proto.Assign](b, nil)
	if mvA.Server.ID != "serv2" || mvA.Epoch != first.Epoch+1 {
		t.Fatalf("move %+v, want serv2 at epoch %d", mvA, first.Epoch+1)
	}
	a.send(&proto.AssignAck{Room: mvA.Room, Epoch: mvA.Epoch})
	b.send(&proto.AssignAck{Room: mvB.Room, Epoch: mvB.Epoch})
	h.heardTwice(t, "serv1")

	t.Run("ticket from before the move", func(t *testing.T) {
		p := joinWith(t, srv["serv1"], "alice", first)
		p.ExpectClosed(proto.CodeUnauthorized)
	})

	alice := joinWith(t, srv["serv2"], "alice", mvA)
	wiretest.Expect[*proto.Joined](alice, wiretest.AllBut(proto.TJoined))
	bob := joinWith(t, srv["serv2"], "bob", mvB)
	wiretest.Expect[*proto.Joined](bob, wiretest.AllBut(proto.TJoined))
	left := time.Now()
	a.send(&proto.LeaveRoom{Room: mvA.Room})

	t.Run("member that left is dropped", func(t *testing.T) {
		alice.ExpectClosed(proto.CodeUnauthorized)
		t.Logf("dropped %v after leaving (heartbeats every %v)", time.Since(left).Round(time.Millisecond), cfg.HeartbeatInterval)
	})
	h.heardTwice(t, "serv2")
	t.Run("member that left cannot rejoin", func(t *testing.T) {
		p := joinWith(t, srv["serv2"], "alice", mvA)
		p.ExpectClosed(proto.CodeUnauthorized)
	})
	t.Run("the member that stayed chats on", func(t *testing.T) {
		bob.Send(&proto.Ping{ID: 7})
		if pong := wiretest.Expect[*proto.Pong](bob, wiretest.AllBut(proto.TPong)); pong.ID != 7 {
			t.Fatalf("pong %+v", pong)
		}
	})
}
