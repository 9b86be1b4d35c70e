package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/rtt"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

// Config configures a Client: the user's whole presence in nearchat.
type Config struct {
	// Central is the REST address of Central (host:port or URL); Control
	// its control port (host:port). With several Central replicas, each is
	// a comma-separated list: the client uses the address that last
	// answered and, when it cannot connect, the next ones in turn.
	Central string
	Control string
	// User is the name to register; Token, if known from an earlier
	// session, gets the same identity back.
	User  string
	Token string
	// Agent is announced in Hello ("chat/1", "bot/1").
	Agent string
	// Dialer opens every TCP connection (control, probes, chat); nil means
	// a plain net.Dialer. Tests and the demo inject delaynet here.
	Dialer rtt.Dialer
	// TLS, when set, is used on every link: REST over https, and the
	// control, probe and chat connections through a TLS handshake on top
	// of Dialer. It must trust the cluster's CA.
	TLS *tls.Config
	// Session configures each room's session; its Dialer and OnBroken are
	// set by the Client.
	Session SessionConfig
	// Probe configures the RTT prober; its Dialer is set by the Client.
	Probe rtt.Config
	// ProbeEvery is the interval between probe rounds. A round probes
	// the ProbeBest servers with the best recent figures, the servers of
	// the rooms held, any server not measured lately, and ProbeExplore of
	// the rest in turn (so a new good server is found); the vector is
	// reported to Central only when it changed meaningfully (a server
	// came or went, or a figure moved by reportDelta). While rounds find
	// nothing new and every probe answers, the interval doubles, up to
	// 4*ProbeEvery; a server that came or went, a median that moved, a
	// failed probe, a server event from Central or a room connection that
	// broke brings it back (paceBack), a spread that changed alone does
	// not.
	ProbeEvery time.Duration
	// ProbeBest is how many of the best servers every round probes; 0
	// probes every live server every round.
	ProbeBest int
	// ProbeExplore is how many of the other servers each round probes,
	// taking them in turn.
	ProbeExplore int
	// HoldingEvery is how often the client tells Central which rooms it
	// holds (also right after every connect), so any placement it missed
	// is sent again.
	HoldingEvery time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay to Central
	// (exponential, with jitter). When a connection that had settled
	// breaks, the delay starts again from BackoffMin and stays at most
	// 4*BackoffMin for failoverRetry: another replica relays at once, a
	// follower Central leads within its lease TTL, and the client should
	// find it at once.
	BackoffMin, BackoffMax time.Duration
	// OnProbe, if set, sees every probe round's results (server ID ->
	// result). It runs on the prober's goroutine and must not block.
	OnProbe func(map[string]rtt.Result)
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of the terminal client and the bot.
func DefaultConfig() Config {
	return Config{
		Central:      "127.0.0.1:8080",
		Control:      "127.0.0.1:8081",
		Agent:        "chat/1",
		Session:      DefaultSessionConfig(),
		Probe:        rtt.DefaultConfig(),
		ProbeEvery:   3 * time.Second,
		ProbeBest:    3,
		ProbeExplore: 2,
		HoldingEvery: 5 * time.Second,
		BackoffMin:   100 * time.Millisecond,
		BackoffMax:   5 * time.Second,
	}
}

// Client registers with Central, keeps one control connection to it with
// reconnects, probes the chat servers and reports its latency vector, and
// follows room assignments: opening sessions and moving them. Its methods
// are safe for concurrent use.
type Client struct {
	opts   Config
	log    *slog.Logger
	api    *centralapi.Client
	dialer rtt.Dialer
	events chan Event
	ctrlAt int // index into the control addresses of the one last connected

	mu      sync.Mutex
	token   string
	ctrl    *ctrlConn // nil while disconnected
	rooms   map[string]*roomState
	servers []centralapi.ServerInfo
	// The server list is fetched from Central (REST) for a probe round
	// only when it may be stale: Central announces every server that
	// comes, drains or goes down on the control connection (ServerEvent),
	// and noteServerLocked applies those announcements to servers. ctrlGen
	// counts the control connection's ups and downs; listGen is ctrlGen as
	// of the last fetch, listAt that fetch's start, zero when it must be
	// fetched again; evGen counts announcements applied.
	ctrlGen, listGen, evGen uint64
	listAt                  time.Time

	lastVec  map[string]centralapi.Sample // the last vector reported
	refusals uint64                       // Latency frames Central refused (latencyRefused)
	asked    map[string]asking            // requests with no final status yet, by request id
	left     map[string]*leftRoom         // rooms left lately: their Assigns are stale
	leftNote chan struct{}                // closed (and replaced) when a leave is heard or the control connection changes
	skipAddr bool                         // the next connection starts at the next control address (LeavesConfirmed)
	probeNow chan struct{}                // asks the prober for a round now
	paceNow  chan struct{}                // asks the prober to drop its stretched pace (paceBack)
	upNow    map[string]string            // servers announced up since that round: ID -> address
	follow   map[string]followed          // announced servers measured again at once (probeOnce)
	good     map[string][]goodSample      // each server's recent successful probes, oldest first
	clock    time.Time                    // samples' clock: wall time less the stretches in which every probe failed
	lastOK   bool                         // the last round measured some server
	lastAt   time.Time                    // when the last round ended
	explore  int                          // where the next round's exploration starts among the rest
	every    time.Duration                // the interval to the next regular round (see nextEveryLocked)
	often    map[string]bool              // the servers probed every round, as of the last round

	repMu    sync.Mutex    // held while a vector is made and reported
	reported chan struct{} // closed after the first latency report
	repOnce  sync.Once

	running chan struct{} // closed when Run starts; runDone is then set
	runDone <-chan struct{}
}

type goodSample struct {
	s     centralapi.Sample
	at    time.Time     // on Client.clock
	every time.Duration // the round interval when it was taken
}

type roomState struct {
	assigns   chan proto.Assign // the newest pending Assign, handled one at a time
	done      chan struct{}     // closed when the room is left or closed
	mu        sync.Mutex
	sess      *Session
	epoch     uint64
	server    string            // the server the session follows at epoch
	ticket    []byte            // the ticket of the Assign followed at epoch (Holding carries it)
	followed  []proto.Assign    // the last few Assigns followed, newest last, for their Moved events
	broken    proto.Unreachable // the last report of a broken session
	reminding bool              // a remindBroken runs
}

// keptFollowed is how many of a room's followed Assigns are kept for their
// Moved events: a move's event may be forwarded after the next Assign was
// taken up (moves in quick succession, as when servers go down one after
// another), and it must still carry its own Assign's reason.
const keptFollowed = 4

func (r *roomState) followLocked(a proto.Assign) {
	if len(r.followed) == keptFollowed {
		r.followed = append(r.followed[:0], r.followed[1:]...)
	}
	r.followed = append(r.followed, a)
}

// followedLocked returns the Assign followed to server at epoch (zero if
// none is kept).
func (r *roomState) followedLocked(epoch uint64, server string) proto.Assign {
	for i := len(r.followed) - 1; i >= 0; i-- {
		if a := r.followed[i]; a.Epoch == epoch && a.Server.ID == server {
			return a
		}
	}
	return proto.Assign{}
}

// Bounds New holds Config.ProbeEvery and SessionConfig.Liveness to: a
// probe round more often than MinProbeEvery, or a liveness check shorter
// than MinLiveness, would load every chat server for nothing (and report
// healthy connections broken); past the maxima the client would take
// minutes to notice a better server or a dead one.
const (
	MinProbeEvery = 50 * time.Millisecond
	MaxProbeEvery = time.Hour
	MinLiveness   = 10 * time.Millisecond
	MaxLiveness   = time.Minute
)

// ErrNotCentral is returned (wrapped) by Run when every control address
// answered, but none as Central's control port: a chat server (its Welcome
// names the server), an HTTP port such as Central's REST API, or another
// service (proto.ErrNotNearchat). Retrying would not help, so Run does not.
var ErrNotCentral = errors.New("client: the control address is not Central's control port")

// New validates opts. Nothing is dialed before Run.
func New(opts Config) (*Client, error) {
	if err := proto.CheckUser(opts.User); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if opts.Central == "" || opts.Control == "" {
		return nil, errors.New("client: Central's REST and control addresses are both needed")
	}
	if opts.HoldingEvery <= 0 {
		opts.HoldingEvery = DefaultConfig().HoldingEvery
	}
	if opts.ProbeBest < 0 || opts.ProbeExplore < 0 {
		return nil, errors.New("client: ProbeBest and ProbeExplore must not be negative")
	}
	if opts.ProbeEvery < MinProbeEvery || opts.ProbeEvery > MaxProbeEvery {
		return nil, fmt.Errorf("client: ProbeEvery %v: want %v to %v", opts.ProbeEvery, MinProbeEvery, MaxProbeEvery)
	}
	if opts.BackoffMin <= 0 || opts.BackoffMax < opts.BackoffMin {
		return nil, fmt.Errorf("client: BackoffMin %v, BackoffMax %v: want 0 < BackoffMin <= BackoffMax", opts.BackoffMin, opts.BackoffMax)
	}
	// The sessions are made later, one per room: a bad setting is
	// refused here rather than at the first room.
	if err := opts.Session.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := opts.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: 5 * time.Second}
	}
	api := centralapi.NewClient(opts.Central, nil)
	if opts.TLS != nil {
		d = &tlsconfig.Dialer{Base: d, Config: opts.TLS}
		api = centralapi.NewClientTLS(opts.Central, opts.TLS)
	}
	return &Client{
		opts:     opts,
		log:      log,
		api:      api,
		dialer:   d,
		events:   make(chan Event, 256),
		token:    opts.Token,
		rooms:    make(map[string]*roomState),
		reported: make(chan struct{}),
		running:  make(chan struct{}),
		good:     make(map[string][]goodSample),
		left:     make(map[string]*leftRoom),
		leftNote: make(chan struct{}),
		asked:    make(map[string]asking),
		probeNow: make(chan struct{}, 1),
		paceNow:  make(chan struct{}, 1),
		upNow:    make(map[string]string),
		follow:   make(map[string]followed),
		every:    opts.ProbeEvery,
	}, nil
}

