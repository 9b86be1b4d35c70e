package chaos

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"nearchat/bench/cluster"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Scenarios is every fault script, in the order make chaos runs them.
var Scenarios = []Scenario{
	// The drained server waits up to 30 s for its rooms to go, so the
	// partitioned member's old link stays up: nothing but Central can
	// tell it the room moved (reliability review finding 1).
	{Name: "partition-during-move", Doc: "cut one member off from Central (control and REST stalled, then cut) for longer than Central's Assign give-up while its room moves off a draining server that stays up",
		ServerArgs: []string{"-drain-timeout", "30s"}, Run: partitionDuringMove},
	{Name: "partition-old-server-gone", Doc: "the same partition, but the drained server exits after 3 s, breaking the member's old link", Run: partitionDuringMove},
	{Name: "central-restart-during-move", Doc: "SIGKILL Central right after a drain starts a move, start it again", Run: centralRestart(true, 200*time.Millisecond)},
	{Name: "central-restart-old-server-up", Doc: "SIGKILL Central 0-100 ms after a drain asks for a move, the drained server staying up (-drain-timeout 30s) so a member that missed its Assign keeps its old link",
		ServerArgs: []string{"-drain-timeout", "30s"}, Run: centralRestart(false, 100*time.Millisecond)},
	// The same two with room tickets: a restarted Central then believes a
	// member's Holding only with the ticket of its placement.
	{Name: "central-restart-during-move-tickets", Doc: "central-restart-during-move with room tickets signed and checked", Tickets: true, Run: centralRestart(true, 200*time.Millisecond)},
	{Name: "central-restart-old-server-up-tickets", Doc: "central-restart-old-server-up with room tickets signed and checked", Tickets: true,
		ServerArgs: []string{"-drain-timeout", "30s"}, Run: centralRestart(false, 100*time.Millisecond)},
	{Name: "kill-server-during-handoff", Doc: "SIGKILL the destination chat server while a move's handoff runs", Run: killDuringHandoff},
	{Name: "kill-server-central-down", Doc: "SIGKILL the room's chat server while Central is down, then start Central", Run: killWhileCentralDown},
	{Name: "client-kill-restart", Doc: "SIGKILL a member's client and start it again with its token", Run: clientKillRestart},
	{Name: "member-restart-midstream", Doc: "SIGKILL the member sending 100 msg/s and start it again with its token", Rate: 100, Run: senderRestart},
	{Name: "slow-server-checks", Doc: "the room's server answers 400 ms late each way while a member reports it unreachable", Run: slowServerChecks},
	{Name: "duplicate-stale-reports", Doc: "a member's Unreachable and AssignAck frames doubled, then old ones replayed after a move", Run: duplicateStaleReports},
	{Name: "control-never-reads", Doc: "a registered client floods Central's control port with requests and never reads", Run: controlNeverReads},
	{Name: "flaky-control-during-move", Doc: "every member's control link drops 20% and reorders 20% of frames, +50 ms, during a move", Run: flakyControl},
	{Name: "heartbeat-blackhole", Doc: "the room's server's heartbeats to Central black-holed past offline-after, then healed", Run: heartbeatBlackhole},
	// The three below overflow what the chat server's kernel send buffer
	// absorbs (up to 4 MiB here), so the server's own bounds (-max-outbound,
	// scaled down to 256 KiB, and -slow-timeout) are reached.
	{Name: "slow-reader", Doc: "one member reads at 1/10 of the room's send rate for the hold (2 x 200 msg/s of 3 KB; server -max-outbound 256 KiB): no loss, no Missed, nobody cut off", Rate: 200,
		BotArgs: []string{"-size", "3000"}, ServerArgs: []string{"-max-outbound", "262144"}, NoLoss: true, Run: slowReader},
	{Name: "reader-stall-resume", Doc: "one member's bot stops taking events (SIGUSR1: its client stops reading) for half the hold, within the server's -slow-timeout of twice the hold, then resumes (2 x 150 msg/s of 3 KB; server -max-outbound 256 KiB): no loss", Rate: 150,
		BotArgs: []string{"-size", "3000"}, ServerArgs: []string{"-max-outbound", "262144"},
		HoldArgs: func(hold time.Duration) []string { return []string{"-slow-timeout", (2 * hold).String()} },
		NoLoss:   true, Run: readerStall},
	// At 2 x 300 msg/s the kernel's buffers fill within about 2 s, so the
	// member is behind well before the stall ends even in the short run.
	{Name: "reader-stall-cutoff", Doc: "one member's bot stops taking events (SIGUSR1) for half the hold, past the server's -slow-timeout of a sixth of it (2 x 300 msg/s of 3 KB): cut off, then told exactly what it lacks, one Missed per sender", Rate: 300,
		BotArgs: []string{"-size", "3000"}, ServerArgs: []string{"-max-outbound", "262144"},
		HoldArgs: func(hold time.Duration) []string { return []string{"-slow-timeout", (hold / 6).String()} },
		Run:      readerStallCutoff, Check: oneMissedPerSender},
	{Name: "vanished-member", Doc: "SIGSTOP a member's client past the server's -idle-timeout (3 s): the others see it leave; SIGCONT, it comes back",
		ServerArgs: []string{"-idle-timeout", "3s"}, Run: vanishedMember},
	{Name: "resend-storm", Doc: "one member sends 50 Resend frames for the whole history of another", Run: resendStorm},
}

