package central

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/connlimit"
	"nearchat/pkg/selection"
	"nearchat/pkg/tlsconfig"
)

// Central is the registry and matchmaker. Create it with New, serve with
// Run, stop with Close. All exported methods are safe for concurrent use.
type Central struct {
	cfg Config
	log *slog.Logger
	st  store.Store
	now func() time.Time

	// mu guards everything below it: the in-memory picture (users,
	// servers, rooms and their latency matrices), control sessions,
	// pending requests and pushes. Every write to st happens under mu, so
	// st and the picture never disagree. Holders never block on I/O:
	// control frames go out with gnet's AsyncWrite.
	//
	// Lock order: mu, then the store's own lock (every st call runs under
	// mu). No other lock is held with mu; scan workers run while the
	// scanning goroutine holds mu and take no lock themselves.
	mu         sync.Mutex
	users      map[string]*user
	tokens     map[string]*user
	servers    []*serverRec
	srvByID    map[string]*serverRec
	sel        []selection.Server
	layout     uint64
	latGen     uint64
	srvGen     uint64 // latGen when the newest server slot was made
	rooms      []*room
	roomByID   map[string]*room
	reqs       map[string]*request
	reqByGroup map[string]*request
	done       map[string]store.Request // outcomes of keyed requests, for repeats
	doneQ      []string                 // done's ids, oldest first
	pushes     map[*push]struct{}
	conns      map[*conn]struct{}
	dirty      map[*user]struct{}
	denseAt    uint64 // layout at which every user's dense vector was refreshed
	rnd        *rand.Rand
	workerRnds []*rand.Rand
	online     int
	started    time.Time      // when New ran: servers get OfflineAfter to come back
	live       store.Liveness // the store's record of server liveness, if it keeps one
	flush      store.Flusher  // the store, if it writes behind (see flushed)
	tokenKey   []byte         // signs session tokens (newToken)
	checkTok   bool           // tokenKey survives restarts: placeholders need their token
	obs        *observer
	revokes    revokeLog // tickets withdrawn before they expire (revoke.go)

	kick chan struct{}

	lim       *connlimit.Limiter // descriptors held by connections, every port
	ctrlPort  *connlimit.Port
	restLn    net.Listener
	httpSrv   *http.Server
	ctrl      *control
	regLimit  sourceBuckets // registrations per source address, guarded by mu
	srvLimit  sourceBuckets // server registrations per source address, guarded by mu
	listLimit sourceBuckets // listings per source address, guarded by mu
	listAll   bucket        // listings in all, guarded by mu
	// secretFails: wrong cluster secrets per source address, guarded by mu
	secretFails sourceBuckets
	// regLog and expireLog bound the lines of registrations and of user
	// expiries (quietLog), guarded by mu
	regLog, expireLog quietLog
	checks            bucket           // ticket verifications, every report's; guarded by mu
	folded            map[string]*user // users by case-folded name, guarded by mu
	ctrlAddr          string
	ctrlFront         *tlsconfig.Front // TLS in front of the control port, if on
	ctrlLn            net.Listener     // the plaintext control port, fed to the loops
	ctrlFed           chan struct{}    // closed when feeding ctrlLn ends
	ctrlSock          string           // the loops' private socket directory, when no front owns it
	gnetDone          chan error

	ctx       context.Context // ends on Close; bounds probes
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	runOnce   sync.Once
}

