package client

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// roomOf makes alice ask bob for a chat and returns their room.
func roomOf(t *testing.T, users map[string]*roomUser) string {
	t.Helper()
	request(t, users, "alice", "bob")
	var room string
	for name, u := range users {
		select {
		case r := <-u.ready:
			room = r.Room
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no room within 30 s", name)
		}
	}
	return room
}

// TestLeavesConfirmedWaitsForPong (rel7 sweep, 2026-12-03, R7-1): a user
// who left a room and quit at once, while Central was frozen or failing
// over, stayed in the room for good: the leave was repeated only by a
// client that kept running. LeavesConfirmed now lets a quitting client
// wait, boundedly, for Central's word: it sends a Holding and a Ping at
// once (Holding reports are an hour apart here), and returns only when
// the Pong confirms the leave, or says which rooms were not confirmed.
func TestLeavesConfirmedWaitsForPong(t *testing.T) {
	cen, p := centralBehindProxy(t)
	users := startUsersWith(t, cen, "s1", func(o *Config) {
		o.Control = p.ln.Addr().String()
		o.HoldingEvery = time.Hour
	}, "alice", "bob")
	room := roomOf(t, users)
	alice := users["alice"]
	if err := users["bob"].LeavesConfirmed(context.Background()); err != nil {
		t.Fatalf("bob left nothing: %v", err)
	}
	p.mute.Store(int32(proto.TPong) + 1) // Central's answers never arrive
	if err := alice.Leave(room); err != nil {
		t.Fatal(err)
	}
	cx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := alice.LeavesConfirmed(cx)
	cancel()
	var ue *UnconfirmedError
	if !errors.As(err, &ue) || !slices.Equal(ue.Rooms, []string{room}) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LeavesConfirmed with no Pong: %v, want an UnconfirmedError for %s", err, room)
	}
	p.mute.Store(0)
	cx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := alice.LeavesConfirmed(cx); err != nil {
		t.Fatalf("LeavesConfirmed once Central answers: %v", err)
	}
	info, err := centralapi.NewClient(cen.RESTAddr(), nil).LookupClient(context.Background(), "alice")
	if err != nil || slices.Contains(info.Rooms, room) {
		t.Fatalf("alice's rooms %v (err %v) once her leave was confirmed", info.Rooms, err)
	}
}

// TestLeavesConfirmedLeavesSilentCentral (R7-1): a Central that froze
// keeps its control connection open and silent; LeavesConfirmed gives up
// on a connection that does not answer its Ping within leavePatience and
// connects again, to the next Central address first, where the leave is
// confirmed well within a quitting client's 10 s.
func TestLeavesConfirmedLeavesSilentCentral(t *testing.T) {
	cen, p := centralBehindProxy(t)
	users := startUsersWith(t, cen, "s1", func(o *Config) {
		o.Control = p.ln.Addr().String() + "," + cen.ControlAddr()
		o.HoldingEvery = time.Hour
	}, "alice", "bob")
	room := roomOf(t, users)
	alice := users["alice"]
	testkit.WaitFor(t, 10*time.Second, "alice's control connection through the proxy", func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return alice.ctrl != nil // the first address, the proxy, answers
	})
	p.hole.Store(true) // nothing comes back on this path, and it stays open
	defer p.hole.Store(false)
	if err := alice.Leave(room); err != nil {
		t.Fatal(err)
	}
	cx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := alice.LeavesConfirmed(cx); err != nil {
		t.Fatalf("LeavesConfirmed with the first Central silent: %v", err)
	}
	t.Logf("confirmed %v after the leave", time.Since(start).Round(time.Millisecond))
}