// Find returns the scenario called name.
func Find(name string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// pick returns one of the members the requester invited.
func (e *Env) pick() string { return members[1+e.Rng.IntN(len(members)-1)] }

func partitionDuringMove(e *Env) error {
	victim := e.pick()
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	for _, p := range []*Proxy{e.Control[victim], e.REST[victim]} {
		p.Set("", Up, Rule{Stall: true})
		p.Set("", Down, Rule{Stall: true})
	}
	e.Fault("partitioned %s from Central", victim)
	if err := e.Drain(at); err != nil {
		return err
	}
	if err := e.Sleep(e.Jitter(6*time.Second, 8*time.Second)); err != nil {
		return err
	}
	// TCP gave up on the partitioned connections long ago.
	e.Control[victim].Cut("")
	e.REST[victim].Cut("")
	e.Fault("cut %s's stalled connections to Central", victim)
	return nil
}

// centralRestart drains the room's server, then SIGKILLs Central within
// upTo, once a member moved if awaitMove, and starts it again.
func centralRestart(awaitMove bool, upTo time.Duration) func(*Env) error {
	return func(e *Env) error {
		from, err := e.drainRoomServer()
		if err != nil {
			return err
		}
		if awaitMove {
			if _, err := e.AwaitMove(from, 10*time.Second); err != nil {
				e.log("no move seen yet (%v); restarting Central anyway", err)
			}
		}
		if err := e.Sleep(e.Jitter(0, upTo)); err != nil {
			return err
		}
		e.Fault("SIGKILL Central")
		if err := e.C.StopCentral(syscall.SIGKILL); err != nil {
			return err
		}
		if err := e.Sleep(e.Jitter(300*time.Millisecond, 1500*time.Millisecond)); err != nil {
			return err
		}
		e.Fault("start Central")
		return e.C.StartCentral(e.ctx)
	}
}

// drainRoomServer drains the room's server and returns the event index
// before it, for AwaitMove.
func (e *Env) drainRoomServer() (from int, err error) {
	at, _, err := e.Where()
	if err != nil {
		return 0, err
	}
	from = e.C.Events.Len()
	return from, e.Drain(at)
}

func killDuringHandoff(e *Env) error {
	from, err := e.drainRoomServer()
	if err != nil {
		return err
	}
	mv, err := e.AwaitMove(from, 10*time.Second)
	if err != nil {
		return fmt.Errorf("the drain moved nobody: %w", err)
	}
	if err := e.Sleep(e.Jitter(0, 100*time.Millisecond)); err != nil {
		return err
	}
	return e.Kill(mv.Str("to"))
}

func killWhileCentralDown(e *Env) error {
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	e.Fault("SIGKILL Central")
	if err := e.C.StopCentral(syscall.SIGKILL); err != nil {
		return err
	}
	if err := e.Kill(at); err != nil {
		return err
	}
	if err := e.Sleep(e.Jitter(500*time.Millisecond, 2*time.Second)); err != nil {
		return err
	}
	e.Fault("start Central")
	return e.C.StartCentral(e.ctx)
}

func restartBot(e *Env, name string) error {
	b := e.C.Bot(name)
	e.Fault("SIGKILL %s", name)
	if err := b.Kill(); err != nil {
		return err
	}
	if err := e.Sleep(e.Jitter(300*time.Millisecond, 2*time.Second)); err != nil {
		return err
	}
	e.Fault("restart %s with its token", name)
	return b.Restart()
}

func clientKillRestart(e *Env) error { return restartBot(e, e.pick()) }

func senderRestart(e *Env) error {
	if err := e.Sleep(e.Jitter(500*time.Millisecond, 1500*time.Millisecond)); err != nil {
		return err
	}
	return restartBot(e, "alice")
}

func slowServerChecks(e *Env) error {
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	from := e.C.Events.Len()
	p := e.Chat[at]
	p.Set("", Up, Rule{Delay: 400 * time.Millisecond})
	p.Set("", Down, Rule{Delay: 400 * time.Millisecond})
	victim := e.pick()
	e.Fault("%s answers 400 ms late each way; cut %s's link to it", at, victim)
	p.Cut(victim)
	if err := e.Sleep(3 * time.Second); err != nil {
		return err
	}
	for _, ev := range e.C.Events.All()[from:] {
		if ev.Kind() == "moved" && ev.Str("from") == at && strings.Contains(ev.Str("reason"), "down") {
			e.Violate("%s was moved off %s (%q), a live server that was only slow", ev.Bot, at, ev.Str("reason"))
			break
		}
	}
	return nil
}

func duplicateStaleReports(e *Env) error {
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	victim := e.pick()
	ctl := e.Control[victim]
	ctl.Set("", Up, Rule{Dup: []wire.Type{proto.TUnreachable, proto.TAssignAck}})
	e.Fault("%s's reports doubled; cut its link to %s", victim, at)
	e.Chat[at].Cut(victim)
	if err := e.Sleep(1500 * time.Millisecond); err != nil {
		return err
	}
	if at, _, err = e.Where(); err != nil {
		return err
	}
	from := e.C.Events.Len()
	if err := e.Drain(at); err != nil {
		return err
	}
	if _, err := e.C.Events.Await(e.ctx, from, 10*time.Second, func(ev cluster.Event) bool {
		return ev.Bot == victim && ev.Kind() == "moved"
	}); err != nil {
		e.log("%s did not move off %s: %v", victim, at, err)
	}
	n := ctl.Replay("", Up, proto.TUnreachable, 5) + ctl.Replay("", Up, proto.TAssignAck, 5)
	e.Fault("replayed %d stale reports of %s", n, victim)
	return e.Sleep(time.Second)
}

func controlNeverReads(e *Env) error {
	sess, err := e.C.API.RegisterClient(e.ctx, "mallory", "")
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", e.C.Control, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	hello, err := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "chaos/never-reads", Token: sess.Token})
	if err != nil {
		return err
	}
	req, err := wire.AppendFrame(nil, &proto.Request{To: []string{"alice"}})
	if err != nil {
		return err
	}
	if _, err := conn.Write(hello); err != nil {
		return err
	}
	per := (64 << 10) / len(req)
	batch := make([]byte, 0, per*len(req))
	for range per {
		batch = append(batch, req...)
	}
	e.Fault("mallory floods Central's control port with requests and never reads")
	n := 0
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end) && n < 400_000; n += per {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := conn.Write(batch); err != nil {
			e.log("Central stopped taking mallory's frames after %d requests: %v", n, err)
			break
		}
	}
	e.log("mallory sent about %d requests", n)
	return nil
}

