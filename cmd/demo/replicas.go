package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"nearchat/bench/cluster"
	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/centralapi"
)

// replicaSet is what the -replicas demo starts besides the cluster: etcd
// members and Central replicas, as plain child processes.
type replicaSet struct {
	dir      string
	etcd     []*exec.Cmd
	centrals []*exec.Cmd
	rest     []string // each replica's REST address
}

func (r *replicaSet) spawn(name, prog string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(filepath.Join(r.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, cmd.Start()
}

func (r *replicaSet) close() {
	for _, cmd := range append(append([]*exec.Cmd{}, r.centrals...), r.etcd...) {
		if cmd != nil && cmd.Process != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
}

// leader returns the index of the replica whose REST API answers (a
// standby binds no port), -1 if none does.
func (r *replicaSet) leader(ctx context.Context) int {
	for i, addr := range r.rest {
		if r.centrals[i] == nil {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := centralapi.NewClient(addr, nil).Health(hctx)
		cancel()
		if err == nil {
			return i
		}
	}
	return -1
}

// runReplicas starts three etcd members and three Centrals on them, four
// chat servers and two bots given every Central's address, then SIGKILLs
// the leader Central and later an etcd member, and prints what happened
// and the delivery counts.
func (d *demo) runReplicas(ctx context.Context, bin, dir string, rate float64, hold time.Duration) error {
	fmt.Println("nearchat cluster demo: 3 etcd members, 3 Central replicas (one leads, two wait), 4 chat servers, 2 bots")
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return errors.New("etcd is not installed: make deps installs Debian's etcd-server (as root)")
	}
	r := &replicaSet{dir: dir}
	defer r.close()
	var clients, peers, initial []string
	for i := range 3 {
		c, err1 := cluster.FreeAddr()
		p, err2 := cluster.FreeAddr()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		clients, peers = append(clients, c), append(peers, "http://"+p)
		initial = append(initial, fmt.Sprintf("etcd%d=http://%s", i, p))
	}
	for i := range 3 {
		name := fmt.Sprintf("etcd%d", i)
		cmd, err := r.spawn(name, etcdBin, etcdtest.MemberArgs(name, filepath.Join(dir, name+".data"), "http://"+clients[i], peers[i], strings.Join(initial, ","))...)
		if err != nil {
			return err
		}
		r.etcd = append(r.etcd, cmd)
	}
	d.say("etcd members up on %s", strings.Join(clients, ", "))

	secret := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	var controls []string
	for i := range 3 {
		rest, err1 := cluster.FreeAddr()
		ctl, err2 := cluster.FreeAddr()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		r.rest, controls = append(r.rest, rest), append(controls, ctl)
		cmd, err := r.spawn(fmt.Sprintf("central%d", i), filepath.Join(bin, "central"), "-rest", rest, "-control", ctl, "-secret", secret,
			"-store", "etcd://"+strings.Join(clients, ",")+"/demo", "-leader-ttl", "2s",
			"-scan", "1s", "-heartbeat", "500ms", "-offline-after", "3s", "-min-dwell", "2s", "-min-gain", "10ms")
		if err != nil {
			return err
		}
		r.centrals = append(r.centrals, cmd)
	}
	lead := -1
	if err := cluster.WaitFor(ctx, 30*time.Second, func() bool { lead = r.leader(ctx); return lead >= 0 }); err != nil {
		return fmt.Errorf("no Central leads: %w (logs in %s)", err, dir)
	}
	d.say("central%d leads (REST %s); the other two wait in etcd's election", lead, r.rest[lead])

	c, err := cluster.Start(ctx, cluster.Options{Bin: bin, Dir: dir, Secret: secret,
		REST: strings.Join(r.rest, ","), Control: strings.Join(controls, ",")})
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
	if _, err := c.StartBot(cluster.BotOptions{Name: "bob", Args: append([]string{"-accept"}, common...)}); err != nil {
		return err
	}
	if _, err := d.await(ctx, 0, "bob's measurement of every server", 30*time.Second, measured("bob", "serv1", "serv2", "serv3", "serv4")); err != nil {
		return err
	}
	if _, err := c.StartBot(cluster.BotOptions{Name: "alice", Args: append([]string{"-peer", "bob"}, common...)}); err != nil {
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
	r.centrals[lead].Process.Kill()
	r.centrals[lead].Wait()
	r.centrals[lead] = nil
	d.say("central%d (the leader) killed with SIGKILL", lead)
	next := -1
	if err := cluster.WaitFor(ctx, 30*time.Second, func() bool { next = r.leader(ctx); return next >= 0 }); err != nil {
		return fmt.Errorf("no standby took over: %w", err)
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

	// SIGKILL an etcd member: two of three keep quorum.
	victim := (next + 1) % len(r.etcd)
	r.etcd[victim].Process.Kill()
	r.etcd[victim].Wait()
	r.etcd[victim] = nil
	d.say("etcd%d killed with SIGKILL; the other two keep quorum", victim)
	if err := d.pause(ctx, hold); err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rooms, err := c.API.Rooms(hctx)
	cancel()
	if err != nil {
		return fmt.Errorf("the leader after the etcd member's loss: %w", err)
	}
	d.say("the leader still answers: %d room(s)", len(rooms))

	return d.finish(ctx)
}