// New validates cfg, loads the records already in cfg.Store, and binds the
// REST and control listeners. Nothing is served until Run.
func New(cfg Config) (*Central, error) {
	c, err := newCore(cfg)
	if err != nil {
		return nil, err
	}
	budget, _, err := connlimit.Budget()
	if err != nil {
		c.cancel()
		return nil, fmt.Errorf("central: %w", err)
	}
	if cfg.MaxConns > 0 {
		budget = min(budget, cfg.MaxConns)
	}
	c.lim = connlimit.New(budget)
	// Each port has its share: a flood of control connections that never
	// say Hello (5 s each) left no descriptor for REST, where chat servers
	// register and beat, and the other way round (abuse sweep,
	// 2026-12-03). The shares and an eviction margin add up to the
	// budget: the ports make room at their caps by evicting, but the
	// budget refuses outright, so with caps of seven eighths each, idle
	// REST connections filling the control port's headroom turned its
	// eviction into refusal (review, 2026-12-03). REST, which evicts
	// too, takes an eighth.
	restShare := max(budget/8, 1)
	share := max(budget-restShare-connlimit.EvictionMargin(budget), 1)
	c.ctrlPort = c.lim.Port(cfg.MaxConnsPerSource).Capped(share)
	ln, err := net.Listen("tcp", cfg.RESTListen)
	if err != nil {
		c.cancel()
		return nil, fmt.Errorf("central: REST listen: %w", err)
	}
	// A REST connection not serving a request (new, trickling its
	// headers, or idle between requests) gives way to a newer one at a
	// full cap, as a control connection that has not said Hello does.
	ln = c.lim.Port(cfg.MaxConnsPerSource).Capped(restShare).NewcomerListener(ln, 1)
	// Beneath TLS too: a plaintext frame is no TLS record either.
	ln = framedOff{Listener: ln, control: c.ControlAddr}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	c.restLn = ln
	c.httpSrv = &http.Server{
		Handler: c.observeREST(c.restHandler()),
		// Short timeouts: an idle or trickling connection holds a
		// descriptor from the budget every port shares.
		ReadHeaderTimeout: restHeaderTimeout,
		ReadTimeout:       restReadTimeout,
		WriteTimeout:      restWriteTimeout,
		IdleTimeout:       restIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
	connlimit.ServeNewcomers(c.httpSrv)
	if err := c.startControl(); err != nil {
		ln.Close()
		c.cancel()
		return nil, fmt.Errorf("central: control listen: %w", err)
	}
	return c, nil
}

// newCore builds Central's state from cfg and the records already in
// cfg.Store, with no listener: the socket-free core that New puts behind
// its ports, and that tests drive directly (core_test.go). Its holder calls
// c.cancel when done with it.
func newCore(cfg Config) (*Central, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("central: config: %w", err)
	}
	c := &Central{
		cfg:        cfg,
		log:        cfg.Logger,
		st:         cfg.Store,
		now:        cfg.Clock,
		users:      map[string]*user{},
		folded:     map[string]*user{},
		tokens:     map[string]*user{},
		srvByID:    map[string]*serverRec{},
		layout:     1,
		roomByID:   map[string]*room{},
		reqs:       map[string]*request{},
		reqByGroup: map[string]*request{},
		done:       map[string]store.Request{},
		pushes:     map[*push]struct{}{},
		conns:      map[*conn]struct{}{},
		dirty:      map[*user]struct{}{},
		kick:       make(chan struct{}, 1),
		gnetDone:   make(chan error, 1),
		obs:        newObserver(),
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.st == nil {
		c.st = store.NewMemory()
	}
	c.live, _ = c.st.(store.Liveness)
	c.flush, _ = c.st.(store.Flusher)
	if c.now == nil {
		c.now = time.Now
	}
	seed := rand.Uint64()
	c.rnd = rand.New(rand.NewPCG(seed, 1))
	for i := range max(1, runtime.GOMAXPROCS(0)) {
		c.workerRnds = append(c.workerRnds, rand.New(rand.NewPCG(seed, uint64(i)+2)))
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.started = c.now()
	c.revokes.id = randomID("", 8)
	if c.tokenKey = deriveTokenKey(cfg); c.tokenKey != nil {
		c.checkTok = true
	} else {
		c.tokenKey = []byte(randomID("", 32))
	}
	if err := c.load(); err != nil {
		c.cancel()
		return nil, fmt.Errorf("central: load store: %w", err)
	}
	return c, nil
}

// REST timeouts: headers must arrive within restHeaderTimeout of the
// connection (or of the previous response), a whole request within
// restReadTimeout, and a keep-alive connection idle for restIdleTimeout
// is closed. The read ends before the write's 15 s, so a body that never
// arrives in full is told so (408): with both at 15 s the answer was past
// its own deadline, and the peer saw only a close (black-box sweep,
// 2026-12-04).
const (
	restHeaderTimeout = 5 * time.Second
	restReadTimeout   = 10 * time.Second
	restWriteTimeout  = 15 * time.Second
	restIdleTimeout   = 15 * time.Second
)

// RESTAddr returns the bound REST address. Safe for concurrent use.
func (c *Central) RESTAddr() string { return c.restLn.Addr().String() }

// ControlAddr returns the bound control-port address. Safe for concurrent
// use.
func (c *Central) ControlAddr() string { return c.ctrlAddr }

// Run serves until ctx ends or Close is called, then shuts down. It returns
// nil on a clean stop. Run may be called once. Safe for concurrent use with
// Close.
func (c *Central) Run(ctx context.Context) error {
	err := errors.New("central: Run called twice")
	c.runOnce.Do(func() {
		err = c.run(ctx)
	})
	return err
}

func (c *Central) run(ctx context.Context) error {
	httpErr := make(chan error, 1)
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		err := c.httpSrv.Serve(c.restLn)
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			err = nil
		}
		httpErr <- err
	}()
	go func() {
		defer c.wg.Done()
		c.scanLoop()
	}()
	go func() {
		defer c.wg.Done()
		c.tickLoop()
	}()
	c.log.Info("central running", "rest", c.RESTAddr(), "control", c.ControlAddr())
	var err error
	select {
	case <-ctx.Done():
	case <-c.ctx.Done():
	case err = <-httpErr:
		if err != nil {
			err = fmt.Errorf("central: REST server: %w", err)
		}
	case err = <-c.gnetDone:
		c.gnetDone <- err // Close waits for it too
		if err != nil {
			err = fmt.Errorf("central: control port: %w", err)
		}
	}
	return errors.Join(err, c.Close())
}

