package chatserver

import (
	"fmt"
	"net"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// TestMetricsCount checks every counter of Metrics against traffic of a
// known shape, with metrics on, and that nothing is recorded with them off.
func TestMetricsCount(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("metrics=%v", on), func(t *testing.T) {
			s := startServer(t, func(c *Config) { c.Metrics, c.History = on, 8 })
			a, _ := joinAs(t, s, "r", "a")
			b, _ := joinAs(t, s, "r", "b")
			a.expect(proto.TPresence) // b is here
			const n = 20
			for i := uint64(1); i <= n; i++ {
				a.send(&proto.Chat{Num: i, Text: "hello"})
			}
			for range n {
				b.expect(proto.TDeliver)
				a.expect(proto.TAck)
			}
			// A loop publishes its tally when its callback or run ends,
			// just after the writes the peers have already read.
			m := s.Metrics()
			if on {
				testkit.WaitFor(t, 5*time.Second, "the tallies published", func() bool {
					m = s.Metrics()
					return m.FramesIn == 4+n && m.FramesOut == 5+2*n && m.FanoutCount == n+1
				})
			}
			t.Logf("%+v", m)
			if m.Rooms != 1 || m.Members != 2 || m.Conns != 2 {
				t.Errorf("rooms %d, members %d, conns %d; want 1, 2, 2", m.Rooms, m.Members, m.Conns)
			}
			if m.HistoryLimit != 8 || m.OutboundLimit != int64(s.cfg.MaxOutbound) {
				t.Errorf("limits: history %d, outbound %d", m.HistoryLimit, m.OutboundLimit)
			}
			if !on {
				if m.FramesIn+m.FramesOut+m.BytesIn+m.BytesOut+m.FanoutCount != 0 || m.Busy != 0 || m.HistoryFrames != 0 {
					t.Errorf("metrics off, yet recorded: %+v", m)
				}
				return
			}
			// In: 2 Hellos, 2 Joins, n Chats. Out: 2 Welcomes, 2 Joined,
			// 1 Presence, n Delivers, n Acks.
			if m.FramesIn != 4+n || m.FramesOut != 5+2*n {
				t.Errorf("frames in %d, out %d; want %d, %d", m.FramesIn, m.FramesOut, 4+n, 5+2*n)
			}
			if m.BytesIn == 0 || m.BytesOut <= m.BytesIn {
				t.Errorf("bytes in %d, out %d", m.BytesIn, m.BytesOut)
			}
			// Fan-out items: n chats and the Presence of b's join.
			if m.FanoutCount != n+1 || m.Fanout[len(m.Fanout)-1] > m.FanoutCount || m.FanoutSum <= 0 {
				t.Errorf("fan-out count %d (want %d), buckets %v, sum %v", m.FanoutCount, n+1, m.Fanout, m.FanoutSum)
			}
			if m.HistoryFrames != 8 || m.HistoryBytes <= 0 {
				t.Errorf("history %d frames, %d bytes; want the ring's 8", m.HistoryFrames, m.HistoryBytes)
			}
			if m.Busy <= 0 {
				t.Errorf("busy %v", m.Busy)
			}
			a.send(&proto.Leave{})
			b.send(&proto.Leave{})
			testkit.WaitFor(t, 5*time.Second, "the room gone", func() bool { return s.Metrics().Rooms == 0 })
			if m := s.Metrics(); m.HistoryFrames != 0 || m.HistoryBytes != 0 {
				t.Errorf("after the room closed: history %d frames, %d bytes", m.HistoryFrames, m.HistoryBytes)
			}
		})
	}
}

// TestMetricsTLSHandshakes counts a handshake that completes and one that
// fails (a client that speaks plaintext to the TLS port).
func TestMetricsTLSHandshakes(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	tlsMember(t, s.Addr(), ca, "r", "a")
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "one handshake and one failure counted", func() bool {
		m := s.Metrics()
		return m.TLSHandshakes == 1 && m.TLSFailures == 1
	})
}

// BenchmarkMetricsHooks measures what recording costs per member write
// (wrote), per fan-out item (observeFanout) and per callback or fan-out run
// (start and done, which publish the tally), against the nil (metrics off)
// receiver. Compare with the
// fan-out's own CPU per delivery (bench.TestMetricsOverhead prints it).
func BenchmarkMetricsHooks(b *testing.B) {
	frame := make([]byte, 64)
	for _, on := range []bool{false, true} {
		var st *loopStats
		if on {
			st = new(loopStats)
		}
		b.Run(fmt.Sprintf("metrics=%v/hook=write", on), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				st.wrote(frame, 1, i&1023)
			}
		})
		b.Run(fmt.Sprintf("metrics=%v/hook=run", on), func(b *testing.B) {
			// Once per callback or fan-out run: timing and publishing.
			b.ReportAllocs()
			for b.Loop() {
				st.wrote(frame, 1, 0)
				st.done(time.Now())
			}
		})
		b.Run(fmt.Sprintf("metrics=%v/hook=item", on), func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now().UnixNano()
			for b.Loop() {
				st.observeFanout(now-300_000, now)
			}
		})
	}
}
