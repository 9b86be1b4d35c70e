package dashboard_test

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"nearchat/pkg/testkit"
)

// TestMetricsFollowAMove starts a real cluster, chats, drains the room's
// server so the room moves, and checks through both kinds of /metrics
// endpoint (parsed with expfmt) that the counters and histograms moved as
// they should.
func TestMetricsFollowAMove(t *testing.T) {
	c := startCluster(t)
	c.startServer("serv1")
	c.startServer("serv3")
	alice, bob := c.user("alice"), c.user("bob")
	sa, sb, first := c.chat(alice, bob)
	// serv1 (40 ms) should win over serv3 (60 ms), but on a loaded
	// machine a late probe round can put the room on serv3: the test
	// drains whichever server the room starts on.
	from, to := first, "serv3"
	if first == "serv3" {
		to = "serv1"
	}
	t.Logf("room started on %s", from)
	send(t, sa, bob, 20)

	// A loop publishes its counts when its callback or run ends, just
	// after the writes the members have already read.
	var before map[string]*dto.MetricFamily
	testkit.WaitFor(t, 5*time.Second, "the first server's counts published", func() bool {
		before = scrape(t, c.prom[from])
		return value(before, "nearchat_chatserver_fanout_latency_seconds") >= 20 &&
			value(before, "nearchat_chatserver_frames_received_total") >= 20 &&
			value(before, "nearchat_chatserver_frames_sent_total") >= 40
	})
	cenBefore := scrape(t, c.cenProm)
	checks := []struct {
		what string
		got  float64
		want float64
	}{
		{"drained server's rooms", value(before, "nearchat_chatserver_rooms"), 1},
		{"drained server's members", value(before, "nearchat_chatserver_members"), 2},
		{"requests accepted", value(cenBefore, "nearchat_central_chat_requests_total", "outcome", "req_accepted"), 1},
		{"rooms", value(cenBefore, "nearchat_central_rooms"), 1},
		{"servers up", value(cenBefore, "nearchat_central_servers", "state", "up"), 2},
		{"clients online", value(cenBefore, "nearchat_central_clients", "state", "online"), 2},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("before the move: %s = %v, want %v", ck.what, ck.got, ck.want)
		}
	}
	if n := value(before, "nearchat_chatserver_connections"); n < 2 {
		t.Errorf("drained server's connections = %v, want at least the two members (probes come and go)", n)
	}
	// 20 Chats in from alice; 20 Delivers out to bob, 20 Acks to alice.
	if in := value(before, "nearchat_chatserver_frames_received_total"); in < 20 {
		t.Errorf("drained server's frames received = %v, want at least the 20 chats", in)
	}
	if out := value(before, "nearchat_chatserver_frames_sent_total"); out < 40 {
		t.Errorf("drained server's frames sent = %v, want at least 20 delivers and 20 acks", out)
	}
	if n := value(before, "nearchat_chatserver_fanout_latency_seconds"); n < 20 {
		t.Errorf("drained server's fan-out histogram count = %v, want at least 20", n)
	}
	if b := value(before, "nearchat_chatserver_history_messages"); b != 20 {
		t.Errorf("drained server's history = %v messages, want 20", b)
	}
	if r := value(cenBefore, "nearchat_central_probe_reports_total"); r < 2 {
		t.Errorf("probe reports = %v, want at least one per client", r)
	}
	if m := value(cenBefore, "nearchat_central_moves_total", "reason", "server_draining"); m > 0 {
		t.Errorf("a draining move before any drain: %v", m)
	}

	// Drain it: the room must move to the other server.
	if err := c.drain(from); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the room on "+to, func() bool { return c.roomServer() == to })
	testkit.WaitFor(t, 10*time.Second, "both members on "+to, func() bool {
		return value(scrape(t, c.prom[to]), "nearchat_chatserver_members") == 2
	})
	send(t, sb, alice, 10)

	var after3 map[string]*dto.MetricFamily
	testkit.WaitFor(t, 5*time.Second, "the new server's counts published", func() bool {
		after3 = scrape(t, c.prom[to])
		return value(after3, "nearchat_chatserver_fanout_latency_seconds") >= 10 &&
			value(after3, "nearchat_chatserver_frames_received_total") >= 10
	})
	cen := scrape(t, c.cenProm)
	if m := value(cen, "nearchat_central_moves_total", "reason", "server_draining"); m != 1 {
		t.Errorf("moves_total{reason=server_draining} = %v, want 1", m)
	}
	if n := value(cen, "nearchat_central_move_bad_state_seconds"); n != 1 {
		t.Errorf("bad-state histogram count = %v, want 1", n)
	}
	if d := value(cen, "nearchat_central_servers", "state", "draining"); d != 1 {
		t.Errorf("servers{state=draining} = %v, want 1", d)
	}
	if n := value(cen, "nearchat_central_rest_requests_total", "route", "POST /v1/servers/{id}/drain", "code", "204"); n != 1 {
		t.Errorf("REST drain requests = %v, want 1", n)
	}
	if n := value(cen, "nearchat_central_rest_requests_total", "route", "POST /v1/servers/{id}/heartbeat", "code", "200"); n < 2 {
		t.Errorf("REST heartbeats = %v, want several", n)
	}
	if n := value(cen, "nearchat_central_scan_duration_seconds"); n < 1 {
		t.Errorf("scan histogram count = %v, want at least one scan", n)
	}
	if r := value(after3, "nearchat_chatserver_rooms"); r != 1 {
		t.Errorf("new server's rooms = %v, want 1", r)
	}
	if in := value(after3, "nearchat_chatserver_frames_received_total"); in < 10 {
		t.Errorf("new server's frames received = %v, want at least the 10 chats", in)
	}
	if n := value(after3, "nearchat_chatserver_fanout_latency_seconds"); n < 10 {
		t.Errorf("new server's fan-out histogram count = %v, want at least 10", n)
	}
	if busy := value(after3, "nearchat_chatserver_loop_busy_seconds_total"); busy <= 0 {
		t.Errorf("new server's loop busy time = %v, want > 0", busy)
	}
	testkit.WaitFor(t, 10*time.Second, "drained server's empty", func() bool {
		m := scrape(t, c.prom[from])
		return value(m, "nearchat_chatserver_rooms") == 0 && value(m, "nearchat_chatserver_history_messages") == 0
	})
	snap := c.cen.Snapshot()
	if len(snap.Moves) != 1 || snap.Moves[0].From != from || snap.Moves[0].To != to || snap.Moves[0].Reason != "server_draining" {
		t.Fatalf("timeline = %+v, want one move %s -> %s for draining", snap.Moves, from, to)
	}
	t.Logf("move: %s -> %s (%s), bad state %v", snap.Moves[0].From, snap.Moves[0].To, snap.Moves[0].Detail, snap.Moves[0].BadFor)
}
