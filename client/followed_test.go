package client

import (
	"context"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// TestMovedCarriesItsOwnAssign (issue 14): a room moves twice in quick
// succession (its servers going down one after another), and the first
// move's Moved is forwarded only after the second Assign was taken up. It
// carried the Assign of whatever epoch the room followed at that moment,
// so its reason was empty (chatload counted 186 moves as "other: " in one
// 2,000 x 3 run); each Moved now gets the Assign it followed.
func TestMovedCarriesItsOwnAssign(t *testing.T) {
	s1, s2, s3 := startChat(t, "s1"), startChat(t, "s2"), startChat(t, "s3")
	sess := open(t, testConfig(t), ref(s1), "room-two-moves", "alice")
	defer sess.Close()
	opts := DefaultConfig()
	opts.Central, opts.Control, opts.User = "127.0.0.1:1", "127.0.0.1:1", "alice"
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	close(c.running) // as Run does; nothing here dials Central
	r := &roomState{done: make(chan struct{})}
	first := proto.Assign{Room: "room-two-moves", Epoch: 1, Server: ref(s1), Reason: "new room"}
	a2 := proto.Assign{Room: "room-two-moves", Epoch: 2, Server: ref(s2), Prev: "s1", Reason: "current server down"}
	a3 := proto.Assign{Room: "room-two-moves", Epoch: 3, Server: ref(s3), Prev: "s2", Reason: "current server draining"}
	// The room worker follows each Assign and moves the session; the
	// forwarder has not read the session's events yet.
	for _, a := range []proto.Assign{first, a2, a3} {
		r.mu.Lock()
		r.followLocked(a)
		r.mu.Unlock()
		if a.Epoch == 1 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := sess.Move(ctx, a.Server, a.Epoch, nil)
		cancel()
		if err != nil {
			t.Fatalf("move to %s: %v", a.Server.ID, err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.forward(r, RoomReady{Room: "room-two-moves", Session: sess, Assign: first})
	}()
	defer func() { close(r.done); sess.Close(); <-done }()
	want := map[uint64]string{2: a2.Reason, 3: a3.Reason}
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case ev := <-c.events:
			if m, ok := ev.(Moved); ok {
				t.Logf("Moved %s -> %s epoch %d: reason %q", m.From.ID, m.To.ID, m.Epoch, m.Assign.Reason)
				if m.Assign.Reason != want[m.Epoch] || m.Assign.Epoch != m.Epoch {
					t.Fatalf("Moved to %s at epoch %d carries Assign %+v, want its own (reason %q)", m.To.ID, m.Epoch, m.Assign, want[m.Epoch])
				}
				delete(want, m.Epoch)
			}
		case <-deadline:
			t.Fatalf("Moved events for epochs %v never came", want)
		}
	}
}

// A member's Holding carries the ticket of the placement it follows: a
// Central that signs tickets believes a report that would make its sender
// a member, or move the room, only with it (after a restart).
func TestHoldingCarriesTicket(t *testing.T) {
	s1, s2 := startChat(t, "s1"), startChat(t, "s2")
	opts := DefaultConfig()
	opts.Central, opts.Control, opts.User = "127.0.0.1:1", "127.0.0.1:1", "alice"
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	close(c.running) // as Run does; nothing here dials Central
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); c.closeRoom("room-tickets") }()
	heldNow := func() proto.Held {
		h := c.holding()
		if len(h.Rooms) != 1 {
			return proto.Held{}
		}
		return h.Rooms[0]
	}
	for _, a := range []proto.Assign{
		{Room: "room-tickets", Epoch: 1, Server: ref(s1), Ticket: []byte("ticket-1"), Reason: "new room"},
		{Room: "room-tickets", Epoch: 2, Server: ref(s2), Ticket: []byte("ticket-2"), Prev: "s1", Reason: "better server"},
	} {
		c.assign(ctx, a)
		testkit.WaitFor(t, 10*time.Second, "the room followed to "+a.Server.ID, func() bool {
			h := heldNow()
			return h.Epoch == a.Epoch && h.Server == a.Server.ID
		})
		if h := heldNow(); string(h.Ticket) != string(a.Ticket) {
			t.Fatalf("Holding at epoch %d carries ticket %q, want %q", a.Epoch, h.Ticket, a.Ticket)
		}
	}
}
