package chatserver

import (
	"testing"

	"nearchat/pkg/proto"
)

// TestNoHistory: a server with History 0 keeps nothing, replays nothing,
// and says so in Joined (Truncated, Oldest past Seq). TestConfigValidation
// checks a negative History is refused.
func TestNoHistory(t *testing.T) {
	s := startServer(t, func(c *Config) { c.History = 0 })
	a, _ := joinAs(t, s, "r", "alice")
	b, _ := joinAs(t, s, "r", "bob")
	a.expect(proto.TPresence)
	for i := uint64(1); i <= 3; i++ {
		a.send(&proto.Chat{Num: i, Text: "hi"})
		if d := b.expect(proto.TDeliver).(*proto.Deliver); d.Seq != i {
			t.Fatalf("deliver %+v, want seq %d", d, i)
		}
	}
	if m := s.Metrics(); m.HistoryFrames != 0 || m.HistoryBytes != 0 {
		t.Fatalf("history holds %d frames, %d bytes", m.HistoryFrames, m.HistoryBytes)
	}
	for _, j := range []proto.Join{{Room: "r", User: "carol", Since: 1}, {Room: "r", User: "dave", Move: true}} {
		p := hello(t, s)
		p.send(&j)
		got := p.expect(proto.TJoined).(*proto.Joined)
		if got.Seq != 3 || !got.Truncated || got.Oldest != 4 {
			t.Fatalf("%s: joined %+v, want seq 3, truncated, oldest 4", j.User, got)
		}
		p.send(&proto.Ping{ID: 9})
		if pong := p.expect(proto.TPong).(*proto.Pong); pong.ID != 9 {
			t.Fatalf("%s: pong %+v", j.User, pong)
		}
	}
	// Up to date: nothing missed, nothing truncated.
	p := hello(t, s)
	p.send(&proto.Join{Room: "r", User: "erin", Since: 3})
	if got := p.expect(proto.TJoined).(*proto.Joined); got.Truncated {
		t.Fatalf("joined %+v, want not truncated", got)
	}
}
