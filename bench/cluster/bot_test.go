package cluster

import (
	"context"
	"testing"
	"time"
)

// TestAwaitKeepsEveryEvent: waiting for one event never discards another.
// bin/demo once read the bots' events off a channel while it waited for
// alice's full measurement, dropped the joined event that came first, and
// then failed with "no room assignment within 30s".
func TestAwaitKeepsEveryEvent(t *testing.T) {
	r := newRecorder()
	r.add("bob", 1, map[string]any{"ev": "joined", "server": "serv3"})
	r.add("alice", 1, map[string]any{"ev": "probe"})
	ctx := context.Background()
	probe, err := r.Await(ctx, 0, time.Second, Is("probe"))
	if err != nil {
		t.Fatal(err)
	}
	joined, err := r.Await(ctx, 0, time.Second, Is("joined", "server", "serv3"))
	if err != nil {
		t.Fatalf("the joined event that came before the probe is gone: %v", err)
	}
	if joined.Seq >= probe.Seq {
		t.Errorf("joined at %d, probe at %d: want the recorded order", joined.Seq, probe.Seq)
	}
	if _, err := r.Await(ctx, probe.Seq+1, 50*time.Millisecond, Is("joined")); err == nil {
		t.Error("Await from past the probe found a joined event that came before it")
	}
}

// TestAwaitWakesOnNewEvent: an event added while Await waits ends the wait.
func TestAwaitWakesOnNewEvent(t *testing.T) {
	r := newRecorder()
	go func() {
		time.Sleep(20 * time.Millisecond) // the event comes while Await waits
		r.add("alice", 2, map[string]any{"ev": "moved", "to": "serv1"})
	}()
	ev, err := r.Await(context.Background(), 0, 10*time.Second, Is("moved", "to", "serv1"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Bot != "alice" || ev.Run != 2 || ev.Str("to") != "serv1" {
		t.Errorf("got %+v", ev)
	}
}

func TestWithoutFlagReplacesToken(t *testing.T) {
	got := withoutFlag([]string{"-bot", "-token", "old", "-name", "bob"}, "-token")
	want := []string{"-bot", "-name", "bob"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}