// Close stops both listeners, tells every control connection that Central
// is shutting down, and waits for Central's goroutines. It is idempotent and
// safe for concurrent use.
func (c *Central) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		errs := []error{}
		// Shutdown lets requests in flight finish, but it also waits for
		// connections that were opened and never used (a client's spare
		// keep-alive dial); past a short grace those are cut.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := c.httpSrv.Shutdown(ctx); err != nil {
			c.httpSrv.Close()
		}
		cancel()
		c.restLn.Close()
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, c.stopControl(ctx))
		cancel()
		c.wg.Wait()
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// houseTick is the period of the housekeeping loop: fine enough that
// timeouts measured on the (possibly fake) clock are noticed promptly.
func (c *Central) houseTick() time.Duration {
	d := min(c.cfg.AwaitingEvery, c.cfg.AssignRetry, c.cfg.HeartbeatInterval) / 4
	return min(max(d, 5*time.Millisecond), 250*time.Millisecond)
}

// expireEvery is how often the tick loop looks for expired rooms and
// users: often enough against RoomTTL, rarely enough to stay cheap.
func (c *Central) expireEvery() time.Duration {
	return min(c.cfg.RoomTTL/4, 5*time.Second)
}

func (c *Central) tickLoop() {
	t := time.NewTicker(c.houseTick())
	defer t.Stop()
	var lastExpire time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		now := c.now()
		changed := c.checkLivenessLocked(now)
		c.tickRequestsLocked(now)
		c.tickPushesLocked(now)
		c.tickHelloLocked(now)
		if now.Sub(lastExpire) >= c.expireEvery() {
			lastExpire = now
			c.expireLocked(now)
		}
		c.mu.Unlock()
		c.lim.Reclaim()
		if changed {
			c.kickScan()
		}
	}
}
