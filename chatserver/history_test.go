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

// A room's history replays share a budget, MaxOutbound bytes a second in
// bursts of four times that: a member that rejoins in a loop announcing
// it has seen nothing is replayed nothing once it is spent (Truncated,
// so it asks the senders), where before each Join of about 100 bytes
// earned the whole history (abuse probe, 2026-12-01: 6.9 GB in 15 s).
func TestReplaysBounded(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxOutbound = 256 << 10 })
	sender, _ := joinAs(t, s, "h", "sender")
	text := strings.Repeat("h", 1000)
	for i := uint64(1); i <= 200; i++ {
		sender.send(&proto.Chat{Num: i, Text: text})
	}
	sender.send(&proto.Ping{ID: 1})
	sender.ExpectType(proto.TPong, func(m wire.Message) bool { _, ack := m.(*proto.Ack); return ack })
	const joins = 40
	start := time.Now()
	replayed, truncatedEmpty := 0, 0
	for i := range joins {
		p := hello(t, s)
		p.send(&proto.Join{Room: "h", User: "again", Move: true, Inc: uint64(i + 1)})
		j := p.expect(proto.TJoined).(*proto.Joined)
		p.send(&proto.Ping{ID: 2})
		n := 0
		for {
			m, err := p.next(10 * time.Second)
			if err != nil {
				t.Fatalf("join %d: %v", i, err)
			}
			if _, ok := m.(*proto.Deliver); ok {
				n++
				continue
			}
			if _, ok := m.(*proto.Pong); ok {
				break
			}
		}
		replayed += n
		if n == 0 && j.Truncated {
			truncatedEmpty++
		}
		p.Close()
	}
	took := time.Since(start)
	budget := float64(4*s.cfg.MaxOutbound) + float64(s.cfg.MaxOutbound)*took.Seconds() + float64(s.cfg.MaxOutbound/replayShare)
	t.Logf("%d joins in %v: %d messages replayed (%d bytes of text), %d joins replayed nothing (budget %.0f bytes)", joins, took, replayed, replayed*len(text), truncatedEmpty, budget)
	if float64(replayed*len(text)) > budget {
		t.Fatalf("%d joins were replayed %d bytes of text in %v, past the budget of %.0f", joins, replayed*len(text), took, budget)
	}
	if truncatedEmpty == 0 {
		t.Fatal("no join was refused its replay")
	}
}