// Events returns every event of the client, in one stream: the
// controller's (Status, Incoming, RoomReady, RoomClosed, Connected,
// Disconnected, Error) and every room's (Message, Presence, Moved, Drained,
// Missed, Broken, Error), each carrying its Room. A room's events follow its
// RoomReady, in the session's order. The user must keep draining it: a
// reader that stops holds up the control connection and every room (see
// Concurrency in the package doc).
func (c *Client) Events() <-chan Event { return c.events }

// User returns the registered user name.
func (c *Client) User() string { return c.opts.User }

// Token returns the session token, empty before registration.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// Reported is closed once the first latency vector reached Central; a chat
// request made before that finds no server measured.
func (c *Client) Reported() <-chan struct{} { return c.reported }

// API returns the REST client for Central.
func (c *Client) API() *centralapi.Client { return c.api }

// emit hands e to the reader of Events, waiting for it until Run ends.
func (c *Client) emit(e Event) {
	<-c.running
	select {
	case c.events <- e:
	case <-c.runDone:
	}
}

// forward announces a room and passes its session's events on, with
// their Room, until the session ends or the room is left. The session's
// first Moved is the join RoomReady announces; each later one gets the
// Assign it followed.
func (c *Client) forward(r *roomState, ready RoomReady) {
	events := ready.Session.Events()
	first, ok := <-events
	if m, join := first.(Moved); join && m.From.ID == "" {
		ready.Present, first = m.Members, nil
	}
	c.emit(ready)
	if !ok {
		return
	}
	if first != nil {
		c.emit(inRoom(first, ready.Room))
	}
	for ev := range events {
		if m, ok := ev.(Moved); ok {
			if m.From.ID == "" {
				continue
			}
			r.mu.Lock()
			m.Assign = r.followedLocked(m.Epoch, m.To.ID)
			r.mu.Unlock()
			ev = m
		}
		select {
		case <-r.done:
			return
		default:
		}
		c.emit(inRoom(ev, ready.Room))
	}
}

// Register registers the user with Central (or re-registers with the
// token), once. Run does it by itself.
func (c *Client) Register(ctx context.Context) error {
	sess, err := c.api.RegisterClient(ctx, c.opts.User, c.Token())
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.token = sess.Token
	c.mu.Unlock()
	return nil
}

