package chaos

import (
	"fmt"
	"syscall"
	"time"

	"nearchat/bench/cluster"
)

// The scenarios of Central replicas (three Centrals electing a leader on
// three etcd members, every Central's link to every member through a
// proxy). Each ends with a drain of the room's server, so a move must
// succeed under the new leader too.
var replicaScenarios = []Scenario{
	{Name: "replica-kill-leader-during-move", Doc: "three Centrals on etcd: SIGKILL the leader right after a drain starts a move; a follower must lead and finish it",
		Replicas: true, Run: killLeaderDuringMove},
	{Name: "replica-kill-follower", Doc: "three Centrals on etcd: SIGKILL a follower Central (it relays a bot, which must reconnect through another replica), then drain the room's server",
		Replicas: true, Run: killFollower},
	{Name: "replica-partition-leader-etcd", Doc: "three Centrals on etcd: cut the leader off from every etcd member; it must step down and a follower lead, then drain the room's server",
		Replicas: true, Run: partitionLeaderFromEtcd},
	{Name: "replica-kill-etcd-member", Doc: "three Centrals on etcd: SIGKILL one of the three etcd members, then drain the room's server",
		Replicas: true, Run: killEtcdMember},
	{Name: "replica-kill-server-no-leader", Doc: "three Centrals on etcd: SIGSTOP the followers, SIGKILL the leader and the room's chat server, SIGCONT the followers 1-5 s later (the server's etcd lease, TTL offline-after, lapsed or not); the new leader must move the room off the dead server",
		Replicas: true, Run: killServerNoLeader},
}

func init() { Scenarios = append(Scenarios, replicaScenarios...) }

// leaderTTL is the replicas' -leader-ttl.
const leaderTTL = 2 * time.Second

func (e *Env) startReplicas(opts *cluster.Options, proxy func(name, target string, frames bool) (*Proxy, error)) error {
	opts.Secret = fmt.Sprintf("chaos-%d", time.Now().UnixNano())
	r, err := cluster.StartReplicas(e.ctx, cluster.ReplicaOptions{Bin: opts.Bin, Dir: opts.Dir, Secret: opts.Secret,
		LeaderTTL: leaderTTL, CentralArgs: opts.CentralArgs,
		EtcdVia: func(c, m int, addr string) (string, error) {
			for len(e.Etcd) <= c {
				e.Etcd = append(e.Etcd, nil)
			}
			p, err := proxy(fmt.Sprintf("central%d-etcd%d", c, m), addr, false)
			if err != nil {
				return "", err
			}
			e.Etcd[c] = append(e.Etcd[c], p)
			return p.Addr(), nil
		}})
	if err != nil {
		e.closeReplicas()
		return err
	}
	e.Rep = r
	opts.REST, opts.Control = r.Addrs()
	e.log("central%d leads", r.Leader(e.ctx))
	return nil
}

func (e *Env) closeReplicas() {
	if e.Rep != nil {
		e.Rep.Close()
	}
	for _, ps := range e.Etcd {
		for _, p := range ps {
			p.Close()
		}
	}
}

// awaitNewLeader waits for a Central other than old to lead.
func (e *Env) awaitNewLeader(old int, since time.Time) error {
	lead := -1
	err := cluster.WaitFor(e.ctx, 10*leaderTTL+10*time.Second, func() bool {
		lead = e.Rep.Leader(e.ctx)
		return lead >= 0 && lead != old
	})
	if err != nil {
		return fmt.Errorf("no Central but central%d leads: %w", old, err)
	}
	e.Fault("central%d leads, %.0f ms after the fault", lead, float64(time.Since(since).Milliseconds()))
	return nil
}

// drainRoom drains the room's server; from is the first event after.
func (e *Env) drainRoom() (from int, err error) {
	at, _, err := e.Where()
	if err != nil {
		return 0, err
	}
	from = e.C.Events.Len()
	return from, e.Drain(at)
}

// drainRoomMoves drains the room's server and waits for the move.
func (e *Env) drainRoomMoves() error {
	from, err := e.drainRoom()
	if err != nil {
		return err
	}
	if _, err := e.AwaitMove(from, 15*time.Second); err != nil {
		return fmt.Errorf("the drain of the room's server moved nobody: %w", err)
	}
	return nil
}

