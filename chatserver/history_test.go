package chatserver

import (
	"strings"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
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

// TestReplayFitsOutbound: the history replayed to a joiner is sized in
// bytes against MaxOutbound (a quarter of it, the newest messages), so a
// replay alone never cuts the joiner off; Joined says where it starts,
// and the joiner asks the senders for the rest. Before, a rejoin after a
// cut-off was replayed the whole history (256 x 3 KB in the chaos
// reader-stall-cutoff scenario, three times its 256 KiB MaxOutbound) and
// cut off again.
func TestReplayFitsOutbound(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxOutbound = 64 << 10 })
	a, _ := joinAs(t, s, "r", "alice")
	text := strings.Repeat("h", 1000)
	const n = 50 // 50 KB: all kept (History 256), more than a quarter of MaxOutbound
	for i := uint64(1); i <= n; i++ {
		a.send(&proto.Chat{Num: i, Text: text})
		a.expect(proto.TAck)
	}
	for _, j := range []proto.Join{{Room: "r", User: "mover", Move: true}, {Room: "r", User: "back", Since: 10}} {
		p := hello(t, s)
		p.send(&j)
		got := p.expect(proto.TJoined).(*proto.Joined)
		if got.Seq != n || !got.Truncated || got.Oldest <= j.Since+1 || got.Oldest > n {
			t.Fatalf("%s: joined %+v, want seq %d, truncated, oldest in %d..%d", j.User, got, n, j.Since+2, n)
		}
		p.send(&proto.Ping{ID: 9})
		size := 0
		for want := got.Oldest; ; want++ {
			m, err := p.next(10 * time.Second)
			if err != nil {
				t.Fatalf("%s: %v", j.User, err)
			}
			switch m.(type) {
			case *proto.Presence, *proto.Presences:
				want--
				continue
			}
			if pong, ok := m.(*proto.Pong); ok && pong.ID == 9 {
				if want != n+1 {
					t.Fatalf("%s: replay ended before seq %d, want through %d", j.User, want, n)
				}
				break
			}
			d, ok := m.(*proto.Deliver)
			if !ok || d.Seq != want {
				t.Fatalf("%s: got %+v, want the deliver of seq %d", j.User, m, want)
			}
			b, _ := wire.AppendFrame(nil, d)
			size += len(b)
		}
		t.Logf("%s: replayed seq %d..%d, %d bytes of %d allowed", j.User, got.Oldest, n, size, s.cfg.MaxOutbound/replayShare)
		if size > s.cfg.MaxOutbound/replayShare {
			t.Errorf("%s: replayed %d bytes, more than a quarter of MaxOutbound %d", j.User, size, s.cfg.MaxOutbound)
		}
	}
}