// registerPatiently registers, waiting out Central's rate limit and its
// passing troubles: a registration it refused as one too many from this
// address (many users behind one address, all starting at once), one that
// timed out, or one it failed (5xx: a Central busy or failing over) is
// tried again after the back-off, which doubles from BackoffMin up to
// BackoffMax (jittered). Before, one slow answer ended a bot (abuse probe,
// 2026-12-03). Any other refusal, or ctx ending, is returned.
func (c *Client) registerPatiently(ctx context.Context) error {
	backoff := c.opts.BackoffMin
	for {
		err := c.Register(ctx)
		if err == nil || ctx.Err() != nil || !passing(err) {
			return err
		}
		wait := jitter(backoff)
		c.log.Info("registration not answered; trying again", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (rate-limited until then: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.opts.BackoffMax)
	}
}

// passing reports whether a registration's failure may pass by itself.
func passing(err error) bool {
	var e *centralapi.Error
	if errors.As(err, &e) {
		return e.Code == centralapi.CodeRateLimited || e.Status >= 500
	}
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// jitter returns a wait between d/2 and d, so that clients refused or
// cut off together do not all come back together.
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// Run registers, keeps the control connection up and probes servers until
// ctx ends. It returns ctx's error, or a registration refusal (the name is
// held by another live session); a registration refused by Central's rate
// limit is tried again until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	c.runDone = ctx.Done()
	close(c.running)
	defer c.api.CloseIdleConnections()
	if err := c.registerPatiently(ctx); err != nil {
		return fmt.Errorf("client: register %q: %w", c.opts.User, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	// The prober stops with the control loop, which ends early on a
	// control address that is not Central (ErrNotCentral).
	pctx, stopProbes := context.WithCancel(ctx)
	go func() {
		defer wg.Done()
		c.probeLoop(pctx)
	}()
	err := c.controlLoop(ctx)
	stopProbes()
	wg.Wait()
	c.mu.Lock()
	rooms := c.rooms
	c.rooms = map[string]*roomState{}
	c.mu.Unlock()
	for _, r := range rooms {
		closeSession(r)
	}
	return err
}

// closeSession closes r's session, if it has one, without holding r.mu
// meanwhile: Close waits for the session's goroutine, which takes r.mu in
// OnBroken when the room's connection breaks at that moment.
func closeSession(r *roomState) {
	r.mu.Lock()
	sess := r.sess
	r.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
}

// failoverRetry is how long after a settled control connection broke the
// client keeps retrying at most every 4*BackoffMin: long enough for a
// follower Central to win the election (the lease TTL, 2 s by default),
// start and bind its ports.
const failoverRetry = 10 * time.Second

func (c *Client) controlLoop(ctx context.Context) error {
	backoff := c.opts.BackoffMin
	var broke time.Time // when the last settled connection broke
	for {
		var up time.Time
		err := c.controlOnce(ctx, &up)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrNotCentral) {
			return err
		}
		var pe *proto.Error
		if errors.As(err, &pe) && pe.Code == proto.CodeUnauthorized {
			// Central forgot our token (it restarted after the grace
			// period); registering again with it restores the name.
			if rerr := c.Register(ctx); rerr != nil {
				c.log.Warn("re-registering", "err", rerr)
			}
		}
		c.emit(Disconnected{Err: err})
		now := time.Now()
		if !up.IsZero() && now.Sub(up) > backoff {
			// The connection outlived the backoff: this is a new
			// incident (Central died, or failed over), not the same
			// one going on, and the backoff starts again. A
			// connection cut right after each Welcome keeps growing it.
			backoff, broke = c.opts.BackoffMin, now
		}
		step := backoff
		if now.Sub(broke) < failoverRetry {
			step = min(step, 4*c.opts.BackoffMin)
		}
		wait := jitter(step)
		c.log.Info("control connection lost; reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.opts.BackoffMax)
	}
}

// httpPort reports whether addr is an HTTP server: one waits for the end
// of a request line and so never answers a Hello, and the handshake times
// out. Asked only then, on a connection of its own, with a blank line
// after the Hello that makes an HTTP server answer at once (a Central
// answers the Hello before it reads past it).
func (c *Client) httpPort(ctx context.Context, addr string) bool {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := c.dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	hello, err := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: c.opts.Agent})
	if err != nil {
		return false
	}
	if dl, ok := dctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write(append(hello, "\r\n\r\n"...)); err != nil {
		return false
	}
	head := make([]byte, 5)
	_, err = io.ReadFull(conn, head)
	return err == nil && string(head) == "HTTP/"
}

// ctrlSilence is the least time the control connection may stay silent
// before the client drops it and connects again: Central answers the
// client's pings (every HoldingEvery) at once.
const ctrlSilence = 30 * time.Second

// ctrlConn is one control connection.
type ctrlConn struct{ pc *proto.Conn }

// send writes m, failing if that takes more than 5 s. Safe for concurrent
// use.
func (cc *ctrlConn) send(m wire.Message) error {
	_ = cc.pc.NetConn().SetWriteDeadline(time.Now().Add(5 * time.Second))
	return cc.pc.Send(m)
}

// controlOnce connects to Central (the first of the addresses that
// answers) and runs the connection until it breaks; it sets *up to when
// Central welcomed it, if it did.
func (c *Client) controlOnce(ctx context.Context, up *time.Time) error {
	addrs := strings.Split(c.opts.Control, ",")
	var pc *proto.Conn
	var err error
	notCentral := 0 // addresses that answered as something else
	c.mu.Lock()
	if c.skipAddr {
		// The last Central did not answer in time (LeavesConfirmed):
		// another replica may lead by now.
		c.skipAddr = false
		c.ctrlAt = (c.ctrlAt + 1) % len(addrs)
	}
	c.mu.Unlock()
	for i := range addrs {
		at := (c.ctrlAt + i) % len(addrs)
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var w *proto.Welcome
		pc, w, err = proto.Dial(dctx, c.dialer, addrs[at], &proto.Hello{Agent: c.opts.Agent, Token: c.Token()})
		cancel()
		if err == nil && w.Server != proto.CentralName {
			// Something else speaks the protocol there (a chat server on
			// a port once meant for a Central replica): not Central.
			pc.Close()
			err = fmt.Errorf("%s welcomed us as %q: %w", addrs[at], w.Server, ErrNotCentral)
		}
		if err == nil {
			c.ctrlAt = at
			break
		}
		if pe := (*proto.Error)(nil); errors.As(err, &pe) && pe.Code == proto.CodeWrongPort {
			// Central's REST port, or a TLS port dialled in plaintext,
			// says so (and where to go) at once.
			err = fmt.Errorf("%s refused our Hello (%s): %w", addrs[at], pe.Reason, ErrNotCentral)
		} else if (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) && ctx.Err() == nil && c.httpPort(ctx, addrs[at]) {
			err = fmt.Errorf("%s is an HTTP port (Central's REST API?): %w", addrs[at], ErrNotCentral)
		}
		if errors.Is(err, ErrNotCentral) || errors.Is(err, proto.ErrNotNearchat) {
			notCentral++
		}
		c.log.Debug("control connection failed", "central", addrs[at], "err", err)
	}
	if err != nil {
		c.ctrlAt = (c.ctrlAt + 1) % len(addrs)
		switch {
		case notCentral == len(addrs) && !errors.Is(err, ErrNotCentral):
			return fmt.Errorf("control: %w: %w", ErrNotCentral, err)
		case notCentral < len(addrs) && errors.Is(err, ErrNotCentral):
			// Another address may yet be Central (a replica down
			// now): not final, Run tries again.
			return fmt.Errorf("control: %v", err)
		}
		return fmt.Errorf("control: %w", err)
	}
	*up = time.Now()
	ctrlAddr := addrs[c.ctrlAt]
	cc := &ctrlConn{pc: pc}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	defer pc.Close()
	c.mu.Lock()
	c.ctrl = cc
	c.ctrlGen++
	c.noteLocked()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.ctrl == cc {
			c.ctrl = nil
		}
		c.ctrlGen++
		c.noteLocked()
		c.mu.Unlock()
	}()
	c.emit(Connected{Central: ctrlAddr})
	// A Central that restarted has no latency vector for us: send the last
	// one now rather than at the next probe round.
	go func() {
		c.repMu.Lock()
		defer c.repMu.Unlock()
		c.mu.Lock()
		last := c.lastVec
		c.mu.Unlock()
		if last == nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := c.report(rctx, last); err != nil && ctx.Err() == nil {
			c.log.Debug("re-reporting latency after reconnect", "err", err)
		}
	}()
	c.log.Info("control connection up", "central", ctrlAddr, "user", c.opts.User)
	// State what we hold now and every HoldingEvery: Central answers every
	// difference from the rooms' placements, whatever made it. A Ping goes
	// with it: Central closes control connections silent past its
	// ControlIdle, and its Pong keeps ours from going silent past
	// ctrlSilence, after which we take Central (or the path) for dead.
	if err := c.sendHolding(cc, 0); err != nil {
		return err
	}
	// Requests with no final status yet: this Central may be a new one
	// that never saw them, or the old one whose answer we missed.
	if err := c.reask(cc); err != nil {
		return err
	}
	hctx, hstop := context.WithCancel(ctx)
	defer hstop()
	go func() {
		t := time.NewTicker(c.opts.HoldingEvery)
		defer t.Stop()
		for n := uint64(1); ; n++ {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				if c.sendHolding(cc, n) != nil {
					pc.Close()
					return
				}
			}
		}
	}()
	silence := max(6*c.opts.HoldingEvery, ctrlSilence)
	var listed []proto.ListedServer // a ServerList's frames so far
	for {
		_ = pc.NetConn().SetReadDeadline(time.Now().Add(silence))
		m, err := pc.Recv()
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *proto.Status:
			c.settled(m)
			c.emit(Status{*m})
		case *proto.Incoming:
			c.emit(Incoming{*m})
		case *proto.Assign:
			c.assign(ctx, *m)
		case *proto.RoomClosed:
			c.closeRoom(m.Room)
			c.emit(RoomClosed{*m})
		case *proto.ServerEvent:
			c.onServerEvent(m)
		case *proto.ServerList:
			if len(listed)+len(m.Servers) <= maxServers {
				listed = append(listed, m.Servers...)
			}
			if m.Last {
				c.onServerList(listed)
				listed = nil
			}
		case *proto.Ping:
			_ = cc.send((*proto.Pong)(m))
		case *proto.Pong:
			c.leavesHeard(m)
		case *proto.Error:
			if m.Fatal {
				return m
			}
			if m.Ref == proto.LatencyRef {
				c.latencyRefused(m)
				continue
			}
			c.log.Warn("Central reports an error", "err", m)
			c.emit(Error{Err: m})
		default:
			c.log.Debug("ignoring control frame", "type", fmt.Sprintf("%T", m))
		}
	}
}

// listEvery bounds how long a probe round goes on with the server list
// that Central's announcements keep, fetching none: a safety net for an
// announcement lost in some way the control connection did not see (an
// announcement is lost only with its connection, and a new connection
// fetches the list). At 30 s the fetches were most of what was left of
// Central's REST load once latency reports went on the control
// connection (80 a second at 800 x 3 in chatload).
const listEvery = 2 * time.Minute

// noteServerLocked applies Central's announcement m to the server list,
// as Central's own list would show it: a server up is listed (again), one
// draining is marked so, one down is dropped. c.mu held.
func (c *Client) noteServerLocked(m *proto.ServerEvent) {
	c.evGen++
	if m.State != proto.ServerUp {
		delete(c.follow, m.Server.ID) // no room goes there now
	}
	i := slices.IndexFunc(c.servers, func(s centralapi.ServerInfo) bool { return s.ID == m.Server.ID })
	if i < 0 && (m.State == proto.ServerDown || len(c.servers) >= maxServers) {
		return // nothing to drop; or see maxServers
	}
	servers := slices.Clone(c.servers) // Servers' callers may hold the old one
	switch {
	case m.State == proto.ServerDown:
		if i >= 0 {
			servers = slices.Delete(servers, i, i+1)
		}
	default:
		if i < 0 {
			servers = append(servers, centralapi.ServerInfo{ID: m.Server.ID})
			i = len(servers) - 1
		}
		servers[i].Addr, servers[i].Up = m.Server.Addr, true
		servers[i].Draining = m.State == proto.ServerDraining
	}
	c.servers = servers
}

// listFreshLocked reports whether the server list, as fetched and kept
// by Central's announcements since, can serve a probe round at now: the
// control connection that was up when it was fetched is still up, and
// the fetch is less than listEvery old. c.mu held.
func (c *Client) listFreshLocked(now time.Time) bool {
	return c.ctrl != nil && c.listGen == c.ctrlGen && !c.listAt.IsZero() && now.Sub(c.listAt) < listEvery
}

