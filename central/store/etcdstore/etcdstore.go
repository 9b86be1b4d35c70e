// Package etcdstore keeps Central's records (users, chat servers, rooms,
// the outcomes of keyed chat requests, leaves and room removals) in etcd,
// so that a Central that dies or restarts, on this machine or another,
// finds them again.
//
// A Store is a write-behind cache: every record also lives in a
// store.Memory, which serves all reads, and every Put or Delete is applied
// there at once and queued for etcd. A single writer goroutine sends the
// queue in batched transactions (the last write to a key wins, so a busy
// record costs one etcd write per batch, not one per change). Central writes
// its records while holding its lock, so an etcd round trip there would
// stall matchmaking; the price is that a Central killed outright loses the
// writes of its last batch (milliseconds), which the chat servers'
// heartbeats give back (Central adopts the rooms they report).
//
// Open loads everything under the prefix into the cache. A failed batch is
// kept and retried, with backoff, until it succeeds or the Store is closed;
// Close flushes what it can within its context. Flush waits for every write
// queued before it.
//
// One Store writes a prefix at a time. OpenLeader enforces it: it waits to
// win an etcd election (concurrency.Election on prefix+"leader", held by a
// lease that lives TTL past the process's last keep-alive), meanwhile
// keeping its cache current from a watch (a hot standby: winning costs no
// load), and fences every write on still holding the leadership, so a
// deposed leader (killed, partitioned from etcd, paused) cannot overwrite
// its successor's records: its Lost channel closes instead and it must
// stop serving. Several Centrals started with OpenLeader on one prefix are
// so one leader and hot standbys. WatchLeader tells the standbys (who
// relay their clients to the leader) where the leader is.
//
// A Store is also a store.Liveness: one lease per chat server, refreshed
// when Central hears the server, so that a new leader knows how long ago
// each server was last heard of (liveness.go).
package etcdstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"go.etcd.io/etcd/client/v3/concurrency"

	"nearchat/central/store"
)

// ErrNotLeader is the write error of a leader's Store that lost the
// leadership.
var ErrNotLeader = errors.New("etcdstore: no longer the leader")

// DefaultPrefix is where the records live when the URL names no path.
const DefaultPrefix = "/nearchat/"

// maxOps is the most operations one transaction carries (etcd's default
// --max-txn-ops is 128).
const maxOps = 128

// Store is a store.Store backed by etcd. Create it with Open.
type Store struct {
	*store.Memory
	cli    *clientv3.Client
	prefix string

	mu      sync.Mutex
	pending map[string]*string // key -> value to put; nil: delete
	queued  uint64             // writes queued so far
	written uint64             // writes etcd has (queued count at the last good batch)
	lastErr error
	changed chan struct{} // closed and replaced when written or lastErr changes
	wake    chan struct{}

	stop context.CancelFunc
	done chan struct{}

	// Set by OpenLeader: the session whose lease holds the leadership,
	// the election, and the fence every transaction carries.
	sess     *concurrency.Session
	elec     *concurrency.Election
	fence    []clientv3.Cmp
	lost     chan struct{} // closed once the leadership is gone
	lostOnce sync.Once

	live       liveness      // chat-server leases (liveness.go)
	refreshing chan struct{} // closed when the lease refresher stops

	stopCompact context.CancelFunc // set by KeepCompacted
	compacting  chan struct{}      // closed when the compactor stops
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Flusher = (*Store)(nil)
)

// ParseURL splits "etcd://host:2379,host2:2379/prefix" into endpoints and a
// key prefix (DefaultPrefix when the URL has no path). The scheme etcds://
// names endpoints served over TLS (https://): open them WithTLS.
func ParseURL(s string) (endpoints []string, prefix string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, "", fmt.Errorf("etcdstore: %w", err)
	}
	scheme := map[string]string{"etcd": "http://", "etcds": "https://"}[u.Scheme]
	if scheme == "" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, "", fmt.Errorf("etcdstore: %q: want etcd://host:port[,host:port...][/prefix], or etcds:// for TLS", s)
	}
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			return nil, "", fmt.Errorf("etcdstore: %q: empty endpoint", s)
		}
		endpoints = append(endpoints, scheme+h)
	}
	prefix = DefaultPrefix
	if p := strings.Trim(u.Path, "/"); p != "" {
		prefix = "/" + p + "/"
	}
	return endpoints, prefix, nil
}

