package chaos

import (
	"fmt"
	"math"
	"time"

	"nearchat/bench/cluster"
)

// stallScenarios are the faults of a busy machine: a client's probe round
// stalls now and then and reads every server slow at once.
var stallScenarios = []Scenario{
	{Name: "stalled-probe-rounds", Doc: "every member's probe rounds read every server 150 ms slow one round in three (a busy client) while the room's drained server starts again: the room must go back to it within 20 s, and make no other move",
		Run: stalledProbeRounds},
	{Name: "stalled-first-round", Doc: "every member's first probe round of the best server (s1) reads it 150 ms slow, as a busy client's can, so the room starts on s2; Central's -min-dwell 30s: the room must reach s1 within 15 s of forming",
		CentralArgs: []string{"-min-dwell", "30s"}, Before: stallFirstRound, Run: firstRoundCorrected},
}

func init() { Scenarios = append(Scenarios, stallScenarios...) }

// stallBack bounds how long after the better server's restart the room
// may take to go back to it: a few probe rounds (every 1 s here, 4 s once
// nothing changes) and Central's -min-dwell 2s. make demo beside make
// test once waited 20 s for such a move, two stalled rounds vetoing it.
const stallBack = 20 * time.Second

// stallDelay is what a stalled probe round adds to every server's figure:
// far more than the 20 ms a move back to the best server gains.
const stallDelay = 150 * time.Millisecond

// stalledProbeRounds drains the room's server, so the room moves to the
// next best, and starts it again while one probe round in three of every
// member reads every server stallDelay slow. The room must go back (a
// stalled round must not veto a clear gain for long: the figures stay
// certain enough, the round left out as the outlier it is), and once back
// must stay (nor may a stalled round move it).
func stalledProbeRounds(e *Env) error {
	from, err := e.drainRoomServer()
	if err != nil {
		return err
	}
	mv, err := e.AwaitMove(from, 15*time.Second)
	if err != nil {
		return fmt.Errorf("the drain moved nobody: %w", err)
	}
	best := mv.Str("from")
	// A member's chat link (it sent a Join) keeps its pace; every other
	// connection to a chat server is a probe connection.
	for _, p := range e.Chat {
		for _, m := range members {
			p.Set(m, Down, Rule{})
		}
		p.Set("", Down, Rule{Delay: stallDelay, Rounds: 3})
	}
	e.Fault("every probe round in three stalled %v", stallDelay)

	back := e.C.Events.Len()
	if err := e.Restart(best); err != nil {
		return err
	}
	restarted := time.Now()
	mv, err = e.C.Events.Await(e.ctx, back, stallBack, func(ev cluster.Event) bool {
		return ev.Kind() == "moved" && ev.Str("to") == best
	})
	if err != nil {
		e.Violate("the room did not go back to %s within %v of its restart while probe rounds stalled: %v", best, stallBack, err)
		return nil
	}
	e.log("the room went back to %s %.1f s after its restart", best, mv.At.Sub(restarted).Seconds())
	// The stalls go on: the room must stay where it is.
	if err := e.Sleep(8 * time.Second); err != nil {
		return err
	}
	for _, ev := range e.C.Events.All()[back:] {
		if ev.Kind() == "moved" && ev.Num("epoch") > mv.Num("epoch") {
			e.Violate("%s moved again, %s to %s, with %s as good as ever: a stalled round moved it",
				ev.Bot, ev.Str("from"), ev.Str("to"), best)
			break
		}
	}
	return nil
}

// firstRoundBack bounds how long after the room formed on a stalled first
// round it may take to reach the best server: three probe rounds (1 s
// apart here), well inside the scenario's dwell of 30 s, which held such a
// room for all of it before a room never moved was freed of it.
const firstRoundBack = 15 * time.Second

// stallFirstRound delays the answers of s1 in the first round of every
// probe connection to it (one round in math.MaxInt: the first only).
func stallFirstRound(e *Env) {
	p := e.Chat["s1"]
	for _, m := range members {
		p.Set(m, Down, Rule{})
	}
	p.Set("", Down, Rule{Delay: stallDelay, Rounds: math.MaxInt})
	e.log("every first probe round of s1 stalled %v", stallDelay)
}

// firstRoundCorrected checks that the room, placed on s2 from the stalled
// first rounds, reaches s1 within firstRoundBack of forming.
func firstRoundCorrected(e *Env) error {
	var formed time.Time
	for _, ev := range e.C.Events.All() {
		if ev.Kind() == "joined" && ev.Str("room") == e.Room {
			if ev.Str("server") == "s1" {
				return fmt.Errorf("%s joined the room on s1: the first rounds were not stalled", ev.Bot)
			}
			if formed.IsZero() || ev.At.Before(formed) {
				formed = ev.At
			}
		}
	}
	mv, err := e.C.Events.Await(e.ctx, 0, firstRoundBack+5*time.Second, func(ev cluster.Event) bool {
		return ev.Kind() == "moved" && ev.Str("to") == "s1"
	})
	switch {
	case err != nil:
		e.Violate("the room never reached s1 after forming on a stalled first round: %v", err)
	case mv.At.Sub(formed) > firstRoundBack:
		e.Violate("the room reached s1 %.1f s after forming, over %v", mv.At.Sub(formed).Seconds(), firstRoundBack)
	default:
		e.log("the room reached s1 %.1f s after forming", mv.At.Sub(formed).Seconds())
	}
	return nil
}