// holding lists the rooms this client holds, with the placement each
// session follows; a room whose session is still opening is left out
// (Central's push for it is pending anyway).
func (c *Client) holding() *proto.Holding {
	c.mu.Lock()
	rooms := make([]*roomState, 0, len(c.rooms))
	ids := make([]string, 0, len(c.rooms))
	for id, r := range c.rooms {
		rooms = append(rooms, r)
		ids = append(ids, id)
	}
	c.pruneLeftLocked(time.Now())
	h := &proto.Holding{Rooms: make([]proto.Held, 0, len(rooms))}
	size, left := wire.HeaderSize+16, 0
	for id := range c.left { // at most maxLeft, under 17 KiB
		h.Left = append(h.Left, id)
		size += len(id) + 2
	}
	c.mu.Unlock()
	for i, r := range rooms {
		r.mu.Lock()
		if r.sess != nil {
			held := proto.Held{Room: ids[i], Epoch: r.epoch, Server: r.server, Ticket: r.ticket}
			// Keys, tags and the epoch take under 48 bytes a room.
			if n := len(held.Room) + len(held.Server) + len(held.Ticket) + 48; size+n <= wire.MaxFrame {
				size += n
				h.Rooms = append(h.Rooms, held)
			} else {
				left++
			}
		}
		r.mu.Unlock()
	}
	if left > 0 {
		// Central lets no user into this many rooms; a report too big to
		// send would cost the control connection, again at each retry.
		c.log.Warn("too many rooms for one Holding report; some left out", "reported", len(h.Rooms), "left out", left)
	}
	return h
}

// send writes m on the current control connection.
func (c *Client) send(m wire.Message) error {
	c.mu.Lock()
	cc := c.ctrl
	c.mu.Unlock()
	if cc == nil {
		return errors.New("client: not connected to Central")
	}
	return cc.send(m)
}

// maxAsked bounds the chat requests in flight (no final status yet);
// askedFor is how long one is sent again on reconnects: past it, with no
// Central having answered, it ends on the client with REQ_TIMEOUT rather
// than reach an invitee long after it was made.
const (
	maxAsked = 64
	askedFor = 2 * time.Minute
)

// asking is a request in flight and when it was made.
type asking struct {
	m  *proto.Request
	at time.Time
}

// Request asks Central to start a chat with the given users. The status
// stream arrives as Status events, and ends with a final one whatever
// happens to the control connection or to Central: each request carries a
// key (proto.Request.Key) and, until its final status arrives, is sent
// again on every new control connection, to the same Central or another
// replica, which answers the same request rather than starting a second
// one (its status stream starts again from ACK_CONN, with the same Req).
// A request made while disconnected goes out on the next connection; one
// that no Central answered within askedFor (2 minutes) ends with
// REQ_TIMEOUT on the next. It fails only for an invalid name or when
// maxAsked requests are in flight.
func (c *Client) Request(to ...string) error {
	for _, u := range to {
		if err := proto.CheckUser(u); err != nil {
			return err
		}
	}
	m := &proto.Request{To: to, Key: fmt.Sprintf("%016x", rand.Uint64())}
	c.mu.Lock()
	if len(c.asked) >= maxAsked {
		c.mu.Unlock()
		return fmt.Errorf("client: %d chat requests are waiting for an answer already", maxAsked)
	}
	c.asked[proto.RequestID(c.opts.User, m.Key)] = asking{m, time.Now()}
	c.mu.Unlock()
	if err := c.send(m); err != nil {
		c.log.Info("chat request queued until Central is reachable", "to", to, "err", err)
	}
	return nil
}

// settled forgets a request once its final status arrived.
func (c *Client) settled(st *proto.Status) {
	if st.Code.Final() {
		c.mu.Lock()
		delete(c.asked, st.Req)
		c.mu.Unlock()
	}
}

// reask sends every request still in flight on a new control connection,
// and ends those older than askedFor.
func (c *Client) reask(cc *ctrlConn) error {
	now := time.Now()
	var asked []*proto.Request
	var expired []string
	c.mu.Lock()
	for id, a := range c.asked {
		if now.Sub(a.at) > askedFor {
			delete(c.asked, id)
			expired = append(expired, id)
			continue
		}
		asked = append(asked, a.m)
	}
	c.mu.Unlock()
	for _, id := range expired {
		c.emit(Status{proto.Status{Req: id, Code: proto.ReqTimeout, Detail: fmt.Sprintf("no Central answered within %v", askedFor)}})
	}
	for _, m := range asked {
		if err := cc.send(m); err != nil {
			return err
		}
	}
	return nil
}

// Answer accepts or declines an Incoming request.
func (c *Client) Answer(req string, accept bool) error {
	return c.send(&proto.Answer{Req: req, Accept: accept})
}

// Leave leaves a room for good and tells Central: at once when the
// control connection is up, and in every Holding report until Central has
// been heard to take it in (see leftRoom): a LeaveRoom is not
// acknowledged, and one the connection or Central lost would leave us
// listed in the room. It fails only for a malformed room id.
func (c *Client) Leave(room string) error {
	if err := proto.CheckRoom(room); err != nil {
		return fmt.Errorf("client: leave: %w", err)
	}
	now := time.Now()
	c.mu.Lock()
	c.pruneLeftLocked(now)
	if _, again := c.left[room]; !again && len(c.left) >= maxLeft {
		// The last resort: the oldest entry goes, one Central took in
		// before one it may not have.
		var oldest string
		for id, lr := range c.left {
			if o := c.left[oldest]; o == nil || evictsFirst(lr, o) {
				oldest = id
			}
		}
		c.log.Warn("too many rooms left unconfirmed: forgetting one", "room", oldest, "heard", !c.left[oldest].heard.IsZero(), "limit", maxLeft)
		delete(c.left, oldest)
	}
	c.left[room] = &leftRoom{at: now}
	c.mu.Unlock()
	c.closeRoom(room)
	if err := c.send(&proto.LeaveRoom{Room: room}); err != nil {
		c.log.Debug("LeaveRoom not sent now; the next Holding report carries it", "room", room, "err", err)
	}
	return nil
}

// leftRoom is a room this client left: when, and when Central answered a
// Ping sent right behind a Holding that listed it (zero: not yet). Central
// reads a connection's frames in order, so that Pong says it has taken the
// leave in. The room is listed until then, however long Central is away,
// and for leftFor after, while Assigns for it are ignored.
type leftRoom struct{ at, heard time.Time }

// evictsFirst orders the rooms left for eviction: the ones Central took in
// first, then the oldest.
func evictsFirst(a, b *leftRoom) bool {
	if a.heard.IsZero() != b.heard.IsZero() {
		return !a.heard.IsZero()
	}
	return a.at.Before(b.at)
}

// pruneLeftLocked forgets the rooms Central took in over leftFor ago.
func (c *Client) pruneLeftLocked(now time.Time) {
	for id, lr := range c.left {
		if !lr.heard.IsZero() && now.Sub(lr.heard) > leftFor {
			delete(c.left, id)
		}
	}
}

// sendHolding sends a Holding report and a Ping right behind it (ID n, At
// the moment the report was made), whose Pong confirms the leaves it
// carried (leavesHeard).
func (c *Client) sendHolding(cc *ctrlConn, n uint64) error {
	at := time.Now()
	if err := cc.send(c.holding()); err != nil {
		return err
	}
	return cc.send(&proto.Ping{ID: n, At: at.UnixNano()})
}

// leavesHeard marks the rooms left by the time the Holding that m's Ping
// followed was made as taken in by Central.
func (c *Client) leavesHeard(m *proto.Pong) {
	made, now := time.Unix(0, m.At), time.Now()
	if made.After(now) {
		return // not a Pong of ours
	}
	c.mu.Lock()
	for _, lr := range c.left {
		if lr.heard.IsZero() && !lr.at.After(made) {
			lr.heard = now
		}
	}
	c.noteLocked()
	c.mu.Unlock()
}

// noteLocked wakes LeavesConfirmed. c.mu held.
func (c *Client) noteLocked() {
	close(c.leftNote)
	c.leftNote = make(chan struct{})
}

// leavePatience is how long LeavesConfirmed waits for the Pong to its
// Ping before it takes the control connection for dead (a Central frozen,
// or cut off, keeps a TCP connection open and silent) and connects again,
// starting at the next address: the leader's lease (2 s by default) has
// about run out by then, and a replica that leads answers.
const leavePatience = 2 * time.Second

// UnconfirmedError is LeavesConfirmed's error: the rooms left that no
// Central has confirmed, and why the wait ended.
type UnconfirmedError struct {
	Rooms []string // sorted
	Err   error
}

func (e *UnconfirmedError) Error() string {
	return fmt.Sprintf("client: Central did not confirm leaving %s: %v", strings.Join(e.Rooms, ", "), e.Err)
}

func (e *UnconfirmedError) Unwrap() error { return e.Err }