// Option changes how a Store or WatchLeader reaches etcd.
type Option func(*clientv3.Config)

// WithTLS reaches etcd over TLS with tc: the CA etcd's certificate must
// chain to, and the client certificate to present where etcd asks for one
// (--client-cert-auth). The endpoints must be https:// (ParseURL's
// etcds://).
func WithTLS(tc *tls.Config) Option {
	return func(c *clientv3.Config) { c.TLS = tc }
}

func dial(endpoints []string, opts []Option) (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	for _, e := range endpoints {
		if strings.HasPrefix(e, "https://") != (cfg.TLS != nil) {
			// clientv3 would dial https:// in plaintext without a TLS
			// config, and send plaintext to http:// with one.
			return nil, fmt.Errorf("etcdstore: endpoint %s needs TLS settings exactly when it is https://", e)
		}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: %w", err)
	}
	return cli, nil
}

// Open connects to etcd at endpoints and loads every record under prefix.
// ctx bounds the connection and the load. The Store does not take part in
// an election: use it only where nothing else writes the prefix.
func Open(ctx context.Context, endpoints []string, prefix string, opts ...Option) (*Store, error) {
	s, err := newStore(endpoints, prefix, opts)
	if err != nil {
		return nil, err
	}
	return s, s.start(ctx)
}

// OpenLeader connects to etcd at endpoints, loads every record under
// prefix, and waits until this process leads prefix (ctx bounds the wait),
// following every change the leader makes meanwhile (a watch from the
// load's revision), so that it returns as soon as it wins, with the
// records complete up to its election, and loads nothing then. name is
// what the election records for the leader (for operators); ttl (a whole
// number of seconds, at least one) is how long the leadership outlives a
// leader that stopped renewing it. Close resigns.
func OpenLeader(ctx context.Context, endpoints []string, prefix, name string, ttl time.Duration, opts ...Option) (*Store, error) {
	s, err := newStore(endpoints, prefix, opts)
	if err != nil {
		return nil, err
	}
	// A hot standby: load now and follow every change while campaigning,
	// so that winning costs no load (seconds for 100,000 records). The
	// session (its lease) starts after the load, which it need not
	// outlive.
	rev, err := s.load(ctx)
	if err != nil {
		s.cli.Close()
		return nil, err
	}
	fail := func(err error) (*Store, error) {
		if s.sess != nil {
			s.sess.Close()
		}
		s.cli.Close()
		return nil, err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	applied := make(chan int64, 1) // the newest revision applied, when it rises
	watchErr := make(chan error, 1)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		s.follow(wctx, rev, applied, watchErr)
	}()
	defer func() { stopWatch(); <-followed }()

	if err := s.campaign(ctx, prefix, name, ttl); err != nil {
		return fail(err)
	}
	// Every write of an earlier leader precedes the creation of our
	// election key (its key was gone by then): once the watch has
	// applied that revision, the cache is complete.
	if err := s.catchUp(ctx, s.elec.Rev(), applied, watchErr); err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("etcdstore: catching up: %w", err))
		}
		// The watch broke (compacted past rev, say) and returned: load
		// afresh.
		s.Memory = store.NewMemory()
		s.live.mu.Lock()
		s.live.recs = map[string]*liveRec{}
		s.live.mu.Unlock()
		if _, err := s.load(ctx); err != nil {
			return fail(err)
		}
	}
	if err := s.measureAges(ctx); err != nil {
		return fail(err)
	}
	s.fence = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.elec.Key()), "=", s.elec.Rev())}
	go func() {
		select {
		case <-s.sess.Done():
			s.loseLeadership()
		case <-s.lost:
		}
	}()
	s.startWriter()
	return s, nil
}

