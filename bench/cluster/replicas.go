package cluster

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/centralapi"
)

// ReplicaOptions describes Central replicas on their own etcd cluster.
type ReplicaOptions struct {
	// Bin holds central; Dir receives the logs and etcd's data.
	Bin, Dir string
	// Secret is the cluster secret the Centrals require.
	Secret string
	// Centrals and Etcd are how many of each to start (default 3 each).
	Centrals, Etcd int
	// LeaderTTL is the Centrals' -leader-ttl (default 2s).
	LeaderTTL time.Duration
	// CentralArgs are extra flags for every Central.
	CentralArgs []string
	// EtcdVia, when set, returns the address Central c dials for etcd
	// member m, whose own client address is addr (a fault proxy in
	// front of it); nil dials addr.
	EtcdVia func(c, m int, addr string) (string, error)
}

// Replicas is an etcd cluster and Central replicas electing a leader on it
// (bin/central -store etcd://...). Every one binds its ports; the followers
// relay to the leader.
type Replicas struct {
	Etcd     []*Proc
	Centrals []*Proc
	// EtcdAddrs are the members' client addresses; REST and Control each
	// Central's own addresses.
	EtcdAddrs, REST, Control []string
}

// StartReplicas starts the etcd members and the Centrals and waits until
// one Central leads (answers on its REST address).
func StartReplicas(ctx context.Context, o ReplicaOptions) (*Replicas, error) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, errors.New("cluster: etcd is not installed (make deps installs Debian's etcd-server as root)")
	}
	o.Centrals, o.Etcd = orDefault(o.Centrals, 3), orDefault(o.Etcd, 3)
	if o.LeaderTTL == 0 {
		o.LeaderTTL = 2 * time.Second
	}
	r := &Replicas{}
	var peers, initial []string
	for i := range o.Etcd {
		c, err1 := FreeAddr()
		p, err2 := FreeAddr()
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		r.EtcdAddrs, peers = append(r.EtcdAddrs, c), append(peers, "http://"+p)
		initial = append(initial, fmt.Sprintf("etcd%d=http://%s", i, p))
	}
	for i := range o.Etcd {
		name := fmt.Sprintf("etcd%d", i)
		p, err := startProc(filepath.Dir(etcdBin), o.Dir, name, filepath.Base(etcdBin),
			etcdtest.MemberArgs(name, filepath.Join(o.Dir, name+".data"), "http://"+r.EtcdAddrs[i], peers[i], strings.Join(initial, ",")))
		if err != nil {
			r.Close()
			return nil, err
		}
		r.Etcd = append(r.Etcd, p)
	}
	for i := range o.Centrals {
		rest, err1 := FreeAddr()
		ctl, err2 := FreeAddr()
		if err := errors.Join(err1, err2); err != nil {
			r.Close()
			return nil, err
		}
		eps := make([]string, len(r.EtcdAddrs))
		for m, addr := range r.EtcdAddrs {
			eps[m] = addr
			if o.EtcdVia != nil {
				if eps[m], err = o.EtcdVia(i, m, addr); err != nil {
					r.Close()
					return nil, err
				}
			}
		}
		r.REST, r.Control = append(r.REST, rest), append(r.Control, ctl)
		args := append([]string{"-rest", rest, "-control", ctl, "-secret", o.Secret,
			"-store", "etcd://" + strings.Join(eps, ",") + "/nearchat", "-leader-ttl", o.LeaderTTL.String()}, o.CentralArgs...)
		p, err := startProc(o.Bin, o.Dir, fmt.Sprintf("central%d", i), "central", args)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.Centrals = append(r.Centrals, p)
	}
	if _, err := r.AwaitLeader(ctx, 30*time.Second); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func startProc(bin, logDir, name, program string, args []string) (*Proc, error) {
	p, err := newProc(bin, logDir, name, program, args)
	if err != nil {
		return nil, err
	}
	return p, p.start()
}

func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// Leader returns the index of the Central that leads, -1 if none answers:
// every replica answers on its REST address (a follower relays to the
// leader), and the answer names the leader's address.
func (r *Replicas) Leader(ctx context.Context) int {
	for i, addr := range r.REST {
		if !r.Centrals[i].Running() {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		h, err := centralapi.NewClient(addr, nil).Health(hctx)
		cancel()
		if err != nil {
			continue
		}
		for j, rest := range r.REST {
			if rest == h.REST && r.Centrals[j].Running() {
				return j
			}
		}
	}
	return -1
}

// Serves reports whether Central i runs and answers on its REST address
// as itself (it leads, or still believes it does), not through a relay.
func (r *Replicas) Serves(ctx context.Context, i int) bool {
	if !r.Centrals[i].Running() {
		return false
	}
	hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	h, err := centralapi.NewClient(r.REST[i], nil).Health(hctx)
	return err == nil && h.REST == r.REST[i]
}

// Rotated returns the replicas' REST and control addresses, comma-separated,
// starting at replica i (modulo their number): give each client or chat
// server another first choice, and every replica holds some connections.
func (r *Replicas) Rotated(i int) (rest, control string) {
	n := len(r.REST)
	var rs, cs []string
	for k := range n {
		j := (i + k) % n
		rs, cs = append(rs, r.REST[j]), append(cs, r.Control[j])
	}
	return strings.Join(rs, ","), strings.Join(cs, ",")
}

// AwaitLeader waits up to timeout for a Central to lead.
func (r *Replicas) AwaitLeader(ctx context.Context, timeout time.Duration) (int, error) {
	lead := -1
	if err := WaitFor(ctx, timeout, func() bool { lead = r.Leader(ctx); return lead >= 0 }); err != nil {
		return -1, fmt.Errorf("cluster: no Central leads within %v: %w", timeout, err)
	}
	return lead, nil
}

// Addrs returns every Central's REST and control addresses, comma-separated,
// for Options.REST and Options.Control.
func (r *Replicas) Addrs() (rest, control string) {
	return strings.Join(r.REST, ","), strings.Join(r.Control, ",")
}

// Close stops every Central, then every etcd member.
func (r *Replicas) Close() {
	stopAll(r.Centrals, 3*time.Second)
	stopAll(r.Etcd, 3*time.Second)
}