// LeavesConfirmed waits until Central has confirmed every room this client
// left (Leave): until a Pong answered a Ping sent behind a Holding report
// that listed them. With -store etcd, Central sends that Pong only once the
// leave is stored, so a confirmed leave survives a failover and a loss of
// etcd. It sends a Holding and a Ping at once on the control connection,
// and again on each new one (a reconnect sends a Holding first); a
// connection that does not answer within a couple of seconds is dropped
// and the next Central address tried. It returns nil at once when there is
// nothing to confirm, else an *UnconfirmedError when ctx ends first.
//
// Call it before stopping Run when the process is about to exit: a leave
// is otherwise repeated only while the client runs, and one Central never
// took in (it was frozen, or failing over, or lost etcd) leaves the user
// listed in the room, and a restart with the same token back in it (rel7
// sweep, 2026-12-03, R7-1). Run must be running for the wait to end well.
func (c *Client) LeavesConfirmed(ctx context.Context) error {
	var asked, dropped *ctrlConn // the connection the last Holding went on; the one given up on
	var askedAt time.Time
	for n := uint64(1 << 63); ; n++ {
		c.mu.Lock()
		var rooms []string
		for id, lr := range c.left {
			if lr.heard.IsZero() {
				rooms = append(rooms, id)
			}
		}
		cc, note := c.ctrl, c.leftNote
		c.mu.Unlock()
		if len(rooms) == 0 {
			return nil
		}
		var patience <-chan time.Time
		if cc != nil && cc != dropped {
			if cc != asked {
				asked, askedAt = cc, time.Now()
				go func() {
					if c.sendHolding(cc, n) != nil {
						cc.pc.Close()
					}
				}()
			}
			t := time.NewTimer(max(leavePatience-time.Since(askedAt), 0))
			defer t.Stop()
			patience = t.C
		}
		select {
		case <-ctx.Done():
			slices.Sort(rooms)
			return &UnconfirmedError{Rooms: rooms, Err: ctx.Err()}
		case <-note:
		case <-patience:
			c.log.Info("Central has not confirmed the rooms left: connecting again", "rooms", rooms, "waited", time.Since(askedAt).Round(time.Millisecond))
			c.mu.Lock()
			if c.ctrl == cc {
				c.skipAddr = true
			}
			c.mu.Unlock()
			cc.pc.Close()
			dropped = cc
		}
	}
}

// Session returns the session of a room this client is in, or nil.
func (c *Client) Session(room string) *Session {
	c.mu.Lock()
	r := c.rooms[room]
	c.mu.Unlock()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sess
}

func (c *Client) closeRoom(room string) {
	c.mu.Lock()
	r := c.rooms[room]
	delete(c.rooms, room)
	c.mu.Unlock()
	if r == nil {
		return
	}
	// A session the room's worker opens from now on sees r.done and
	// closes itself.
	close(r.done)
	closeSession(r)
}

// onServerEvent takes Central's news of a server: it updates the list the
// rounds probe, and a server that came up is measured (or reported) at
// once.
func (c *Client) onServerEvent(m *proto.ServerEvent) {
	// A server came, went or drains: the figures may change.
	c.paceBack()
	c.mu.Lock()
	c.noteServerLocked(m)
	c.mu.Unlock()
	if m.State == proto.ServerUp {
		// Measure it now: the room may move there at once. Central
		// keeps no figure for a server it did not know (one that
		// registers after us with a restarted Central, one back
		// from down), so a figure we reported for it before is
		// reported again, measured or not.
		c.mu.Lock()
		if len(c.upNow) < maxUpNow {
			c.upNow[m.Server.ID] = m.Server.Addr
		}
		if _, ok := c.lastVec[m.Server.ID]; ok {
			last := maps.Clone(c.lastVec)
			delete(last, m.Server.ID)
			c.lastVec = last
		}
		c.mu.Unlock()
		select {
		case c.probeNow <- struct{}{}:
		default:
		}
	}
}

// onServerList takes the servers Central listed after its Welcome: the
// list the rounds probe from now on, which the announcements after it
// keep, with no fetch. A server not listed here before came up while no
// control connection could tell us (this client starting, or Central
// restarted): it is measured at once, as an announced one is; a server
// already known is left to the regular rounds, so a restarted Central's
// clients do not all probe every server at once.
func (c *Client) onServerList(list []proto.ListedServer) {
	c.mu.Lock()
	known := make(map[string]bool, len(c.servers))
	for _, s := range c.servers {
		known[s.ID] = true
	}
	servers := make([]centralapi.ServerInfo, 0, len(list))
	seen := make(map[string]bool, len(list))
	news := 0
	for _, s := range list {
		if seen[s.ID] {
			continue
		}
		seen[s.ID] = true
		servers = append(servers, centralapi.ServerInfo{ID: s.ID, Addr: s.Addr, Up: true, Draining: s.Draining})
		if !known[s.ID] && len(c.upNow) < maxUpNow {
			c.upNow[s.ID] = s.Addr
			news++
		}
	}
	c.servers, c.listGen, c.listAt = servers, c.ctrlGen, time.Now()
	c.evGen++ // a fetch under way is older: it must not replace this list
	c.mu.Unlock()
	if news > 0 {
		c.paceBack()
		select {
		case c.probeNow <- struct{}{}:
		default:
		}
	}
}

// maxRooms bounds the rooms a Client holds, each a session, a connection
// and a worker: Central lets a user into at most 256, and a Central that
// assigned thousands (a made-up one, in a probe) made the client open a
// connection for each and ping them all.
const maxRooms = 1024

// maxServers bounds the servers a Client learns of from Central's
// announcements and lists; each is measured every probe round.
const maxServers = proto.MaxListed

// checkAssign reports what makes a unusable.
func checkAssign(a proto.Assign) error {
	if err := proto.CheckRoom(a.Room); err != nil {
		return err
	}
	if a.Epoch == 0 {
		return errors.New("epoch 0")
	}
	if err := proto.CheckServer(a.Server.ID); err != nil {
		return err
	}
	if _, port, err := net.SplitHostPort(a.Server.Addr); err != nil || port == "" {
		return fmt.Errorf("server address %.64q is not host:port", a.Server.Addr)
	}
	return nil
}

// assign hands an Assign to its room's worker, which opens or moves the
// session; only the newest pending Assign matters.
func (c *Client) assign(ctx context.Context, a proto.Assign) {
	// An Assign names a room, a placement (epoch 1 on) and a server to
	// dial; one without is ignored. Epoch 0 on no server matched a new
	// room's empty state and crashed the client (abuse probe, 2026-12-03).
	if err := checkAssign(a); err != nil {
		c.log.Warn("an Assign from Central ignored", "room", a.Room, "err", err)
		return
	}
	c.mu.Lock()
	if _, ok := c.left[a.Room]; ok {
		// Sent before Central took our leave in (the next Holding tells
		// it again): a room left stays left.
		c.mu.Unlock()
		return
	}
	r := c.rooms[a.Room]
	if r == nil && len(c.rooms) >= maxRooms {
		// See maxRooms. Unacknowledged, the Assign is Central's to repeat.
		c.mu.Unlock()
		c.log.Warn("too many rooms: an Assign for one more is ignored", "room", a.Room, "rooms", maxRooms)
		return
	}
	if r == nil {
		r = &roomState{assigns: make(chan proto.Assign, 1), done: make(chan struct{})}
		c.rooms[a.Room] = r
		go c.roomWorker(ctx, a.Room, r)
	}
	c.mu.Unlock()
	for {
		select {
		case r.assigns <- a:
			return
		default:
		}
		select {
		case old := <-r.assigns:
			if old.Epoch > a.Epoch {
				a = old
			}
		default:
		}
	}
}

