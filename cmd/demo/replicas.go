package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"nearchat/bench/cluster"
)

// runReplicas starts three etcd members and three Centrals on them, four
// chat servers and two bots given every Central's address (the bots a
// follower's first, which relays them to the leader), then SIGKILLs
// the leader Central, a follower relaying a bot, and an etcd member, and prints what happened
// and the delivery counts.
func (d *demo) runReplicas(ctx context.Context, bin, dir string, rate float64, hold time.Duration) error {
	fmt.Println("nearchat cluster demo: 3 etcd members, 3 Central replicas (one leads, two relay to it and stand by), 4 chat servers, 2 bots")
	secret := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	r, err := cluster.StartReplicas(ctx, cluster.ReplicaOptions{Bin: bin, Dir: dir, Secret: secret,
		CentralArgs: []string{"-scan", "1s", "-heartbeat", "500ms", "-offline-after", "3s", "-min-dwell", "2s", "-min-gain", "10ms"}})
	if err != nil {
		return err
	}
	defer r.Close()
	d.say("etcd members up on %s", strings.Join(r.EtcdAddrs, ", "))
	lead := r.Leader(ctx)
	d.say("central%d leads (REST %s); the other two relay their clients to it and wait in etcd's election", lead, r.REST[lead])

	rest, control := r.Addrs()
	c, err := cluster.Start(ctx, cluster.Options{Bin: bin, Dir: dir, Secret: secret,
		REST: rest, Control: control})
	if err != nil {
		return err
	}
	d.c = c
	for _, s := range servers {
		if _, err := c.AddServer(ctx, cluster.ServerOptions{ID: s.id, Args: []string{"-heartbeat", "500ms"}}); err != nil {
			return err
		}
	}
	d.say("chat servers serv1..serv4 registered, each given all three Central addresses")
	common := []string{"-emulate-rtt", emulation(), "-quiet", "-probe-every", "1s", "-rate", fmt.Sprint(rate)}
	// Each bot tries a follower first, so its control connection is
	// relayed to the leader.
	bobREST, bobControl := r.Rotated(lead + 1)
	aliceREST, aliceControl := r.Rotated(lead + 2)
	if _, err := c.StartBot(cluster.BotOptions{Name: "bob", REST: bobREST, Control: bobControl, Args: append([]string{"-accept"}, common...)}); err != nil {
		return err
	}
	if _, err := d.await(ctx, 0, "bob's measurement of every server", 30*time.Second, measured("bob", "serv1", "serv2", "serv3", "serv4")); err != nil {
		return err
	}
	if _, err := c.StartBot(cluster.BotOptions{Name: "alice", REST: aliceREST, Control: aliceControl, Args: append([]string{"-peer", "bob"}, common...)}); err != nil {
		return err
	}
	joined, err := d.await(ctx, 0, "the room assignment", 45*time.Second, cluster.Is("joined"))
	if err != nil {
		return err
	}
	d.say("chat started on %s (worst member RTT %.1f ms)", joined.Str("server"), joined.Num("rtt_ms"))
	if err := d.pause(ctx, hold); err != nil {
		return err
	}

	// SIGKILL the leader Central.
	from := c.Events.Len()
	killAt := time.Now()
	if err := r.Centrals[lead].Kill(); err != nil {
		return err
	}
	d.say("central%d (the leader) killed with SIGKILL", lead)
	next, err := r.AwaitLeader(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	d.say("central%d leads, %.0f ms after the kill (lease TTL 2 s)", next, float64(time.Since(killAt).Milliseconds()))
	for _, name := range []string{"alice", "bob"} {
		ev, err := d.await(ctx, from, name+"'s control connection to the new leader", 30*time.Second, func(e cluster.Event) bool {
			return e.Bot == name && cluster.Is("control", "up", "true")(e)
		})
		if err != nil {
			return err
		}
		d.say("%s reconnected to Central, %.0f ms after the kill", ev.Bot, float64(ev.At.Sub(killAt).Milliseconds()))
	}
	if err := d.pause(ctx, hold); err != nil {
		return err
	}

	// SIGKILL a follower that relays a bot's control connection (the bots
	// say where they connected): the bot reconnects through another
	// replica.
	fol, held := -1, ""
	now := r.Leader(ctx)
	on := map[string]string{} // bot -> the control address it last connected to
	for _, e := range c.Events.All() {
		if cluster.Is("control", "up", "true")(e) {
			on[e.Bot] = e.Str("central")
		}
	}
	for _, name := range []string{"alice", "bob"} {
		for i, addr := range r.Control {
			if fol < 0 && i != now && r.Centrals[i].Running() && on[name] == addr {
				fol, held = i, name
			}
		}
	}
	if fol < 0 {
		d.say("no follower relays a bot now (both reached the leader directly); not killing one")
	} else {
		from, killAt = c.Events.Len(), time.Now()
		if err := r.Centrals[fol].Kill(); err != nil {
			return err
		}
		d.say("central%d (a follower, relaying %s) killed with SIGKILL", fol, held)
		ev, err := d.await(ctx, from, held+"'s control connection through another replica", 30*time.Second, func(e cluster.Event) bool {
			return e.Bot == held && cluster.Is("control", "up", "true")(e)
		})
		if err != nil {
			return err
		}
		d.say("%s reconnected to Central, %.0f ms after the kill", held, float64(ev.At.Sub(killAt).Milliseconds()))
		if err := d.pause(ctx, hold); err != nil {
			return err
		}
	}

	// SIGKILL an etcd member: two of three keep quorum.
	victim := (next + 1) % len(r.Etcd)
	if err := r.Etcd[victim].Kill(); err != nil {
		return err
	}
	d.say("etcd%d killed with SIGKILL; the other two keep quorum", victim)
	if err := d.pause(ctx, hold); err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rooms, err := c.API.Rooms(hctx, secret)
	cancel()
	if err != nil {
		return fmt.Errorf("the leader after the etcd member's loss: %w", err)
	}
	d.say("the leader still answers: %d room(s)", len(rooms))

	return d.finish(ctx)
}
