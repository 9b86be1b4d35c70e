package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/chatserver"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/freeport"
	"nearchat/pkg/proto"
	"nearchat/pkg/rtt"
	"nearchat/pkg/testkit"
)

// roomUser is a Client of a test's Central that accepts every chat
// request and hands its first RoomReady to ready.
type roomUser struct {
	*Client
	ready    chan RoomReady
	measured atomic.Bool // a probe round measured the server the test named
	other    atomic.Bool // a probe found another server at a target's address
}

// startUsers runs a Client for each name against cen, and waits until
// every one has measured server (so a request is placed at once, not
// after a first measurement that a slow machine delays).
func startUsers(t *testing.T, cen *central.Central, server string, names ...string) map[string]*roomUser {
	t.Helper()
	return startUsersWith(t, cen, server, nil, names...)
}

// startUsersWith is startUsers with edit applied to each user's Config.
func startUsersWith(t *testing.T, cen *central.Central, server string, edit func(*Config), names ...string) map[string]*roomUser {
	t.Helper()
	users := map[string]*roomUser{}
	for _, name := range names {
		u := &roomUser{ready: make(chan RoomReady, 1)}
		opts := DefaultConfig()
		opts.Central, opts.Control, opts.User = cen.RESTAddr(), cen.ControlAddr(), name
		opts.ProbeEvery = 300 * time.Millisecond
		opts.BackoffMin, opts.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
		opts.Logger = testkit.Logger(t)
		opts.OnProbe = func(res map[string]rtt.Result) {
			if r, ok := res[server]; ok && r.Err == nil && r.Count > 0 {
				u.measured.Store(true)
			}
			for _, r := range res {
				if errors.Is(r.Err, rtt.ErrOtherServer) {
					u.other.Store(true)
				}
			}
		}
		if edit != nil {
			edit(&opts)
		}
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		u.Client = c
		ctx, cancel := context.WithCancel(context.Background())
		done, read := make(chan struct{}), make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; <-read })
		go func() {
			defer close(read)
			for {
				var ev Event
				select {
				case ev = <-c.Events():
				case <-ctx.Done():
					return
				}
				switch e := ev.(type) {
				case Incoming:
					_ = c.Answer(e.Req, true)
				case RoomReady:
					select {
					case u.ready <- e:
					default:
					}
				}
			}
		}()
		users[name] = u
	}
	testkit.WaitFor(t, 30*time.Second, "every user to measure "+server, func() bool {
		for _, u := range users {
			if !u.measured.Load() {
				return false
			}
		}
		return true
	})
	return users
}

// request has from ask the others of users for a chat, once every one of
// them holds a control connection. Measured is not connected: a user whose
// control connection is still coming up (through a test's proxy, on a
// loaded machine) is offline as far as Central knows, a request to it ends
// at once with USER_NOT_FOUND, which these users' readers do not show,
// and the test waited 30 s for a room (a CI run, 2026-12-06).
func request(t *testing.T, users map[string]*roomUser, from string, to ...string) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "every user's control connection", func() bool {
		for _, u := range users {
			if !u.connected() {
				return false
			}
		}
		return true
	})
	if err := users[from].Request(to...); err != nil {
		t.Fatal(err)
	}
}

// connected reports whether Central has welcomed u's control connection.
func (u *roomUser) connected() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ctrl != nil
}

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

	cen := startBareCentral(t)
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
	users := startUsers(t, cen, "s1", "alice", "bob")
	request(t, users, "alice", "bob")
	// Each member joins, waits followTimeout for a Joined that never
	// comes, reports the server and joins again when Central confirms it.
	testkit.WaitFor(t, 30*time.Second, "both members to join a second time", func() bool { return p.joins.Load() >= 4 })
	start := time.Now()
	p.mute.Store(0)
	for name, u := range users {
		select {
		case r := <-u.ready:
			t.Logf("%s: room %s ready on %s %v after the server answered", name, r.Room, r.Assign.Server.ID, time.Since(start).Round(time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no room after the server answered (Joins relayed: %d)", name, p.joins.Load())
		}
	}
}

// TestLookAlikeServerGetsNoRoom: a server id registered, and kept
// heartbeating, at a real chat server's address was measured as that
// server, and new rooms were placed on it, whose joins the real server
// refused ("ticket is for server look"): the rooms never formed (fuzz
// sweep, 2026-12-03). The look-alike is never measured now, and the room
// goes to the real server.
func TestLookAlikeServerGetsNoRoom(t *testing.T) {
	cen := startBareCentral(t)
	s1 := startChatWith(t, "s1", func(c *chatserver.Config) {
		c.Central = cen.RESTAddr()
		c.Heartbeat = 200 * time.Millisecond
	})
	api := centralapi.NewClient(cen.RESTAddr(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg, err := api.Register(ctx, centralapi.RegisterServerRequest{ID: "look", Addr: s1.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		for ctx.Err() == nil {
			_, _ = api.Heartbeat(ctx, "look", reg.Token, centralapi.HeartbeatRequest{})
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	defer func() { cancel(); <-beating }()
	users := startUsers(t, cen, "s1", "alice", "bob")
	request(t, users, "alice", "bob")
	for name, u := range users {
		select {
		case r := <-u.ready:
			t.Logf("%s: room %s on %s", name, r.Room, r.Assign.Server.ID)
			if r.Assign.Server.ID != "s1" {
				t.Fatalf("%s: room placed on %s, at s1's address", name, r.Assign.Server.ID)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no room within 30 s", name)
		}
		if !u.other.Load() {
			t.Errorf("%s: no probe said another server answers at look's address", name)
		}
	}
}