func (c *Client) roomWorker(ctx context.Context, room string, r *roomState) {
	for {
		var a proto.Assign
		select {
		case <-r.done:
			return
		case <-ctx.Done():
			return
		case a = <-r.assigns:
		}
		r.mu.Lock()
		cur, curServer := r.epoch, r.server
		sess := r.sess
		if a.Epoch > cur || (a.Epoch == cur && a.Server.ID != curServer) {
			r.followLocked(a)
		}
		r.mu.Unlock()
		// A placement is (epoch, server): the same epoch on another server
		// is a different placement (a restarted Central may reuse one).
		if a.Epoch < cur || (a.Epoch == cur && a.Server.ID == curServer && sess != nil && sess.Stats().Connected) {
			// A repeat of what we already follow: Central missed the ack.
			_ = c.send(&proto.AssignAck{Room: room, Epoch: cur})
			continue
		}
		// The same epoch while broken is Central answering our Unreachable
		// with "the server is alive": join it again (Move does that).
		var err error
		if sess == nil {
			cfg := c.opts.Session
			cfg.Dialer = c.dialer
			cfg.RTTHint = c.rttHint
			cfg.OnBroken = func(server proto.ServerRef, epoch uint64, err error) {
				// Tell Central at once; it checks the server and moves us,
				// or sends the placement again if the server answers.
				// OnBroken runs on the session's goroutine: never block it
				// on a control connection that may itself be stuck.
				m := &proto.Unreachable{Room: room, Server: server.ID, Epoch: epoch, Silent: errors.Is(err, ErrSilent)}
				// A path that broke may come back: measure at full pace.
				c.paceBack()
				r.mu.Lock()
				r.broken = *m
				remind := !r.reminding
				r.reminding = true
				r.mu.Unlock()
				go func() {
					_ = c.send(m)
					if remind {
						c.remindBroken(ctx, r)
					}
				}()
			}
			jctx, cancel := context.WithTimeout(ctx, followTimeout)
			sess, err = Open(jctx, cfg, a.Server, room, c.opts.User, a.Epoch, a.Ticket)
			cancel()
			if err == nil {
				r.mu.Lock()
				r.sess, r.epoch, r.server, r.ticket = sess, a.Epoch, a.Server.ID, a.Ticket
				r.mu.Unlock()
				select {
				case <-r.done: // left while we were joining
					_ = sess.Close()
					return
				default:
				}
				go c.forward(r, RoomReady{Room: room, Session: sess, Assign: a})
			}
		} else {
			jctx, cancel := context.WithTimeout(ctx, followTimeout)
			err = sess.Move(jctx, a.Server, a.Epoch, a.Ticket)
			cancel()
			if err == nil {
				r.mu.Lock()
				r.epoch, r.server, r.ticket = a.Epoch, a.Server.ID, a.Ticket
				r.mu.Unlock()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// No ack: Central sends the Assign again, and we try again.
			c.log.Warn("following assignment", "room", room, "server", a.Server.ID, "epoch", a.Epoch, "err", err)
			_ = c.send(&proto.Unreachable{Room: room, Server: a.Server.ID, Epoch: a.Epoch})
			continue
		}
		_ = c.send(&proto.AssignAck{Room: room, Epoch: a.Epoch})
	}
}

// followTimeout bounds joining a room's new placement: a chat server that
// welcomes a member but never says Joined wedged the room for good (abuse
// probe, 2026-12-03). Past it the server is reported unreachable, and
// Central checks it and sends the placement again or a new one. A
// variable so that a test need not wait 15 s.
var followTimeout = 15 * time.Second

// remindBroken repeats the room's last Unreachable while its session
// stays broken at that epoch: the first report may be lost with a control
// connection that is itself reconnecting, or find a server that restarted
// and answers echoes but no longer holds the room. One runs per room at a
// time.
func (c *Client) remindBroken(ctx context.Context, r *roomState) {
	t := time.NewTicker(unreachableEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return // the room's reminders end with it
		case <-r.done:
			return
		case <-t.C:
		}
		r.mu.Lock()
		m, sess, cur := r.broken, r.sess, r.epoch
		r.mu.Unlock()
		if sess != nil && cur == m.Epoch && !sess.Stats().Connected {
			_ = c.send(&m)
			continue
		}
		r.mu.Lock()
		newer := r.broken != m // a break since: it still needs reminding
		if !newer {
			r.reminding = false
		}
		r.mu.Unlock()
		if !newer {
			return
		}
	}
}

// unreachableEvery is how often a broken room reminds Central.
const unreachableEvery = time.Second

// roundTargetsLocked picks this round's servers: all of them when there
// are few; otherwise the ProbeBest with the best figures, the servers of
// the rooms held and any server without a recent sample (new, or aged
// out), every round, and ProbeExplore of the rest in turn.
func (c *Client) roundTargetsLocked(servers []centralapi.ServerInfo) []rtt.Target {
	figure := func(id string) (int64, bool) {
		g := c.good[id]
		if len(g) == 0 {
			return 0, false
		}
		return bestOf(g).MedianUS, true
	}
	all := c.opts.ProbeBest == 0 || len(servers) <= c.opts.ProbeBest+c.opts.ProbeExplore
	often := make(map[string]bool, c.opts.ProbeBest+len(c.rooms))
	var measured []centralapi.ServerInfo
	for _, s := range servers {
		if _, ok := figure(s.ID); ok && !all {
			measured = append(measured, s)
		} else {
			often[s.ID] = true
		}
	}
	slices.SortFunc(measured, func(a, b centralapi.ServerInfo) int {
		fa, _ := figure(a.ID)
		fb, _ := figure(b.ID)
		return cmp.Or(cmp.Compare(fa, fb), cmp.Compare(a.ID, b.ID))
	})
	for i, s := range measured {
		if i < c.opts.ProbeBest {
			often[s.ID] = true
		}
	}
	for _, r := range c.rooms {
		r.mu.Lock()
		if r.server != "" {
			often[r.server] = true
		}
		r.mu.Unlock()
	}
	var rest, targets []rtt.Target
	for _, s := range servers {
		t := rtt.Target{ID: s.ID, Addr: s.Addr}
		if often[s.ID] {
			targets = append(targets, t)
		} else {
			rest = append(rest, t)
		}
	}
	slices.SortFunc(rest, func(a, b rtt.Target) int { return cmp.Compare(a.ID, b.ID) })
	for i := range min(c.opts.ProbeExplore, len(rest)) {
		targets = append(targets, rest[(c.explore+i)%len(rest)])
	}
	c.explore += c.opts.ProbeExplore
	c.often = often
	return targets
}

// periodLocked is how often server id is probed, with n live servers and
// rounds every apart: every round for the often-probed, else once per
// turn through the rest.
func (c *Client) periodLocked(id string, n int, every time.Duration) time.Duration {
	if c.often[id] || c.opts.ProbeExplore == 0 {
		// With no exploration the rest are probed again once their
		// samples age out, as unmeasured servers.
		return every
	}
	rest := max(1, n-len(c.often))
	return time.Duration((rest+c.opts.ProbeExplore-1)/c.opts.ProbeExplore) * every
}

// probeStretch bounds how far the round interval stretches while nothing
// changes: at most probeStretch*ProbeEvery between rounds.
const probeStretch = 4

// probeKeep is how long the prober keeps a probe connection for the next
// probe of its server (rtt.Config.Keep): keep, or if that is shorter,
// long enough to span the longest gap between two rounds (probeStretch
// rounds, stretched by the jitter), up to maxProbeKeep. A Keep shorter
// than that gap closed every connection just before the round that would
// have used it: with chatload's 5 s rounds (up to 22 s apart) and Keep's
// 20 s, each stretched round dialled every server again, 90 accepts a
// second per chat server at 700 x 3 where there had been none. keep 0
// (dial for every probe) stays 0.
func probeKeep(keep, every time.Duration, jitter float64) time.Duration {
	if keep <= 0 {
		return keep
	}
	gap := time.Duration(float64(probeStretch*every)*(1+jitter)) + time.Second
	return max(keep, min(gap, maxProbeKeep))
}

// maxProbeKeep bounds probeKeep under the chat servers' idle timeout (30 s
// by default), which closes a connection silent for that long.
const maxProbeKeep = 25 * time.Second

// nextEveryLocked sets the interval to the next regular round after one
// whose figures moved (moved: a server came or went, or a median moved
// meaningfully, see meaningful) or some of whose probes failed (failed):
// ProbeEvery then, and twice the last interval (at most
// probeStretch*ProbeEvery) after a round that found nothing new. Figures
// that hold still are probed less and less (the probes were most of a
// large client population's cost: a dial, a Hello and 3 Pings per server
// and round), while a change, a failure, a server event or a broken room
// connection (paceBack) brings the pace back at once. A spread that
// changed alone is reported but does not bring the pace back: on a busy
// client the spread rises and falls as a slow round enters and leaves the
// recent rounds (bestOf), which says how noisy the figure is, not that the
// path changed, and those reports brought the pace back in most rounds
// (chatload at 800 x 3: 250-300 rounds a second for 2,400 members, 115
// once a spread alone no longer did).
// Room connections watch their own servers meanwhile (liveness), so a
// dead path is not left to the rounds.
func (c *Client) nextEveryLocked(moved, failed bool) time.Duration {
	if moved || failed {
		c.every = c.opts.ProbeEvery
	} else {
		c.every = min(2*c.every, probeStretch*c.opts.ProbeEvery)
	}
	return c.every
}

