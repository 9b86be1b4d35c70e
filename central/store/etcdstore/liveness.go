package etcdstore

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"nearchat/central/store"
)

// Chat-server liveness (store.Liveness): every server heard from has a key
// prefix+"alive/"+id attached to a lease of its own, whose TTL is the
// silence after which Central calls a server down (OfflineAfter). The
// leader refreshes the lease when the server heartbeats, so the lease
// lapses, and etcd deletes the key, once the server has been silent for
// the TTL, whoever led meanwhile or whether anyone did. A new leader reads
// the keys (and how long each lease has left) when it wins, and so knows
// how long ago each server was last heard of, rather than giving every
// server a fresh window.
//
// Traffic: a refresh is a lease keep-alive, which etcd answers without a
// raft write or a disk sync; at most one per server per refreshSpacing
// (a few per TTL), and only for servers heard since the last one. Keys are
// written (with the fence) only when a lease is granted: at a server's
// first heartbeat under a leader that holds no lease for it, or after one
// lapsed. With 1,000 servers heartbeating every 3 s and an OfflineAfter of
// 15 s, that is at most 1,000/1.9 s, about 530 keep-alives a second, and
// no write.

// refreshRound is how often the refresher looks for servers heard since
// their last refresh.
const refreshRound = 250 * time.Millisecond

// refreshWorkers bounds the lease calls in flight at once.
const refreshWorkers = 16

// leaseCall bounds one lease call (a grant, a keep-alive, a revoke).
const leaseCall = 3 * time.Second

// liveRec is one server's liveness as this Store knows it.
type liveRec struct {
	lease     clientv3.LeaseID // 0: none known
	ttl       int64            // whole seconds
	heard     bool             // heard since the last refresh
	refreshed time.Time        // last successful grant or keep-alive
	drop      bool             // forgotten: revoke the lease
	busy      bool             // a call for it is in flight
}

type liveness struct {
	mu   sync.Mutex
	recs map[string]*liveRec
	ago  map[string]time.Duration // how long ago each server was heard, as of winning
	at   time.Time                // when ago was measured
	wake chan struct{}
}

var _ store.Liveness = (*Store)(nil)

func (s *Store) liveKey(id string) string { return s.prefix + "alive/" + id }

func (l *liveness) init() {
	l.recs, l.wake = map[string]*liveRec{}, make(chan struct{}, 1)
}

// Heard records a sign of life of chat server id (its registration or a
// heartbeat): its lease, of ttl rounded up to whole seconds, is granted or
// refreshed within refreshRound. Safe for concurrent use; it does no I/O.
func (s *Store) Heard(id string, ttl time.Duration) {
	secs := max(1, int64((ttl+time.Second-1)/time.Second))
	s.live.mu.Lock()
	r := s.live.recs[id]
	if r == nil {
		r = &liveRec{}
		s.live.recs[id] = r
	}
	r.heard, r.drop, r.ttl = true, false, secs
	urgent := r.lease == 0
	s.live.mu.Unlock()
	if urgent {
		s.live.poke()
	}
}

// Forget revokes chat server id's lease (it deregistered), which deletes
// its liveness key. Safe for concurrent use; it does no I/O.
func (s *Store) Forget(id string) {
	s.live.mu.Lock()
	if r := s.live.recs[id]; r != nil {
		r.drop, r.heard = true, false
	}
	s.live.mu.Unlock()
	s.live.poke()
}

// HeardAgo reports how long ago chat server id was last heard of,
// according to its lease when this Store won the election (or opened):
// false when it has no live lease (it lapsed: no leader heard the server
// for its TTL, or none ever recorded it). The age is measured in whole
// seconds by etcd, so it may overstate by up to a second, and a refresh
// is at most refreshSpacing behind the last heartbeat.
func (s *Store) HeardAgo(id string) (time.Duration, bool) {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	d, ok := s.live.ago[id]
	if ok {
		d += time.Since(s.live.at)
	}
	return d, ok
}

func (l *liveness) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// refreshSpacing is the least time between two refreshes of one lease of
// ttl seconds: an eighth of it, so that a live server's lease always has
// most of its TTL left.
func refreshSpacing(ttl int64) time.Duration {
	return time.Duration(ttl) * time.Second / 8
}

// applyAlive notes a liveness key seen in a load or a watch: the lease it
// is attached to (0 for a delete: the lease lapsed or was revoked).
func (s *Store) applyAlive(id string, lease int64) {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	if lease == 0 {
		delete(s.live.recs, id)
		return
	}
	s.live.recs[id] = &liveRec{lease: clientv3.LeaseID(lease)}
}