func flakyControl(e *Env) error {
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	r := Rule{Drop: 0.2, Reorder: 0.2, Delay: 50 * time.Millisecond}
	for _, p := range e.Control {
		p.Set("", Up, r)
		p.Set("", Down, r)
	}
	e.Fault("every control link drops and reorders 20%% of frames")
	if err := e.Drain(at); err != nil {
		return err
	}
	return e.Sleep(e.Jitter(4*time.Second, 6*time.Second))
}

func heartbeatBlackhole(e *Env) error {
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	e.Beat[at].Set("", Up, Rule{Blackhole: true})
	e.Beat[at].Set("", Down, Rule{Blackhole: true})
	e.Fault("%s's heartbeats to Central black-holed", at)
	return e.Sleep(e.Jitter(4*time.Second, 5*time.Second))
}

func slowReader(e *Env) error {
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	victim := e.pick()
	// Two senders at 200 msg/s of ~3060 bytes on the wire: ~1.2 MB/s.
	e.Chat[at].Set(victim, Down, Rule{Rate: 122_000})
	e.Fault("%s reads at 1/10 of the room's send rate for %v", victim, e.cfg.Hold)
	return e.Sleep(e.cfg.Hold)
}

func readerStall(e *Env) error { return stallReader(e, false) }

func readerStallCutoff(e *Env) error { return stallReader(e, true) }