// paceBack brings the probe rounds back to ProbeEvery when the network
// changed under them (a room's connection broke, Central announced a
// server's change): rounds stretched while nothing changed would otherwise
// leave a path that came back unmeasured for up to probeStretch*ProbeEvery
// (12 s at the defaults; in the Mininet scenario the room moved back to
// the restored link's server on its own before the drain it waited for).
// It never blocks: the prober takes at most one request at a time.
func (c *Client) paceBack() {
	select {
	case c.paceNow <- struct{}{}:
	default:
	}
}

// reportDelta is the change in a server's figure that is worth a report:
// reportDeltaMin or reportDeltaPct of the figure, whichever is larger.
// Central's smallest move gain (selection.Policy.MinGain, 5 ms and 10%)
// is well above it, and changes add up against the last vector reported.
const (
	reportDeltaMin = time.Millisecond
	reportDeltaPct = 5
)

// meaningful reports whether vec differs from the last vector reported
// enough to send (report): a server came or went, or a median or spread
// moved by reportDelta and beyond the noise the last report stated (its
// spread). moved says whether a server came or went or a median moved,
// as opposed to a spread alone (see nextEveryLocked).
func meaningful(last, vec map[string]centralapi.Sample) (report, moved bool) {
	if last == nil || len(last) != len(vec) {
		return true, true
	}
	for id, v := range vec {
		l, ok := last[id]
		if !ok {
			return true, true
		}
		// Central weighs a move's gain against the spreads too, so a
		// spread that calmed down (or grew) matters as much as the median.
		// A figure is only as certain as its spread: a median that moved
		// within the spread last reported, or a spread that changed by
		// less than half, is no news (a starved client's figures, spread
		// over 50-450 ms, changed by these rules in 94% of its rounds).
		limit := max(reportDeltaMin.Microseconds(), l.MedianUS*reportDeltaPct/100)
		if abs(v.MedianUS-l.MedianUS) >= max(limit, l.SpreadUS) {
			return true, true
		}
		if abs(v.SpreadUS-l.SpreadUS) >= max(limit, l.SpreadUS/2) {
			report = true
		}
	}
	return report, false
}

func abs(v int64) int64 { return max(v, -v) }

// rttHint is the prober's figure for server: its best median of the recent
// rounds, with that round's spread.
func (c *Client) rttHint(server string) (rtt, spread time.Duration, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.good[server]
	if len(g) == 0 {
		return 0, 0, false
	}
	best := bestOf(g)
	return time.Duration(best.MedianUS) * time.Microsecond, time.Duration(best.SpreadUS) * time.Microsecond, true
}

// bestOf returns the sample of g with the lowest median, g not empty, its
// spread widened to the range of the recent rounds' medians, the slowest
// of three or more left out: a figure whose rounds disagree is only as
// certain as their disagreement. On a starved client (thousands of
// members in one process) one round of a server may read 0.1 ms and the
// next 47 ms while the best round's own interquartile range is 0.04 ms;
// Central weighs a move's gain against the spreads, so such a figure
// moves no room, while one that holds still from round to round keeps its
// narrow spread. One slow round alone does not widen it: a round that
// stalls (the client's process or the machine busy for a moment) reads
// every server slow at once, and kept in the spread it vetoed a clear
// gain for its three rounds (make demo beside make test, 2026-12-05:
// serv1 at 43 ms against serv3's 62 ms, but two stalled rounds, 124 and
// 105 ms for serv3, four rounds apart, kept the room on serv3 for 20 s).
func bestOf(g []goodSample) centralapi.Sample {
	var meds [recentRounds]int64
	n := 0
	best := g[0].s
	for _, x := range g {
		if x.s.MedianUS < best.MedianUS {
			best = x.s
		}
		if n < len(meds) {
			meds[n] = x.s.MedianUS
			n++
		}
	}
	slices.Sort(meds[:n])
	if n >= 3 {
		n-- // the slowest round
	}
	best.SpreadUS = max(best.SpreadUS, meds[n-1]-meds[0])
	return best
}

// followed is an announced server probed again at once (probeOnce): its
// address and the announced rounds that measured it, or tried to.
type followed struct {
	addr  string
	tries int
}

// followTries and followGap: a server announced up is probed again every
// followGap until it has recentRounds figures, at most followTries times
// in all (a failed probe among them). Its first figure is the noisiest,
// taken the moment it came, and a figure is only as certain as its rounds
// agree (bestOf), so until three rounds agreed its spread could veto a
// clear gain: in make demo beside make test the first rounds read serv1
// at 49 and 54 ms (42 ms emulated), and the room waited two regular
// rounds, 4.4 s, once 13.6 s, to move there. A server's few announcements
// make this cheap: 2 more probes each, in about a second.
const (
	followTries = 4
	followGap   = 100 * time.Millisecond
)

// maxUpNow bounds the announced servers waiting for their first probe;
// past it the next regular round finds the rest.
const maxUpNow = 64

// recentRounds is how many probe rounds a server's reported figure is the
// best of.
const recentRounds = 3

// leftFor is how long, once Central has taken a leave in, the client
// still lists the room in its Holding reports and ignores Assigns for it;
// maxLeft bounds those rooms (past it, the oldest goes, preferably one
// Central took in).
const (
	leftFor = 10 * time.Minute
	maxLeft = 256
)

// Servers returns the live servers as Central last listed them, with the
// announcements since applied (a server up added, draining marked, down
// dropped). Only ID, Addr, Up and Draining are kept up: the load figures
// (Conns, Rooms, Full) are a REST listing's, and zero for a server listed
// on the control connection (ServerList) or announced.
func (c *Client) Servers() []centralapi.ServerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]centralapi.ServerInfo(nil), c.servers...)
}

func (c *Client) probeLoop(ctx context.Context) {
	pcfg := c.opts.Probe
	pcfg.Dialer = c.dialer
	pcfg.Logger = c.log
	pcfg.Keep = probeKeep(pcfg.Keep, c.opts.ProbeEvery, pcfg.Jitter)
	p, err := rtt.New(pcfg)
	if err != nil {
		c.log.Error("prober", "err", err)
		return
	}
	defer p.Close()
	// A server announced up is measured at once, on its own, beside the
	// regular rounds (one in progress may wait on the farthest server);
	// the regular rounds keep their pace.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.probeNow:
			}
			for {
				if err := c.probeOnce(ctx, p, true); err != nil && ctx.Err() == nil {
					c.log.Warn("latency round of announced servers", "err", err)
				}
				c.mu.Lock()
				more := len(c.follow) > 0
				c.mu.Unlock()
				if !more {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-c.probeNow:
				case <-time.After(followGap):
				}
			}
		}
	}()
	defer wg.Wait()
	t := time.NewTimer(0)
	defer t.Stop()
	next := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.paceNow:
			c.mu.Lock()
			c.nextEveryLocked(true, false)
			c.mu.Unlock()
			if time.Until(next) > c.opts.ProbeEvery {
				t.Reset(c.opts.ProbeEvery)
				next = time.Now().Add(c.opts.ProbeEvery)
			}
			continue
		case <-t.C:
		}
		if err := c.probeOnce(ctx, p, false); err != nil && ctx.Err() == nil {
			c.log.Warn("latency round", "err", err)
		}
		c.mu.Lock()
		every := c.every
		c.mu.Unlock()
		t.Reset(every)
		next = time.Now().Add(every)
	}
}

// liveServers returns the servers that a room's session is connected to
// now, its connection not silent.
func (c *Client) liveServers() map[string]bool {
	c.mu.Lock()
	rooms := make([]*roomState, 0, len(c.rooms))
	for _, r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.mu.Unlock()
	live := make(map[string]bool, len(rooms))
	for _, r := range rooms {
		r.mu.Lock()
		sess, server := r.sess, r.server
		r.mu.Unlock()
		if sess == nil {
			continue
		}
		if st := sess.Stats(); st.Connected && st.Server.ID == server {
			live[server] = true
		}
	}
	return live
}

