package chatserver

import (
	"testing"
	"time"

	"nearchat/pkg/proto"
)

// TestBeats: a member that asked for beats is written an empty Pong
// whenever nothing else was written to it for the interval, none while
// its room is busy, and none after it asked for 0; a Beat out of range is
// refused.
func TestBeats(t *testing.T) {
	s := startServer(t, nil)
	a, _ := joinAs(t, s, "room-beat", "alice")
	b, _ := joinAs(t, s, "room-beat", "bob")
	b.send(&proto.Beat{Every: 50})

	// A quiet room: beats, and nothing else.
	start := time.Now()
	for range 5 {
		m, err := b.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := m.(*proto.Pong); !ok || *p != (proto.Pong{}) {
			if m.FrameType() == proto.TPresence || m.FrameType() == proto.TPresences {
				continue // alice's arrival, before the Beat
			}
			t.Fatalf("got %T %+v, want a beat", m, m)
		}
	}
	t.Logf("5 beats at 50 ms in %v", time.Since(start).Round(time.Millisecond))

	// A busy room: alice's messages reach bob every 20 ms, so no beat
	// is due at 500 ms (a server that beat regardless would write 4 in
	// these 2 s).
	b.send(&proto.Beat{Every: 500})
	syncPing(t, b, 10) // past the beats at 50 ms already written
	for i := range 100 {
		a.send(&proto.Chat{Num: uint64(i + 1), Text: "x"})
		m := b.expect(proto.TDeliver).(*proto.Deliver) // fails on a beat
		if m.Num != uint64(i+1) {
			t.Fatalf("deliver %+v", m)
		}
		time.Sleep(20 * time.Millisecond) // a room's pace, not synchronisation
	}

	// Stopped: after the answer to the Ping that follows Beat{0}, nothing.
	b.send(&proto.Beat{Every: 0})
	syncPing(t, b, 9)
	if m, err := b.next(300 * time.Millisecond); err == nil {
		t.Fatalf("after Beat{0}: %T %+v", m, m)
	}

	// Out of range: refused with a reason.
	for _, every := range []uint64{1, proto.BeatMax + 1, 1<<32 + 20} {
		p, _ := joinAs(t, s, "room-beat2", "carol")
		p.send(&proto.Beat{Every: every})
		p.expectClosed(proto.CodeBadBody)
	}
}

// syncPing pings p with id and reads up to the answer: every frame the server
// wrote before it handled what p sent before the Ping.
func syncPing(t *testing.T, p *peer, id uint64) {
	t.Helper()
	p.send(&proto.Ping{ID: id, At: 1})
	for {
		m, err := p.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if pong, ok := m.(*proto.Pong); ok && pong.ID == id {
			return
		}
	}
}

// TestBeatsOnlyForMembers: a connection that asked for beats is written
// none until it has joined a room (the Beat is kept and takes effect with
// the Join), and a client of a version before 6 may not ask at all. A
// connection used to be beaten on from its Hello: one frame in, 50 frames
// a second out, to connections that could never join (abuse probe,
// 2026-12-01).
func TestBeatsOnlyForMembers(t *testing.T) {
	s := startServer(t, nil)
	p := hello(t, s)
	p.send(&proto.Beat{Every: proto.BeatMin})
	syncPing(t, p, 1)
	if m, err := p.next(300 * time.Millisecond); err == nil {
		t.Fatalf("before its Join, a connection that asked for beats got %T %+v", m, m)
	}
	p.send(&proto.Join{Room: "room-beat", User: "alice"})
	p.expect(proto.TJoined)
	beats := 0
	for beats < 3 {
		m, err := p.next(5 * time.Second)
		if err != nil {
			t.Fatalf("after its Join: %v (%d beats)", err, beats)
		}
		if pong, ok := m.(*proto.Pong); ok && *pong == (proto.Pong{}) {
			beats++
		}
	}

	old := dial(t, s)
	old.send(&proto.Hello{Agent: "test", V: 5})
	old.expect(proto.TWelcome)
	old.send(&proto.Beat{Every: 100})
	old.expectClosed(proto.CodeUnknownType)
}