func killLeaderDuringMove(e *Env) error {
	lead := e.Rep.Leader(e.ctx)
	from, err := e.drainRoom()
	if err != nil {
		return err
	}
	if _, err := e.AwaitMove(from, 10*time.Second); err != nil {
		e.log("no move seen yet (%v); killing the leader anyway", err)
	}
	if err := e.Sleep(e.Jitter(0, 200*time.Millisecond)); err != nil {
		return err
	}
	e.Fault("SIGKILL the leader, central%d", lead)
	start := time.Now()
	if err := e.Rep.Centrals[lead].Kill(); err != nil {
		return err
	}
	return e.awaitNewLeader(lead, start)
}

func killFollower(e *Env) error {
	lead := e.Rep.Leader(e.ctx)
	victim := (lead + 1 + e.Rng.IntN(len(e.Rep.Centrals)-1)) % len(e.Rep.Centrals)
	e.Fault("SIGKILL a follower, central%d", victim)
	if err := e.Rep.Centrals[victim].Kill(); err != nil {
		return err
	}
	if err := e.Sleep(2 * leaderTTL); err != nil {
		return err
	}
	if now := e.Rep.Leader(e.ctx); now != lead {
		e.Violate("the leader changed from central%d to central%d when a follower died", lead, now)
	}
	return e.drainRoomMoves()
}

func partitionLeaderFromEtcd(e *Env) error {
	lead := e.Rep.Leader(e.ctx)
	for _, p := range e.Etcd[lead] {
		p.Set("", Up, Rule{Blackhole: true})
		p.Set("", Down, Rule{Blackhole: true})
	}
	e.Fault("partitioned the leader, central%d, from every etcd member", lead)
	start := time.Now()
	if err := e.awaitNewLeader(lead, start); err != nil {
		return err
	}
	// The old leader steps down (it follows again, or has exited): its
	// REST port no longer answers as itself.
	if err := cluster.WaitFor(e.ctx, 10*leaderTTL+5*time.Second, func() bool { return !e.Rep.Serves(e.ctx, lead) }); err != nil {
		e.Violate("central%d, cut off from etcd, still serves as the leader %v after a new leader took over", lead, time.Since(start))
	}
	for _, p := range e.Etcd[lead] {
		p.Heal()
	}
	return e.drainRoomMoves()
}

func killServerNoLeader(e *Env) error {
	at, _, err := e.Where()
	if err != nil {
		return err
	}
	lead := e.Rep.Leader(e.ctx)
	var stopped []int
	for i, c := range e.Rep.Centrals {
		if i != lead && c.Running() {
			if err := c.Signal(syscall.SIGSTOP); err != nil {
				return err
			}
			stopped = append(stopped, i)
		}
	}
	e.Fault("SIGSTOP the followers %v, SIGKILL the leader, central%d", stopped, lead)
	if err := e.Rep.Centrals[lead].Kill(); err != nil {
		return err
	}
	from := e.C.Events.Len()
	if err := e.Kill(at); err != nil {
		return err
	}
	gap := e.Jitter(time.Second, 5*time.Second)
	if err := e.Sleep(gap); err != nil {
		return err
	}
	e.Fault("SIGCONT the followers after %v with no Central leading", gap.Round(time.Millisecond))
	for _, i := range stopped {
		if err := e.Rep.Centrals[i].Signal(syscall.SIGCONT); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := e.awaitNewLeader(lead, start); err != nil {
		return err
	}
	led := time.Now()
	if _, err := e.AwaitMove(from, 15*time.Second); err != nil {
		return fmt.Errorf("the new leader did not move the room off the dead %s: %w", at, err)
	}
	e.log("the room moved off the dead %s %.0f ms after the new leader was seen", at, float64(time.Since(led).Milliseconds()))
	return nil
}

func killEtcdMember(e *Env) error {
	victim := e.Rng.IntN(len(e.Rep.Etcd))
	lead := e.Rep.Leader(e.ctx)
	e.Fault("SIGKILL etcd%d", victim)
	if err := e.Rep.Etcd[victim].Kill(); err != nil {
		return err
	}
	if err := e.drainRoomMoves(); err != nil {
		return err
	}
	if now := e.Rep.Leader(e.ctx); now != lead {
		e.log("the leader changed from central%d to central%d", lead, now)
	}
	return nil
}
