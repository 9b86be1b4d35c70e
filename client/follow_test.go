package client

import (
	"context"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/chatserver"
	"nearchat/pkg/freeport"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// TestFollowGivesUpOnSilentServer: a chat server that takes a member's
// Join but never says Joined (here a proxy swallows the Joined) wedged the
// room for good: the client waited on it with no deadline, and Central,
// never told, never sent the placement again (abuse probe, 2026-12-03).
// Now a join gives up after followTimeout and reports the server
// unreachable; Central finds it alive and sends the placement again, and
// once the server answers the room forms.
func TestFollowGivesUpOnSilentServer(t *testing.T) {
	old := followTimeout
	followTimeout = time.Second
	t.Cleanup(func() { followTimeout = old })

	cen := startBareCentral(t, func(c *central.Config) { c.Logger = testkit.Logger(t) })
	// The chat server advertises the proxy in front of it, so the proxy
	// needs the server's address first.
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, addr)
	p.mute.Store(int32(proto.TJoined) + 1)
	startChatWith(t, "s1", func(c *chatserver.Config) {
		c.Listen = addr
		c.Central = cen.RESTAddr()
		c.Advertise = p.ln.Addr().String()
		c.Heartbeat = 200 * time.Millisecond
	})

	users := map[string]*Client{}
	ready := map[string]chan RoomReady{}
	for _, name := range []string{"alice", "bob"} {
		opts := DefaultConfig()
		opts.Central, opts.Control, opts.User = cen.RESTAddr(), cen.ControlAddr(), name
		opts.ProbeEvery = 300 * time.Millisecond
		opts.BackoffMin, opts.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
		opts.Logger = testkit.Logger(t)
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done, read := make(chan struct{}), make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; <-read })
		users[name], ready[name] = c, make(chan RoomReady, 1)
		go func() {
			defer close(read)
			for {
				var ev Event
				select {
				case ev = <-c.Events():
				case <-ctx.Done():
					return
				}
				t.Logf("%s event %T %+v", name, ev, ev)
				switch e := ev.(type) {
				case Incoming:
					_ = c.Answer(e.Req, true)
				case RoomReady:
					select {
					case ready[name] <- e:
					default:
					}
				}
			}
		}()
		select {
		case <-c.Reported():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no latency report", name)
		}
	}
	if err := users["alice"].Request("bob"); err != nil {
		t.Fatal(err)
	}
	// Each member joins, waits followTimeout for a Joined that never
	// comes, reports the server and joins again when Central confirms it.
	testkit.WaitFor(t, 30*time.Second, "both members to join a second time", func() bool { return p.joins.Load() >= 4 })
	start := time.Now()
	p.mute.Store(0)
	for name, ch := range ready {
		select {
		case r := <-ch:
			t.Logf("%s: room %s ready on %s %v after the server answered", name, r.Room, r.Assign.Server.ID, time.Since(start).Round(time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no room after the server answered (Joins relayed: %d)", name, p.joins.Load())
		}
	}
}