// campaign waits until this process leads prefix on a live session of its
// own (s.sess, s.elec). Campaign alone is not enough: it returns once
// every older candidate's key is gone, and when etcd comes back from a
// quorum loss longer than the TTL, every lease expires at once, ours with
// the leader's, so it can return with our own key gone too (rel7 sweep,
// 2026-12-03: standbys logged that they led, dropped their relays and
// built a Central before Proclaim failed). Such a win is dropped and the
// campaign starts again on a new session.
func (s *Store) campaign(ctx context.Context, prefix, name string, ttl time.Duration) error {
	for {
		sess, err := newSession(ctx, s.cli, max(1, int(ttl.Round(time.Second)/time.Second)))
		if err != nil {
			return fmt.Errorf("etcdstore: session: %w", err)
		}
		s.sess, s.elec = sess, concurrency.NewElection(sess, prefix+"leader")
		// Campaign returns when ctx ends, but only after resigning on the
		// client's own context, which waits for etcd however long it is
		// gone: wait for ctx alone (the client's Close, when OpenLeader
		// fails, ends the resignation).
		elec := s.elec
		if err := untilDone(ctx, func() error { return elec.Campaign(ctx, name) }); err != nil {
			return fmt.Errorf("etcdstore: campaign: %w", err)
		}
		held, err := s.holdsElection(ctx)
		if err != nil {
			return fmt.Errorf("etcdstore: campaign: %w", err)
		}
		if held {
			return nil
		}
		sess.Orphan() // its lease is gone: nothing to revoke
		s.sess = nil
	}
}

// newSession starts a session (a lease of ttl seconds, kept alive until
// the session is closed) and gives up when ctx ends. concurrency's own
// NewSession grants the lease on the context its session lives by, so
// with ctx it would end with ctx (which bounds only the wait), and
// without it, it blocked while etcd was unreachable, however ctx ended: a
// replica then ignored SIGTERM for the whole outage (abuse sweep 7). A
// session made after ctx ended is closed; the grant itself ends when
// etcd answers or the client is closed.
func newSession(ctx context.Context, cli *clientv3.Client, ttl int) (*concurrency.Session, error) {
	made := make(chan *concurrency.Session, 1)
	err := untilDone(ctx, func() error {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
		made <- sess
		return err
	})
	if err != nil && ctx.Err() != nil {
		go func() {
			if sess := <-made; sess != nil {
				sess.Close()
			}
		}()
		return nil, err
	}
	return <-made, err
}

// untilDone runs f and returns its error, or ctx's as soon as ctx ends,
// f then going on alone: for etcd calls that ignore ctx, or wait on the
// client's own context after it ended.
func untilDone(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// holdsElection reports whether s.sess is alive and its election key is
// still the one it created.
func (s *Store) holdsElection(ctx context.Context) (bool, error) {
	select {
	case <-s.sess.Done():
		return false, nil
	default:
	}
	resp, err := s.cli.Get(ctx, s.elec.Key())
	if err != nil {
		return false, err
	}
	return len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == s.elec.Rev(), nil
}

// follow applies every change under the prefix after revision rev to the
// cache until ctx ends, reporting the newest revision applied on applied
// and a broken watch (compacted past rev, say) on werr.
func (s *Store) follow(ctx context.Context, rev int64, applied chan int64, werr chan error) {
	for resp := range s.cli.Watch(clientv3.WithRequireLeader(ctx), s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			werr <- err
			return
		}
		for _, ev := range resp.Events {
			var err error
			if ev.Type == clientv3.EventTypeDelete {
				err = s.forget(string(ev.Kv.Key))
			} else {
				err = s.apply(ev.Kv.Key, ev.Kv.Value, ev.Kv.Lease)
			}
			if err != nil {
				werr <- err
				return
			}
			rev = ev.Kv.ModRevision
		}
		select {
		case <-applied:
		default:
		}
		applied <- rev
	}
	if ctx.Err() == nil {
		werr <- errors.New("etcdstore: watch closed")
	}
}