// stallReader stops one member's bot taking its events for half the hold
// (SIGUSR1), as a user or application that stops reading does: its
// client stops reading the socket once its event buffers are full, and
// goes on pinging, so its link stays alive. untilCut keeps it stopped
// until the room sees it leave (the server cut it off), up to a minute
// more: the kernel's socket buffers absorb several seconds of the room's
// traffic before the server's own bounds are reached, longer than the
// short run's hold.
func stallReader(e *Env, untilCut bool) error {
	victim := e.pick()
	b := e.C.Bot(victim)
	from := e.C.Events.Len()
	if err := b.Signal(syscall.SIGUSR1); err != nil {
		return err
	}
	e.Fault("%s stops reading for %v", victim, e.cfg.Hold/2)
	if err := e.Sleep(e.cfg.Hold / 2); err != nil {
		return err
	}
	if untilCut {
		if _, err := e.C.Events.Await(e.ctx, from, time.Minute, func(ev cluster.Event) bool {
			return ev.Kind() == "left" && ev.Str("user") == victim
		}); err != nil {
			e.log("the room never saw %s leave: %v", victim, err)
		} else {
			e.log("the server cut %s off", victim)
		}
	}
	if err := b.Signal(syscall.SIGUSR1); err != nil {
		return err
	}
	e.Fault("%s reads again", victim)
	return nil
}

func resendStorm(e *Env) error {
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	victim := e.pick()
	f, err := wire.AppendFrame(nil, &proto.Resend{Of: "alice", After: 0})
	if err != nil {
		return err
	}
	e.Fault("%s asks alice 50 times in a second for everything she sent", victim)
	for range 50 {
		if e.Chat[at].Inject(victim, Up, f) == 0 {
			return fmt.Errorf("%s has no link through %s's proxy", victim, at)
		}
		if err := e.Sleep(20 * time.Millisecond); err != nil {
			return err
		}
	}
	return e.Sleep(2 * time.Second)
}

// oneMissedPerSender checks the member that was cut off: for each sender,
// at most one Missed, covering exactly what it did not get (nothing it
// got is reported missed).
func oneMissedPerSender(e *Env, evs []cluster.Event) {
	type key struct{ bot, from string }
	got := map[key]map[uint64]bool{}
	missed := map[key][]cluster.Event{}
	cut := map[string]bool{}
	for _, ev := range evs {
		k := key{ev.Bot, ev.Str("from")}
		switch ev.Kind() {
		case "received":
			if got[k] == nil {
				got[k] = map[uint64]bool{}
			}
			got[k][uint64(ev.Num("num"))] = true
		case "missed":
			missed[k] = append(missed[k], ev)
			cut[ev.Bot] = true
		}
	}
	if len(cut) == 0 {
		e.Violate("nobody was told of a gap: the stalled member was never cut off")
	}
	for k, ms := range missed {
		if len(ms) != 1 {
			e.Violate("%s got %d Missed for %s, want one", k.bot, len(ms), k.from)
		}
		for _, m := range ms {
			first, last := uint64(m.Num("first")), uint64(m.Num("last"))
			var dup []uint64
			for n := range got[k] {
				if n >= first && n <= last {
					dup = append(dup, n)
				}
			}
			if len(dup) > 0 {
				e.Violate("%s's Missed for %s (%d-%d) covers %d messages it got: %s", k.bot, k.from, first, last, len(dup), ranges(dup))
			}
		}
	}
}

// vanishedMember freezes a member's client (SIGSTOP): it sends nothing,
// not even a ping, so its server closes it after -idle-timeout and the
// room sees it leave. Then it thaws and comes back.
func vanishedMember(e *Env) error {
	victim := e.pick()
	b := e.C.Bot(victim)
	from := e.C.Events.Len()
	e.Fault("SIGSTOP %s", victim)
	if err := b.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	for _, m := range members {
		if m == victim {
			continue
		}
		if _, err := e.C.Events.Await(e.ctx, from, 15*time.Second, func(ev cluster.Event) bool {
			return ev.Bot == m && ev.Kind() == "left" && ev.Str("user") == victim
		}); err != nil {
			e.Violate("%s never saw %s leave after it froze: %v", m, victim, err)
		}
	}
	e.Fault("SIGCONT %s", victim)
	return b.Signal(syscall.SIGCONT)
}
