package chaos

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"

	"nearchat/bench/cluster"
)

// The scenarios of a member quitting (its bot leaves the room, deregisters
// and exits) while the leader Central cannot confirm it: frozen, or cut off
// from etcd (rel7 sweep, 2026-12-03, R7-1 and R7-2). A leave or a
// deregistration lost there kept the member in its room for good, and a
// restart with its token back in it.
var quitScenarios = []Scenario{
	{Name: "quit-leader-stopped", Doc: "three Centrals on etcd: SIGSTOP the leader, SIGTERM a member's bot (it leaves the room and deregisters, waiting for Central to confirm), SIGKILL the leader once it exited; the member must not stay listed, and started again with its token must not rejoin the room it left",
		Replicas: true, Run: quitWhileLeaderStopped},
	{Name: "quit-etcd-lost", Doc: "three Centrals on etcd: cut every Central off from every etcd member, SIGTERM a member's bot at once (the leader takes the leave and deregistration in, but cannot store them), heal 6 s later: once a leader leads the member must not be listed",
		Replicas: true, Run: quitWhileEtcdLost},
}

func init() { Scenarios = append(Scenarios, quitScenarios...) }

// memberListed reports whether Central lists user in the scenario's room,
// and the room's members.
func (e *Env) memberListed(user string) (bool, []string, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 3*time.Second)
	defer cancel()
	rooms, err := e.C.API.Rooms(ctx, e.C.Secret())
	if err != nil {
		return false, nil, err
	}
	for _, r := range rooms {
		if r.ID == e.Room {
			return slices.Contains(r.Members, user), r.Members, nil
		}
	}
	return false, nil, nil
}

// stopQuitter SIGTERMs victim's bot and waits for it to exit: it leaves
// its room, waits for Central to confirm, and deregisters, within 10 s
// and a few more for the deregistration.
func (e *Env) stopQuitter(victim string) *cluster.Bot {
	b := e.C.Bot(victim)
	e.Fault("SIGTERM %s: it leaves and deregisters", victim)
	t0 := time.Now()
	if err := b.StopClean(30 * time.Second); err != nil {
		e.log("%s: %v", victim, err)
	}
	e.log("%s exited %.0f ms after SIGTERM", victim, float64(time.Since(t0).Milliseconds()))
	return b
}

func quitWhileLeaderStopped(e *Env) error {
	victim := e.pick()
	lead := e.Rep.Leader(e.ctx)
	e.Fault("SIGSTOP the leader, central%d", lead)
	if err := e.Rep.Centrals[lead].Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	if err := e.Sleep(200 * time.Millisecond); err != nil {
		return err
	}
	b := e.stopQuitter(victim)
	e.Fault("SIGKILL the stopped leader, central%d", lead)
	start := time.Now()
	if err := e.Rep.Centrals[lead].Kill(); err != nil {
		return err
	}
	if err := e.awaitNewLeader(lead, start); err != nil {
		return err
	}
	// The new leader has every replica's reports by now: a member it
	// still lists stays.
	if err := e.Sleep(6 * time.Second); err != nil {
		return err
	}
	in, ms, err := e.memberListed(victim)
	if err != nil {
		return err
	}
	e.log("6 s after the takeover the room lists %v", ms)
	if in {
		e.Violate("%s left the room and deregistered, yet the new leader lists it in %s: %v", victim, e.Room, ms)
	}
	from := e.C.Events.Len()
	e.Fault("start %s again with its token", victim)
	if err := b.Restart(); err != nil {
		return err
	}
	if ev, err := e.C.Events.Await(e.ctx, from, 10*time.Second, func(ev cluster.Event) bool {
		return ev.Bot == victim && ev.Kind() == "joined" && ev.Str("room") == e.Room
	}); err == nil {
		e.Violate("%s, started again with its token, joined the room it left: %v", victim, ev.Fields)
	}
	if in, ms, _ = e.memberListed(victim); in {
		e.Violate("%s listed in %s after its restart: %v", victim, e.Room, ms)
	}
	return nil
}

func quitWhileEtcdLost(e *Env) error {
	victim := e.pick()
	for _, ps := range e.Etcd {
		for _, p := range ps {
			p.Set("", Up, Rule{Blackhole: true})
			p.Set("", Down, Rule{Blackhole: true})
		}
	}
	e.Fault("cut every Central off from every etcd member")
	start := time.Now()
	// The quitting bot waits for Central's word, longer than the cut:
	// the links heal 6 s after the cut whatever it does.
	healed := make(chan struct{})
	heal := time.AfterFunc(6*time.Second, func() {
		for _, ps := range e.Etcd {
			for _, p := range ps {
				p.Heal()
			}
		}
		close(healed)
	})
	defer func() {
		if heal.Stop() {
			close(healed)
		}
		<-healed
	}()
	e.stopQuitter(victim)
	select {
	case <-healed:
	case <-e.ctx.Done():
		return e.ctx.Err()
	}
	e.Fault("healed every Central's link to etcd (%.0f ms after the cut)", float64(time.Since(start).Milliseconds()))
	if err := cluster.WaitFor(e.ctx, 10*leaderTTL+10*time.Second, func() bool { return e.Rep.Leader(e.ctx) >= 0 }); err != nil {
		return fmt.Errorf("no Central leads after etcd came back: %w", err)
	}
	e.Fault("central%d leads, %.0f ms after the cut", e.Rep.Leader(e.ctx), float64(time.Since(start).Milliseconds()))
	if err := e.Sleep(5 * time.Second); err != nil {
		return err
	}
	in, ms, err := e.memberListed(victim)
	if err != nil {
		return err
	}
	e.log("5 s after a leader leads again the room lists %v", ms)
	if in {
		e.Violate("%s left the room and deregistered, yet once etcd was back the room lists it: %v", victim, ms)
	}
	return nil
}