// catchUp waits until follow has applied revision rev, or failed.
func (s *Store) catchUp(ctx context.Context, rev int64, applied chan int64, werr chan error) error {
	for {
		select {
		case got := <-applied:
			if got >= rev {
				return nil
			}
		case err := <-werr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func newStore(endpoints []string, prefix string, opts []Option) (*Store, error) {
	cli, err := dial(endpoints, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{Memory: store.NewMemory(), cli: cli, prefix: prefix,
		pending: map[string]*string{}, changed: make(chan struct{}), wake: make(chan struct{}, 1),
		done: make(chan struct{}), lost: make(chan struct{})}
	s.live.init()
	return s, nil
}

func (s *Store) start(ctx context.Context) error {
	if _, err := s.load(ctx); err != nil {
		s.closeClient()
		return err
	}
	if err := s.measureAges(ctx); err != nil {
		s.closeClient()
		return err
	}
	s.startWriter()
	return nil
}

func (s *Store) startWriter() {
	var wctx context.Context
	wctx, s.stop = context.WithCancel(context.Background())
	s.refreshing = make(chan struct{})
	go s.writer(wctx)
	go func() {
		defer close(s.refreshing)
		s.refresher(wctx)
	}()
}

func (s *Store) closeClient() error {
	s.lostOnce.Do(func() { close(s.lost) })
	var err error
	if s.sess != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.elec.Resign(ctx) // a successor need not wait out the lease
		cancel()
		err = s.sess.Close()
	}
	return errors.Join(err, s.cli.Close())
}

// Lost is closed when a Store from OpenLeader is no longer the leader (its
// lease expired or a write found another leader), and when the Store
// closes; a Store from Open never loses leadership until Close.
func (s *Store) Lost() <-chan struct{} { return s.lost }

func (s *Store) loseLeadership() {
	s.lostOnce.Do(func() { close(s.lost) })
}

// Leader returns the name of the current leader of prefix, "" if none.
func (s *Store) Leader(ctx context.Context) (string, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"leader", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}

// WatchLeader reports, on a client of its own, the value the leader of
// prefix campaigned with ("" while there is none) at once and whenever it
// changes, until ctx ends; then the channel closes. Only the latest value
// waits in the channel. While etcd cannot be reached the last value stands.
// A follower Central uses it to know where to relay its clients.
func WatchLeader(ctx context.Context, endpoints []string, prefix string, opts ...Option) (<-chan string, error) {
	cli, err := dial(endpoints, opts)
	if err != nil {
		return nil, err
	}
	out := make(chan string, 1)
	go func() {
		defer close(out)
		defer cli.Close()
		last := "\x00" // no value yet
		for ctx.Err() == nil {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := cli.Get(gctx, prefix+"leader", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
			cancel()
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			v := ""
			if len(resp.Kvs) > 0 {
				v = string(resp.Kvs[0].Value)
			}
			if v != last {
				last = v
				select {
				case <-out:
				default:
				}
				out <- v
			}
			// Any change to the candidates (a leader resigns or its
			// lease ends, a standby campaigns) sends us back to Get.
			wctx, cancel := context.WithCancel(ctx)
			<-cli.Watch(clientv3.WithRequireLeader(wctx), prefix+"leader", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			cancel()
		}
	}()
	return out, nil
}

// Proclaim replaces the value a leading Store campaigned with (what
// Leader and WatchLeader report), keeping the leadership. A Central
// campaigns without its addresses and proclaims them once it serves, so a
// follower never relays to a port the new leader has not bound yet.
func (s *Store) Proclaim(ctx context.Context, value string) error {
	if s.elec == nil {
		return errors.New("etcdstore: Proclaim needs a Store from OpenLeader")
	}
	if err := s.elec.Proclaim(ctx, value); err != nil {
		return fmt.Errorf("etcdstore: proclaim: %w", err)
	}
	return nil
}

// loadPage is how many keys one read of load fetches: a prefix of
// hundreds of thousands of records read at once is a response of tens of
// megabytes that etcd builds in memory while it serves the leader.
const loadPage = 2000

// load reads every record under the prefix into the cache, page by page
// at one revision, and returns that revision.
func (s *Store) load(ctx context.Context) (int64, error) {
	key, end := s.prefix, clientv3.GetPrefixRangeEnd(s.prefix)
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(loadPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("etcdstore: load %s: %w", s.prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := s.apply(kv.Key, kv.Value, kv.Lease); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// apply puts the record stored at key, attached to lease, into the cache;
// keys that hold no record of ours (the election's) are skipped.
func (s *Store) apply(key, value []byte, lease int64) error {
	kind, id, _ := strings.Cut(strings.TrimPrefix(string(key), s.prefix), "/")
	var err error
	switch kind {
	case "alive":
		s.applyAlive(id, lease)
	case "users":
		var u store.User
		if err = json.Unmarshal(value, &u); err == nil {
			err = s.Memory.PutUser(u)
		}
	case "servers":
		var v store.Server
		if err = json.Unmarshal(value, &v); err == nil {
			err = s.Memory.PutServer(v)
		}
	case "rooms":
		var r store.Room
		if err = json.Unmarshal(value, &r); err == nil {
			err = s.Memory.PutRoom(r)
		}
	case "requests":
		var q store.Request
		if err = json.Unmarshal(value, &q); err == nil {
			err = s.Memory.PutRequest(q)
		}
	case "revocations":
		var r store.Revocation
		if err = json.Unmarshal(value, &r); err == nil {
			err = s.Memory.PutRevocation(r)
		}
	}
	if err != nil {
		return fmt.Errorf("etcdstore: load %s: %w", key, err)
	}
	return nil
}

// forget removes the record that was stored at key from the cache.
func (s *Store) forget(key string) error {
	kind, id, _ := strings.Cut(strings.TrimPrefix(key, s.prefix), "/")
	var err error
	switch kind {
	case "alive":
		s.applyAlive(id, 0)
	case "users":
		err = s.Memory.DeleteUser(id)
	case "servers":
		err = s.Memory.DeleteServer(id)
	case "rooms":
		err = s.Memory.DeleteRoom(id)
	case "requests":
		err = s.Memory.DeleteRequest(id)
	case "revocations":
		err = s.Memory.DeleteRevocation(id)
	}
	if errors.Is(err, store.ErrNotFound) {
		err = nil
	}
	return err
}

func (s *Store) key(kind, id string) string { return s.prefix + kind + "/" + id }

func (s *Store) queue(key string, v any) error {
	var val *string
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("etcdstore: %s: %w", key, err)
		}
		str := string(b)
		val = &str
	}
	s.mu.Lock()
	s.pending[key] = val
	s.queued++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// PutUser is safe for concurrent use.
func (s *Store) PutUser(u store.User) error {
	s.Memory.PutUser(u)
	return s.queue(s.key("users", u.Name), u)
}

// DeleteUser is safe for concurrent use.
func (s *Store) DeleteUser(name string) error {
	if err := s.Memory.DeleteUser(name); err != nil {
		return err
	}
	return s.queue(s.key("users", name), nil)
}

// PutServer is safe for concurrent use.
func (s *Store) PutServer(v store.Server) error {
	s.Memory.PutServer(v)
	return s.queue(s.key("servers", v.ID), v)
}

// DeleteServer is safe for concurrent use.
func (s *Store) DeleteServer(id string) error {
	if err := s.Memory.DeleteServer(id); err != nil {
		return err
	}
	return s.queue(s.key("servers", id), nil)
}

// PutRoom is safe for concurrent use.
func (s *Store) PutRoom(r store.Room) error {
	s.Memory.PutRoom(r)
	return s.queue(s.key("rooms", r.ID), r)
}

// DeleteRoom is safe for concurrent use.
func (s *Store) DeleteRoom(id string) error {
	if err := s.Memory.DeleteRoom(id); err != nil {
		return err
	}
	return s.queue(s.key("rooms", id), nil)
}

// PutRequest is safe for concurrent use.
func (s *Store) PutRequest(q store.Request) error {
	s.Memory.PutRequest(q)
	return s.queue(s.key("requests", q.ID), q)
}

// DeleteRequest is safe for concurrent use.
func (s *Store) DeleteRequest(id string) error {
	if err := s.Memory.DeleteRequest(id); err != nil {
		return err
	}
	return s.queue(s.key("requests", id), nil)
}

// PutRevocation is safe for concurrent use.
func (s *Store) PutRevocation(r store.Revocation) error {
	s.Memory.PutRevocation(r)
	return s.queue(s.key("revocations", r.ID()), r)
}

// DeleteRevocation is safe for concurrent use.
func (s *Store) DeleteRevocation(id string) error {
	if err := s.Memory.DeleteRevocation(id); err != nil {
		return err
	}
	return s.queue(s.key("revocations", id), nil)
}

// writer sends the queue to etcd until ctx ends, then once more.
func (s *Store) writer(ctx context.Context) {
	defer close(s.done)
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		}
		for {
			err := s.writeBatch(ctx)
			if errors.Is(err, ErrNotLeader) {
				s.loseLeadership()
				return
			}
			if err == nil {
				backoff = 10 * time.Millisecond
				break
			}
			if ctx.Err() != nil {
				return
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}

// writeBatch writes everything pending. On failure the keys not written
// since go back into the queue.
func (s *Store) writeBatch(ctx context.Context) error {
	s.mu.Lock()
	batch, upTo := s.pending, s.queued
	s.pending = map[string]*string{}
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	ops := make([]clientv3.Op, 0, min(len(batch), maxOps))
	var err error
	send := func() {
		if err == nil && len(ops) > 0 {
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var resp *clientv3.TxnResponse
			resp, err = s.cli.Txn(tctx).If(s.fence...).Then(ops...).Commit()
			cancel()
			if err == nil && !resp.Succeeded {
				err = ErrNotLeader
			}
		}
		ops = ops[:0]
	}
	for _, k := range s.writeOrder(batch) {
		if v := batch[k]; v == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, *v))
		}
		if len(ops) == maxOps {
			send()
		}
	}
	send()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		for k, v := range batch {
			if _, newer := s.pending[k]; !newer {
				s.pending[k] = v
			}
		}
	} else {
		s.written = upTo
	}
	s.lastErr = err
	close(s.changed)
	s.changed = make(chan struct{})
	return err
}

// writeOrder lists batch's keys in the order they are written: leaves and
// room removals first. A batch of more than maxOps keys takes several
// transactions, and a leader that died between them left, in map order,
// a room's removal (or a member's) in etcd without the revocation queued
// before it, which is what lets a successor bring the room or the member
// back (fuzz sweep 3, from reading).
func (s *Store) writeOrder(batch map[string]*string) []string {
	keys := make([]string, 0, len(batch))
	first := s.prefix + "revocations/"
	for k := range batch {
		if strings.HasPrefix(k, first) {
			keys = append(keys, k)
		}
	}
	for k := range batch {
		if !strings.HasPrefix(k, first) {
			keys = append(keys, k)
		}
	}
	return keys
}

// Flush waits until every write queued before it is in etcd, or ctx ends
// (then it returns the last write error, if any, with ctx's).
func (s *Store) Flush(ctx context.Context) error {
	s.mu.Lock()
	want := s.queued
	s.mu.Unlock()
	for {
		s.mu.Lock()
		written, lastErr, changed := s.written, s.lastErr, s.changed
		s.mu.Unlock()
		if written >= want {
			return nil
		}
		select {
		case <-changed:
		case <-s.lost:
			return ErrNotLeader
		case <-ctx.Done():
			return errors.Join(ctx.Err(), lastErr)
		}
	}
}

// Pending returns how many keys wait to be written.
func (s *Store) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Close flushes within ctx, stops the writer, resigns a leadership and
// closes the etcd client. Writes still pending when ctx ends are lost (the
// cache had them).
func (s *Store) Close(ctx context.Context) error {
	var err error
	select {
	case <-s.lost:
		err = ErrNotLeader
	default:
		err = s.Flush(ctx)
	}
	s.stop()
	<-s.done
	<-s.refreshing
	if s.stopCompact != nil {
		s.stopCompact()
		<-s.compacting
	}
	return errors.Join(err, s.closeClient())
}

// KeepCompacted compacts etcd's history every interval, up to the
// revision etcd had one interval before, while this Store leads (or, from
// Open, until Close): every write keeps the old value of its key in etcd
// until a compaction, so without one etcd grows until it reaches its quota
// and refuses all writes. A watch or read lagging less than an interval
// behind is unaffected. Compaction is cluster-wide, so an etcd shared with
// programs that read old revisions wants this off and its own
// --auto-compaction-* instead. Failures go to log, and the same revision
// is tried again an interval later. Call it at most once.
func (s *Store) KeepCompacted(every time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopCompact, s.compacting = cancel, make(chan struct{})
	go func() {
		defer close(s.compacting)
		s.compactor(ctx, every, log)
	}()
}

func (s *Store) compactor(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	var prev, done int64 // the revision one interval ago; the last compacted
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.lost:
			return
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// Any read's header carries the store's current revision.
		resp, err := s.cli.Get(tctx, s.prefix+"leader", clientv3.WithCountOnly())
		if err == nil && prev > done {
			_, err = s.cli.Compact(tctx, prev)
			if errors.Is(err, rpctypes.ErrCompacted) {
				err = nil // someone (etcd's own auto-compaction) went further
			}
		}
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("etcd compaction", "revision", prev, "err", err)
			}
			continue // the same prev next time
		}
		if prev > done {
			log.Debug("etcd compacted", "revision", prev)
			done = prev
		}
		prev = resp.Header.Revision
	}
}