// measureAges asks etcd how much each known lease has left, so that
// HeardAgo can say how long ago its server was last heard of: a server
// is heard of when its lease is refreshed to its full TTL. A lease that
// has run out is forgotten (its key is going).
func (s *Store) measureAges(ctx context.Context) error {
	s.live.mu.Lock()
	leases := make(map[string]clientv3.LeaseID, len(s.live.recs))
	for id, r := range s.live.recs {
		leases[id] = r.lease
	}
	s.live.mu.Unlock()
	ago := make(map[string]time.Duration, len(leases))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(refreshWorkers)
	for id, lease := range leases {
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(gctx, leaseCall)
			resp, err := s.cli.TimeToLive(cctx, lease)
			cancel()
			if errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0) {
				return nil
			}
			if err != nil {
				return err
			}
			mu.Lock()
			ago[id] = time.Duration(resp.GrantedTTL-resp.TTL) * time.Second
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	s.live.ago, s.live.at = ago, time.Now()
	for id, r := range s.live.recs {
		if _, ok := ago[id]; !ok {
			delete(s.live.recs, id)
			continue
		}
		// Refreshed ago[id] ago, for the spacing of the next refresh.
		r.refreshed = s.live.at.Add(-ago[id])
	}
	return nil
}

// refresher grants, refreshes and revokes leases until ctx ends.
func (s *Store) refresher(ctx context.Context) {
	t := time.NewTicker(refreshRound)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.lost:
			return
		case <-t.C:
		case <-s.live.wake:
		}
		s.refreshRound(ctx)
	}
}

// refreshRound does one round of lease calls, refreshWorkers at a time.
func (s *Store) refreshRound(ctx context.Context) {
	now := time.Now()
	type job struct {
		id string
		r  *liveRec
		liveRec
	}
	var jobs []job
	s.live.mu.Lock()
	for id, r := range s.live.recs {
		due := r.drop || (r.heard && (r.lease == 0 || now.Sub(r.refreshed) >= refreshSpacing(r.ttl)))
		if r.busy || !due {
			continue
		}
		r.busy = true
		jobs = append(jobs, job{id, r, *r})
		r.heard = false
	}
	s.live.mu.Unlock()
	if len(jobs) == 0 {
		return
	}
	var g errgroup.Group
	g.SetLimit(refreshWorkers)
	for _, j := range jobs {
		g.Go(func() error {
			lease, ok, err := s.leaseCall(ctx, j.id, j.liveRec)
			s.live.mu.Lock()
			defer s.live.mu.Unlock()
			j.r.busy = false
			switch {
			case errors.Is(err, ErrNotLeader):
				s.loseLeadership()
			case j.drop:
				if s.live.recs[j.id] == j.r && j.r.drop && err == nil {
					delete(s.live.recs, j.id)
				}
			case err != nil || !ok:
				// Try again next round: etcd unreachable, or the
				// lease lapsed (lease 0: grant a new one).
				j.r.heard = true
				if !ok {
					j.r.lease = 0
				}
			default:
				j.r.lease, j.r.refreshed = lease, time.Now()
			}
			return nil
		})
	}
	g.Wait()
}

// leaseCall does what one server's liveness needs: revoke it (dropped),
// grant a lease and attach the key (none yet), or refresh it (a lease
// keeps the TTL it was granted with). ok false means the lease had lapsed.
func (s *Store) leaseCall(ctx context.Context, id string, r liveRec) (clientv3.LeaseID, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, leaseCall)
	defer cancel()
	switch {
	case r.drop:
		if r.lease == 0 {
			return 0, true, nil
		}
		_, err := s.cli.Revoke(cctx, r.lease)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			err = nil
		}
		return 0, true, err
	case r.lease != 0:
		_, err := s.cli.KeepAliveOnce(cctx, r.lease)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, false, nil
		}
		return r.lease, true, err
	}
	g, err := s.cli.Grant(cctx, r.ttl)
	if err != nil {
		return 0, true, err
	}
	resp, err := s.cli.Txn(cctx).If(s.fence...).Then(clientv3.OpPut(s.liveKey(id), "", clientv3.WithLease(g.ID))).Commit()
	if err == nil && !resp.Succeeded {
		err = ErrNotLeader
	}
	if err != nil {
		s.cli.Revoke(cctx, g.ID)
		return 0, true, err
	}
	return g.ID, true, nil
}