// noteRoundLocked adds a probe round's results, got at now, to each
// server's recent samples and returns the vector they make; the samples
// of a server in live (a room's connection to it answers) do not age.
func (c *Client) noteRoundLocked(results map[string]rtt.Result, live map[string]bool, now time.Time) map[string]centralapi.Sample {
	// Each server is reported by its best round of the last few (as
	// Tailscale's netcheck judges a region by its best recent latency):
	// the noise of a busy machine only ever adds delay, so one slow round
	// must not make a server look worse and move a room, while a server
	// that got better shows at once. A server whose probe failed this
	// round, or that is missing from the list for a moment (chat servers
	// registering again with a restarted Central), keeps its recent rounds
	// too, so it does not look unmeasured and force a move. A sample ages
	// out after recentRounds of its server's probe period in which this
	// client measured some server: a client whose every probe fails is
	// overloaded itself (thousands of members in one process), which says
	// nothing against its room's server, so the samples' clock (c.clock)
	// stops from the last round that measured anything to the next. Nor
	// does a server whose probes fail while a room's connection to it
	// answers age out: that connection's liveness check is the better
	// witness (a dead path there is reported at once, as a break or a
	// silence), and the failed probes say the client is overloaded.
	ok := false
	for _, r := range results {
		ok = ok || (r.Err == nil && r.Count > 0)
	}
	if len(results) > 0 { // a report without a round (probeOnce) leaves the clock alone
		switch {
		case ok && c.lastOK:
			c.clock = c.clock.Add(now.Sub(c.lastAt))
		case ok && c.clock.IsZero():
			c.clock = now
		}
		c.lastOK, c.lastAt = ok, now
	}
	vec := make(map[string]centralapi.Sample, len(results))
	for id, r := range results {
		if r.Err == nil && r.Count > 0 {
			g := append(c.good[id], goodSample{centralapi.SampleOf(r.Median, r.Spread, r.Count), c.clock, c.every})
			c.good[id] = g[max(0, len(g)-recentRounds):]
		}
	}
	for id, g := range c.good {
		// A sample ages by the pace of the rounds it was taken in: the
		// rounds may have stretched since (nextEveryLocked).
		for len(g) > 0 && !live[id] && c.clock.Sub(g[0].at) >= recentRounds*c.periodLocked(id, len(c.servers), max(g[0].every, c.every)) {
			g = g[1:]
		}
		if len(g) == 0 {
			delete(c.good, id)
			continue
		}
		c.good[id] = g
		vec[id] = bestOf(g)
	}
	return vec
}

// report sends vec to Central: on the control connection when one is up
// (a Latency frame; Central answers only a refusal, see latencyRefused),
// else over REST, registering again first when Central has forgotten the
// user (it restarted) or the token. A REST report costs a connection of
// its own most of the time (probe rounds are further apart than the
// REST pool keeps one), which was most of Central's REST load. The first
// report goes over REST all the same: Reported promises that Central has
// the vector, which only a REST answer tells. c.repMu held, so reports
// never overtake each other on their two ways.
func (c *Client) report(ctx context.Context, vec map[string]centralapi.Sample) error {
	vec = nearest(vec, maxReported)
	c.mu.Lock()
	cc := c.ctrl
	c.mu.Unlock()
	select {
	case <-c.reported:
	default:
		cc = nil
	}
	if cc != nil {
		m := &proto.Latency{Servers: make([]proto.ServerRTT, 0, len(vec))}
		for id, s := range vec {
			m.Servers = append(m.Servers, proto.ServerRTT{Server: id, MedianUS: s.MedianUS, SpreadUS: s.SpreadUS, Count: s.Count})
		}
		if cc.send(m) == nil {
			return nil
		}
		// The connection broke under the write; REST may still reach
		// Central, and the next connection reports again anyway.
	}
	err := c.api.PutLatency(ctx, c.opts.User, c.Token(), vec)
	if centralapi.IsUnauthorized(err) || centralapi.IsUnknownClient(err) {
		if rerr := c.Register(ctx); rerr == nil {
			err = c.api.PutLatency(ctx, c.opts.User, c.Token(), vec)
		}
	}
	return err
}

// maxReported bounds the servers one latency report names: the nearest
// ones, which are all placement looks at. A vector of more than about 850
// servers with long ids no longer fit a frame (64 KiB), nor Central's
// REST limit, and a client that saw that many never became ready (abuse
// probe, 2026-12-03).
const maxReported = 512

// nearest returns vec, or if it names more than n servers, the n with the
// lowest medians.
func nearest(vec map[string]centralapi.Sample, n int) map[string]centralapi.Sample {
	if len(vec) <= n {
		return vec
	}
	ids := slices.Collect(maps.Keys(vec))
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(cmp.Compare(vec[a].MedianUS, vec[b].MedianUS), strings.Compare(a, b))
	})
	out := make(map[string]centralapi.Sample, n)
	for _, id := range ids[:n] {
		out[id] = vec[id]
	}
	return out
}

// latencyRefused takes Central's refusal of a Latency frame: the vector
// reported last did not count, so the next round reports whatever it
// finds, changed or not.
func (c *Client) latencyRefused(e *proto.Error) {
	c.log.Warn("Central refused our latency report", "err", e)
	c.mu.Lock()
	c.lastVec = nil
	c.refusals++
	c.mu.Unlock()
}

// probeOnce measures this round's servers (see Config.ProbeEvery), or
// with newOnly just those without a recent sample, and reports the vector
// when it changed meaningfully.
func (c *Client) probeOnce(ctx context.Context, p *rtt.Prober, newOnly bool) error {
	var targets []rtt.Target
	unreported, announced := false, false
	if newOnly {
		// The announcements name the servers: probe them without asking
		// Central for the list first (a round trip on the way to a move).
		c.mu.Lock()
		for id, addr := range c.upNow {
			if len(c.good[id]) == 0 {
				c.follow[id] = followed{addr: addr} // measured now, and again until it has its rounds
				announced = true
			} else if _, ok := c.lastVec[id]; !ok {
				unreported = true // its recent figure goes to Central as it is
			}
		}
		clear(c.upNow)
		for id, f := range c.follow {
			targets = append(targets, rtt.Target{ID: id, Addr: f.addr})
		}
		c.mu.Unlock()
	} else {
		at := time.Now()
		c.mu.Lock()
		fresh := c.listFreshLocked(at)
		gen, ev := c.ctrlGen, c.evGen
		c.mu.Unlock()
		var servers []centralapi.ServerInfo
		if !fresh {
			var err error
			if servers, err = c.api.Servers(ctx); err != nil {
				c.mu.Lock()
				c.nextEveryLocked(false, true)
				c.mu.Unlock()
				return err
			}
			// No more are dialled than are kept from announcements.
			servers = servers[:min(len(servers), maxServers)]
		}
		c.mu.Lock()
		switch {
		case fresh:
		case c.listFreshLocked(at) && c.listAt.After(at):
			// Central listed its servers on a new control connection
			// meanwhile: that list, and the announcements after it, are
			// newer than this fetch.
		default:
			c.servers, c.listGen, c.listAt = servers, gen, at
			if c.evGen != ev {
				// An announcement crossed the fetch: which is newer is
				// unknown, so the next round fetches again.
				c.listAt = time.Time{}
			}
		}
		targets = c.roundTargetsLocked(c.servers)
		for _, t := range targets {
			// This round measures it: no second probe beside it.
			delete(c.upNow, t.ID)
		}
		c.mu.Unlock()
	}
	if newOnly && len(targets) == 0 && !unreported {
		return nil
	}
	results := p.Round(ctx, targets)
	if c.opts.OnProbe != nil {
		c.opts.OnProbe(results)
	}
	// One report at a time, each made from every result so far: a round
	// that finished earlier must not report after, and over, a later one.
	c.repMu.Lock()
	defer c.repMu.Unlock()
	live := c.liveServers()
	c.mu.Lock()
	vec := c.noteRoundLocked(results, live, time.Now())
	changed, moved := meaningful(c.lastVec, vec)
	failed := false
	for _, r := range results {
		failed = failed || r.Err != nil || r.Count == 0
	}
	if !newOnly || moved {
		c.nextEveryLocked(moved, failed)
	}
	if newOnly {
		// Its targets were the followed servers (less any that went down
		// since, and only this goroutine adds to them).
		for id, f := range c.follow {
			if f.tries++; f.tries >= followTries || len(c.good[id]) >= recentRounds {
				delete(c.follow, id)
			} else {
				c.follow[id] = f
			}
		}
	}
	c.mu.Unlock()
	if !changed && !announced && !unreported {
		// A round for servers just announced reports even so: Central
		// keeps a room on its server, though a member's vector lacks
		// it, until the member reports after the server registered (it
		// cannot tell one that fails our probe from one it had not
		// yet told us of).
		return nil
	}
	c.mu.Lock()
	refusals := c.refusals
	c.mu.Unlock()
	if err := c.report(ctx, vec); err != nil {
		return err
	}
	c.mu.Lock()
	if c.refusals == refusals { // else Central refused it already
		c.lastVec = vec
	}
	c.mu.Unlock()
	c.repOnce.Do(func() { close(c.reported) })
	return nil
}
