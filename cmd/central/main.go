// Command central runs nearchat's Central: the REST API for registration,
// latency vectors and chat-server heartbeats, and the control port that
// pushes chat requests and room assignments to clients.
//
//	central -rest 127.0.0.1:8080 -control 127.0.0.1:8081 -secret "$NEARCHAT_SECRET"
//	central -metrics 127.0.0.1:9090 -dashboard 127.0.0.1:8088
//	central -store etcd://127.0.0.1:2379,127.0.0.1:22379/nearchat
//
// With -store etcd://, Centrals on one prefix elect a leader. A replica
// that does not lead binds both ports all the same and relays every
// connection, byte for byte, to the leader's (package central/relay), which
// it learns from the election (etcdstore.WatchLeader); when it wins it
// closes the relays and serves on the same ports, and when it loses the
// leadership (its lease lapsed: cut off from etcd, or starved) it steps
// down and follows again. With -metrics a follower serves its relays'
// counters (role="follower"), the leader Central's (role="leader").
//
// It stops cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"nearchat/central"
	"nearchat/central/dashboard"
	"nearchat/central/relay"
	"nearchat/central/store/etcdstore"
	"nearchat/pkg/bounds"
	"nearchat/pkg/connlimit"
	"nearchat/pkg/metricshttp"
	"nearchat/pkg/ticket"
	"nearchat/pkg/tlsconfig"

	"github.com/prometheus/client_golang/prometheus"
)

func main() { os.Exit(run()) }

// run is main's body, so that its deferred closes (the etcd store flushes
// and resigns) run before the process exits with run's status.
func run() int {
	cfg := central.DefaultConfig()
	fs := flag.NewFlagSet("central", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: central [flags]\n\nRuns nearchat's Central (registry, matchmaking, relocation).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.RESTListen, "rest", cfg.RESTListen, "REST API listen address, host:port with port 0 to 65535 (0: any free port)")
	fs.StringVar(&cfg.ControlListen, "control", cfg.ControlListen, "control port listen address, host:port with port 0 to 65535 (0: any free port)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat", cfg.HeartbeatInterval, "heartbeat interval chat servers are told to use, 10ms to 1h")
	fs.DurationVar(&cfg.OfflineAfter, "offline-after", cfg.OfflineAfter, "a chat server silent this long is marked down (with -store etcd://, also the TTL of its etcd lease, which carries its silence across leaders), from -heartbeat to 720h")
	fs.DurationVar(&cfg.ScanInterval, "scan", cfg.ScanInterval, "relocation scan interval, 10ms to 24h")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", cfg.RequestTimeout, "a chat request unanswered this long ends with REQ_TIMEOUT, 1ms to 24h")
	fs.DurationVar(&cfg.AwaitingEvery, "awaiting-every", cfg.AwaitingEvery, "period of AWAITING_REQ while a request waits, 10ms to 24h")
	fs.DurationVar(&cfg.AssignRetry, "assign-retry", cfg.AssignRetry, "resend an unacknowledged Assign this often, 10ms to 24h")
	fs.DurationVar(&cfg.AssignGiveUp, "assign-give-up", cfg.AssignGiveUp, "stop resending an Assign after this long, 1ms to 720h")
	fs.DurationVar(&cfg.SessionGrace, "session-grace", cfg.SessionGrace, "a name stays reserved this long without a control connection, and a room empty on its chat server keeps its place there this long; 1ms to 720h")
	fs.DurationVar(&cfg.ReconnectGrace, "reconnect-grace", cfg.ReconnectGrace, "a chat request waits this long for a member whose control connection dropped to come back, 0 to 24h (0: it fails at once)")
	fs.DurationVar(&cfg.ProbeTimeout, "probe-timeout", cfg.ProbeTimeout, "timeout of Central's echo check of a server reported unreachable, 1ms to 1m")
	fs.DurationVar(&cfg.Policy.MinGain, "min-gain", cfg.Policy.MinGain, "a move must lower the room's worst RTT by at least this much, 0 to 1h")
	fs.Float64Var(&cfg.Policy.MinGainPct, "min-gain-pct", cfg.Policy.MinGainPct, "... and by at least this many percent, 0 to 100")
	fs.DurationVar(&cfg.Policy.MinDwell, "min-dwell", cfg.Policy.MinDwell, "no voluntary move within this long after the last one, 0 to 720h")
	fs.Float64Var(&cfg.Policy.SpreadFactor, "spread-factor", cfg.Policy.SpreadFactor, "a move needs a gain above this times the two servers' measured spreads, 0 to 100 (0: off)")
	fs.DurationVar(&cfg.RoomTTL, "room-ttl", cfg.RoomTTL, "a room with no member connected and no server reporting it expires after this long, 1ms to 720h")
	fs.DurationVar(&cfg.ControlIdle, "control-idle", cfg.ControlIdle, "close a control connection silent this long after Hello (clients ping), 0 to 24h (0 keeps it)")
	fs.IntVar(&cfg.MaxOutbound, "max-outbound", cfg.MaxOutbound, "bytes a control client may leave unread before it is cut off, at least 65536")
	fs.IntVar(&cfg.MaxMembers, "max-members", cfg.MaxMembers, "most members in one chat request, 2 to 1024")
	fs.StringVar(&cfg.ClusterSecret, "secret", "", "cluster secret chat servers must present (default $NEARCHAT_SECRET; empty: none)")
	fs.BoolVar(&cfg.Multicore, "multicore", cfg.Multicore, "one control-port event loop per CPU")
	fs.Float64Var(&cfg.RequestRate, "request-rate", cfg.RequestRate, "chat requests a user may make per second, on average, 0.001 to 1e6")
	fs.IntVar(&cfg.RequestBurst, "request-burst", cfg.RequestBurst, "chat requests a user may make at once, 1 to 1000000")
	fs.Float64Var(&cfg.RegisterRate, "register-rate", cfg.RegisterRate, "client registrations Central takes per second from one address, on average, 0.001 to 1e6")
	fs.IntVar(&cfg.RegisterBurst, "register-burst", cfg.RegisterBurst, "client registrations Central takes at once from one address, 1 to 1000000")
	fs.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "descriptors all connections may hold, at least 0 (0: the descriptor limit minus a reserve)")
	fs.IntVar(&cfg.MaxPendingPerSource, "max-pending-per-source", cfg.MaxPendingPerSource, "chat requests pending for one user from users registered from one address (raise it behind a NAT, and on replicas: a leader sees a follower's users as its address); at least 0 (0: no limit)")
	fs.IntVar(&cfg.MaxServers, "max-servers", cfg.MaxServers, "chat servers Central holds, down ones included; past it a new id makes Central forget the server down longest, or is refused (503 full) when none is down; at least 0 (0: no limit)")
	fs.IntVar(&cfg.MaxUsers, "max-users", cfg.MaxUsers, "users Central holds (about 800 bytes each); past it a registration makes Central forget the users longest offline in no room, or is refused (503 full) when every user is connected or busy; at least 0 (0: no limit)")
	fs.IntVar(&cfg.MaxConnsPerSource, "max-conns-per-source", cfg.MaxConnsPerSource, "connections one IP address may hold on each port (past it a control connection evicts the address's oldest that has not said Hello); at least 0 (0: no limit)")
	tlsCert := fs.String("tls-cert", "", "certificate `file`: serve the REST API and control port over TLS 1.3 only")
	tlsKey := fs.String("tls-key", "", "private key `file` of -tls-cert")
	clientCA := fs.String("tls-client-ca", "", "CA `file`: chat servers presenting a certificate from it need no cluster secret; without -secret, only they may register")
	chatCA := fs.String("chat-ca", "", "CA `file` to verify chat servers with, for Central's echo check when they serve TLS")
	ticketKey := fs.String("ticket-key", "", "Ed25519 private key `file` (make certs): sign a room ticket for every member")
	fs.DurationVar(&cfg.TicketTTL, "ticket-ttl", cfg.TicketTTL, "how long a room ticket stays valid, 1s to 720h, and more than -assign-give-up with -ticket-key")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on this `address` at /metrics, e.g. 127.0.0.1:9090 (empty: off)")
	dashAddr := fs.String("dashboard", "", "serve the live dashboard on this `address`, e.g. 127.0.0.1:8088, or unix:PATH for a Unix socket (empty: off); any non-loopback address needs -dashboard-token and -tls-cert, and serves https")
	dashToken := fs.String("dashboard-token", "", "operator `token` the dashboard requires (default $NEARCHAT_DASHBOARD_TOKEN; empty: none, loopback only)")
	storeURL := fs.String("store", "memory", "where the records live: `memory` (lost when Central stops), or etcd://host:port[,host:port...][/prefix] (loaded at start, so a restarted Central loses nothing; etcds:// for etcd serving TLS); with etcd, Centrals on one prefix elect one leader that decides everything; the others relay their REST and control connections to it and stand by to lead")
	etcdCA := fs.String("etcd-ca", "", "with -store etcds://: CA `file` etcd's certificate must chain to (default: the system's roots)")
	etcdCert := fs.String("etcd-cert", "", "with -store etcds://: client certificate `file` to present to etcd (its --client-cert-auth)")
	etcdKey := fs.String("etcd-key", "", "private key `file` of -etcd-cert")
	leaderTTL := fs.Duration("leader-ttl", 2*time.Second, "with -store etcd://: a leader that stops renewing its lease (killed, cut off from etcd) is replaced after this long, whole seconds from 1s to 1h")
	compactEvery := fs.Duration("etcd-compact", 5*time.Minute, "with -store etcd://: the leader compacts etcd's history this often, up to the revision of one interval before (0: leave it to etcd's --auto-compaction-*), 0 to 720h; use 0 when other programs share the etcd cluster and read old revisions)")
	verbose := fs.Bool("v", false, "debug logging")
	bounds.Parse("central", fs, os.Args[1:])
	if err := bounds.FromEnv(fs, map[string]string{"secret": "NEARCHAT_SECRET", "dashboard-token": "NEARCHAT_DASHBOARD_TOKEN"}); err != nil {
		bounds.Exit("central", err)
	}
	if err := checkFlags(&cfg, *storeURL, *leaderTTL, *compactEvery, *metricsAddr, *dashAddr); err != nil {
		bounds.Exit("central", err)
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(os.Stderr, "central: -tls-cert and -tls-key go together")
		os.Exit(2)
	}
	etcdOpts, etcdTLS, err := etcdOptions(*storeURL, *etcdCA, *etcdCert, *etcdKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "central:", err)
		os.Exit(2)
	}
	if *tlsCert != "" {
		tc, err := tlsconfig.Server(*tlsCert, *tlsKey, "")
		if err != nil {
			fmt.Fprintln(os.Stderr, "central:", err)
			os.Exit(2)
		}
		if *clientCA != "" {
			withCA, err := tlsconfig.Server(*tlsCert, *tlsKey, *clientCA)
			if err != nil {
				fmt.Fprintln(os.Stderr, "central:", err)
				os.Exit(2)
			}
			// Clients (users) have no certificates; chat servers may.
			tc.ClientCAs, tc.ClientAuth = withCA.ClientCAs, tls.VerifyClientCertIfGiven
		}
		cfg.TLS = tc
	}
	if *chatCA != "" {
		tc, err := tlsconfig.Client(*chatCA, "", "")
		if err != nil {
			fmt.Fprintln(os.Stderr, "central:", err)
			os.Exit(2)
		}
		cfg.ChatTLS = tc
	}
	if *ticketKey != "" {
		k, err := ticket.LoadPrivate(*ticketKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "central:", err)
			os.Exit(2)
		}
		cfg.TicketKey = k
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	switch {
	case cfg.ClusterSecret != "" && len(strings.TrimSpace(cfg.ClusterSecret)) < minSecret:
		// Taken as it is (the demo and tests use short ones), but said:
		// "abc" and sixteen spaces both started without a word
		// (black-box sweep, 2026-12-04).
		cfg.Logger.Warn(fmt.Sprintf("weak cluster secret: %d bytes, %d of them not spaces; whoever guesses it registers chat servers and reads every room: use %d or more random bytes, e.g. openssl rand -hex 16", len(cfg.ClusterSecret), len(strings.TrimSpace(cfg.ClusterSecret)), minSecret))
	case cfg.ClusterSecret != "":
	case *clientCA != "":
		cfg.Logger.Info("no -secret: only chat servers with a certificate from -tls-client-ca may register")
	default:
		cfg.Logger.Warn("no -secret and no -tls-client-ca: any chat server that reaches the REST port can register and host rooms; set -secret (or NEARCHAT_SECRET), or with TLS -tls-client-ca and -secret")
	}
	if cfg.TLS != nil {
		cfg.Logger.Info("TLS 1.3 on the REST and control ports")
	}
	if strings.HasPrefix(*storeURL, "etcd://") {
		cfg.Logger.Warn("INSECURE: etcd is reached in plaintext without authentication; whoever can write to it can name another leader and have followers relay clients, tokens and the cluster secret to it: use etcds:// with -etcd-cert, or keep etcd on a network only the replicas reach")
	}

	etcdOpts = append(etcdOpts, etcdstore.WithLogger(cfg.Logger))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sv := server{cfg: cfg, metricsAddr: *metricsAddr, dashAddr: *dashAddr, dashToken: *dashToken, tlsCert: *tlsCert, tlsKey: *tlsKey}
	if *storeURL == "memory" {
		_, code := sv.serve(ctx, nil, "")
		return code
	}
	// A replica: follow (relay to the leader) until we lead, serve until
	// we stop or are deposed, then follow again.
	for {
		f, err := startFollower(ctx, *storeURL, etcdOpts, &sv.cfg, sv.metricsAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "central:", err)
			return 1
		}
		sv.cfg.Logger.Info("follower: relaying to the leader while waiting to lead", "store", *storeURL, "rest", sv.cfg.RESTListen, "control", sv.cfg.ControlListen)
		waiting := make(chan struct{})
		go watchEtcd(*storeURL, etcdTLS, waiting, sv.cfg.Logger)
		st, err := openEtcd(ctx, *storeURL, etcdOpts, f.self, *leaderTTL)
		close(waiting)
		f.stop() // frees the ports for Central
		if err != nil {
			if ctx.Err() != nil {
				sv.cfg.Logger.Info("central stopped")
				return 0
			}
			fmt.Fprintln(os.Stderr, "central:", err)
			return 1
		}
		sv.cfg.Logger.Info("leading: records loaded from etcd", "store", *storeURL)
		if *compactEvery > 0 {
			st.KeepCompacted(*compactEvery, sv.cfg.Logger)
		}
		deposed, code := sv.serve(ctx, st, f.serving)
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := st.Close(cctx); err != nil {
			sv.cfg.Logger.Error("etcd store: writes lost at shutdown", "err", err, "pending", st.Pending())
		}
		cancel()
		if !deposed || ctx.Err() != nil {
			return code
		}
		sv.cfg.Logger.Warn("deposed: following the new leader")
	}
}

// server is what one term of serving needs: Central's configuration and
// the observers started beside it.
type server struct {
	cfg                              central.Config
	metricsAddr, dashAddr, dashToken string
	tlsCert, tlsKey                  string
}

// serve runs Central on st (nil: the in-memory store) until ctx ends or,
// on etcd, the leadership is lost (deposed); it returns the exit status.
// serving is what a leader proclaims once its ports serve.
func (sv *server) serve(ctx context.Context, st *etcdstore.Store, serving string) (deposed bool, code int) {
	cfg := sv.cfg
	var lost <-chan struct{}
	if st != nil {
		cfg.Store, lost = st, st.Lost()
	}
	c, err := central.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return false, 1
	}
	if st != nil {
		// Our ports are Central's now: the followers may relay to them.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := st.Proclaim(pctx, serving)
		cancel()
		if err != nil {
			cfg.Logger.Error("could not tell the followers where we serve", "err", err)
			c.Close()
			return true, 1
		}
	}
	if sv.metricsAddr != "" {
		cs := []prometheus.Collector{c.Collector()}
		if st != nil {
			cs = append(cs, roleGauge("leader"))
		}
		m, err := metricshttp.Listen(sv.metricsAddr, cs...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "central:", err)
			c.Close()
			return false, 1
		}
		defer m.Close()
		cfg.Logger.Info("metrics", "url", "http://"+m.Addr()+"/metrics")
	}
	if sv.dashAddr != "" {
		dc := dashboard.Config{Listen: sv.dashAddr, Token: sv.dashToken, Logger: cfg.Logger}
		// On loopback the page is plain http, so a browser on this machine
		// needs no CA; anywhere else it is https and needs the token.
		if sv.tlsCert != "" && !dashboard.Loopback(sv.dashAddr) {
			if dc.TLS, err = tlsconfig.Server(sv.tlsCert, sv.tlsKey, ""); err != nil {
				fmt.Fprintln(os.Stderr, "central:", err)
				c.Close()
				return false, 2
			}
		}
		d, err := dashboard.New(dc, c)
		if err != nil {
			fmt.Fprintln(os.Stderr, "central:", err)
			c.Close()
			return false, 1
		}
		defer d.Close()
		if u, _, withToken := strings.Cut(d.URL(), "?token="); withToken {
			// The token stays out of the log, which more people read than
			// may operate Central (usability review 7, L13).
			cfg.Logger.Info("dashboard", "url", u, "token", "required: open the url with ?token= and the -dashboard-token")
		} else {
			cfg.Logger.Info("dashboard", "url", u)
		}
	}
	runCtx, depose := context.WithCancel(ctx)
	defer depose()
	go func() {
		select {
		case <-lost:
			cfg.Logger.Error("lost the leadership (lease expired or another leader wrote): stepping down so another replica leads")
			depose()
		case <-runCtx.Done():
		}
	}()
	err = c.Run(runCtx)
	select {
	case <-lost:
		deposed = ctx.Err() == nil
	default:
	}
	switch {
	case err != nil:
		cfg.Logger.Error("central stopped", "err", err)
		return deposed, 1
	case ctx.Err() == nil:
		cfg.Logger.Error("central stopped", "err", "deposed")
		return deposed, 1
	}
	cfg.Logger.Info("central stopped")
	return false, 0
}

// openEtcd waits (until ctx ends) to lead the URL's prefix and loads it;
// self is what it campaigns with.
// checkFlags refuses, before anything starts, a setting out of its range:
// cfg's (Config.Validate) and those main keeps itself.
func checkFlags(cfg *central.Config, storeURL string, leaderTTL, compactEvery time.Duration, metricsAddr, dashAddr string) error {
	var store, ttl error
	if storeURL != "memory" {
		if _, _, err := etcdstore.ParseURL(storeURL); err != nil {
			store = bounds.Fail("store", storeURL, "memory, etcd://host:port[,host:port...][/prefix], or etcds://... for TLS")
		}
	}
	if leaderTTL%time.Second != 0 || leaderTTL < time.Second || leaderTTL > time.Hour {
		// etcd grants leases in whole seconds.
		ttl = bounds.Fail("leader-ttl", leaderTTL, "whole seconds from 1s to 1h")
	}
	return bounds.First(
		cfg.Validate(),
		store,
		ttl,
		bounds.Range("etcd-compact", compactEvery, 0, central.MaxTTL),
		bounds.Addr("metrics", metricsAddr, true),
		dashboardAddr(dashAddr),
	)
}

// dashboardAddr checks -dashboard: host:port, or unix:PATH for a Unix
// socket (the Mininet scripts serve it so, from Central's namespace).
func dashboardAddr(v string) error {
	if path, ok := strings.CutPrefix(v, "unix:"); ok {
		if path == "" {
			return bounds.Fail("dashboard", v, "host:port, unix:PATH, or empty for none")
		}
		return nil
	}
	return bounds.Addr("dashboard", v, true)
}

func openEtcd(ctx context.Context, storeURL string, opts []etcdstore.Option, self string, ttl time.Duration) (*etcdstore.Store, error) {
	endpoints, prefix, err := etcdstore.ParseURL(storeURL)
	if err != nil {
		return nil, err
	}
	return etcdstore.OpenLeader(ctx, endpoints, prefix, self, ttl, opts...)
}

// etcdOptions turns -etcd-ca, -etcd-cert and -etcd-key into how to reach
// the store: TLS for etcds:// (the system's roots without -etcd-ca; its
// config returned too, for watchEtcd's checks), and the flags refused
// anywhere else.
func etcdOptions(storeURL, ca, cert, key string) ([]etcdstore.Option, *tls.Config, error) {
	if !strings.HasPrefix(storeURL, "etcds://") {
		if ca != "" || cert != "" || key != "" {
			return nil, nil, errors.New("-etcd-ca, -etcd-cert and -etcd-key need -store etcds:// (etcd over TLS)")
		}
		return nil, nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, nil, errors.New("-etcd-cert and -etcd-key go together")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12} // etcd's own minimum
	if ca != "" {
		c, err := tlsconfig.Client(ca, "", "")
		if err != nil {
			return nil, nil, fmt.Errorf("-etcd-ca: %w", err)
		}
		tc.RootCAs = c.RootCAs
	}
	if cert != "" {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, nil, fmt.Errorf("-etcd-cert: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return []etcdstore.Option{etcdstore.WithTLS(tc)}, tc, nil
}

// minSecret is the cluster secret's length below which Central warns.
const minSecret = 16

// candidate is what a replica campaigns with: who it is (for operators),
// and, proclaimed once it serves as the leader, where the followers relay
// to.
type candidate struct {
	Name    string `json:"name"`
	REST    string `json:"rest"`
	Control string `json:"control"`
}

// watchEtcd says in the log, until done, when no etcd member of the store
// URL lets us in (no connection, or with tc a refused TLS handshake: our
// certificate missing or untrusted) while we wait to lead (and again every 30 s,
// and when one does again): the wait is silent otherwise, and the etcd
// client's own retries are not logged (etcdstore.WithLogger).
func watchEtcd(storeURL string, tc *tls.Config, done <-chan struct{}, log *slog.Logger) {
	endpoints, _, err := etcdstore.ParseURL(storeURL)
	if err != nil {
		return
	}
	var since, said time.Time
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		why := etcdstore.Unreachable(endpoints, tc, 2*time.Second)
		now := time.Now()
		switch {
		case why != "" && (since.IsZero() || now.Sub(said) >= 30*time.Second):
			if since.IsZero() {
				since = now
			}
			said = now
			log.Warn("etcd unreachable: no member lets this replica in, so it cannot lead; waiting for it", "endpoints", strings.Join(endpoints, ","), "for", now.Sub(since).Round(time.Second), "err", why)
		case why == "" && !since.IsZero():
			log.Info("etcd reachable again", "after", now.Sub(since).Round(time.Second))
			since = time.Time{}
		}
	}
}

// relayPatience is how long a follower holds a new connection while no
// leader answers (the old one died and its lease has not run out, or the
// new one is starting): about the lease TTL and a start, under the
// clients' 5 s dial timeout.
const relayPatience = 4 * time.Second

// follower is a replica that does not lead: it binds both ports and relays
// every connection to the leader's (package central/relay).
type follower struct {
	self      string // the campaign value, JSON: the name alone
	serving   string // proclaimed once Central serves: name and addresses
	rest, ctl *relay.Relay
	metrics   *metricshttp.Server // nil without -metrics
	stopWatch context.CancelFunc
	watchDone chan struct{}
}

// startFollower binds cfg's ports (fixing a port 0 to the one it got, so
// that Central binds the same one when it leads) and relays them to the
// leader of the store URL's prefix until stop; with a metrics address it
// serves its relays' counters there (the process's own too), marked
// role="follower".
func startFollower(ctx context.Context, storeURL string, opts []etcdstore.Option, cfg *central.Config, metricsAddr string) (*follower, error) {
	endpoints, prefix, err := etcdstore.ParseURL(storeURL)
	if err != nil {
		return nil, err
	}
	restLn, err := listen(ctx, cfg.RESTListen)
	if err != nil {
		return nil, fmt.Errorf("REST port: %w", err)
	}
	ctlLn, err := listen(ctx, cfg.ControlListen)
	if err != nil {
		restLn.Close()
		return nil, fmt.Errorf("control port: %w", err)
	}
	cfg.RESTListen, cfg.ControlListen = restLn.Addr().String(), ctlLn.Addr().String()
	// The limits Central applies, counting both ends of a relayed
	// connection: a follower must not run out of descriptors either.
	budget, _, err := connlimit.Budget()
	if err != nil {
		restLn.Close()
		ctlLn.Close()
		return nil, err
	}
	if cfg.MaxConns > 0 {
		budget = min(budget, cfg.MaxConns)
	}
	lim := connlimit.New(budget)
	restLn = lim.Port(cfg.MaxConnsPerSource).Listener(restLn, 2)
	ctlLn = lim.Port(cfg.MaxConnsPerSource).Listener(ctlLn, 2)
	host, _ := os.Hostname()
	me := candidate{Name: fmt.Sprintf("%s/%d", host, os.Getpid()), REST: cfg.RESTListen, Control: cfg.ControlListen}
	self, _ := json.Marshal(candidate{Name: me.Name})
	serving, _ := json.Marshal(me)
	f := &follower{self: string(self), serving: string(serving), rest: relay.Serve(restLn, relayPatience, refuseREST(cfg.TLS, ctlLn.Addr().String())), ctl: relay.Serve(ctlLn, relayPatience, refuseControl(cfg.TLS)), watchDone: make(chan struct{})}
	fail := func(err error) (*follower, error) {
		f.rest.Close()
		f.ctl.Close()
		if f.metrics != nil {
			f.metrics.Close()
		}
		return nil, err
	}
	if metricsAddr != "" {
		cs := append(relayCollectors("rest", f.rest), relayCollectors("control", f.ctl)...)
		if f.metrics, err = metricsListen(ctx, metricsAddr, append(cs, roleGauge("follower"))...); err != nil {
			return fail(err)
		}
		cfg.Logger.Info("follower metrics", "url", "http://"+f.metrics.Addr()+"/metrics")
	}
	wctx, cancel := context.WithCancel(ctx)
	f.stopWatch = cancel
	leaders, err := etcdstore.WatchLeader(wctx, endpoints, prefix, opts...)
	if err != nil {
		cancel()
		return fail(err)
	}
	go func() {
		defer close(f.watchDone)
		for v := range leaders {
			var l candidate
			if json.Unmarshal([]byte(v), &l) != nil || isSelf(l.REST, me.REST) || isSelf(l.Control, me.Control) {
				// None, one we cannot read (an older Central), or
				// ourselves (won and about to serve, or a dead
				// process on our ports): wait. A leader that has
				// not proclaimed its addresses yet (still
				// starting) has none: wait too, so that a relay
				// never dials a port that is still another
				// follower's relay.
				l = candidate{}
			}
			cfg.Logger.Info("follower: leader", "name", l.Name, "rest", l.REST, "control", l.Control)
			f.rest.SetTarget(l.REST)
			f.ctl.SetTarget(l.Control)
		}
	}()
	return f, nil
}

// listen binds addr, retrying for a few seconds while it is in use: a
// deposed leader follows again on the ports its Central has just closed.
func listen(ctx context.Context, addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop closes the relays (and every connection they carry) and frees the
// ports.
func (f *follower) stop() {
	f.stopWatch()
	<-f.watchDone
	f.rest.Close()
	f.ctl.Close()
	if f.metrics != nil {
		f.metrics.Close()
	}
}

// metricsListen is metricshttp.Listen, retrying for a few seconds while
// the address is in use (as listen does: the leader's metrics port, which
// a deposed leader's follower takes over).
func metricsListen(ctx context.Context, addr string, cs ...prometheus.Collector) (*metricshttp.Server, error) {
	ln, err := listen(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	ln.Close()
	return metricshttp.Listen(ln.Addr().String(), cs...)
}

// roleGauge is nearchat_central_role{role=...} 1: whether this replica's
// metrics are a leader's (Central's) or a follower's (its relays').
func roleGauge(role string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nearchat_central_role", Help: "1, labelled with what this Central replica is: the leader (it runs Central) or a follower (it relays to the leader).",
		ConstLabels: prometheus.Labels{"role": role}}, func() float64 { return 1 })
}

// relayCollectors export a follower's relay of one port.
func relayCollectors(port string, r *relay.Relay) []prometheus.Collector {
	l := prometheus.Labels{"port": port}
	counter := func(name, help string, v func(relay.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: l}, func() float64 { return float64(v(r.Stats())) })
	}
	return []prometheus.Collector{
		counter("nearchat_central_relay_accepted_total", "Connections a follower accepted on the port.", func(s relay.Stats) uint64 { return s.Accepted }),
		counter("nearchat_central_relay_relayed_total", "Connections a follower relayed to the leader.", func(s relay.Stats) uint64 { return s.Relayed }),
		counter("nearchat_central_relay_gave_up_total", "Connections a follower closed with no leader answering within its patience.", func(s relay.Stats) uint64 { return s.GaveUp }),
		counter("nearchat_central_relay_leader_changes_total", "Times a follower's relay target changed (a new leader, or none).", func(s relay.Stats) uint64 { return s.Changes }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nearchat_central_relay_open", Help: "Connections a follower holds open on the port (waiting or relayed).", ConstLabels: l},
			func() float64 { return float64(r.Stats().Open) }),
	}
}

// isSelf reports whether addr is our own listener at listen, however it is
// spelled: the same port on listen's host ("localhost" for 127.0.0.1), or
// on any address of this machine when listen's host is unspecified. A
// leader record naming our own port another way made a follower relay to
// itself some 2,000 times (abuse probe, 2026-12-03).
func isSelf(addr, listen string) bool {
	if addr == listen {
		return true
	}
	host, port, err := net.SplitHostPort(addr)
	lhost, lport, lerr := net.SplitHostPort(listen)
	if err != nil || lerr != nil || port != lport {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return false
	}
	lip := net.ParseIP(lhost)
	var local []net.Addr
	if lhost == "" || lip != nil && lip.IsUnspecified() {
		local, _ = net.InterfaceAddrs()
	}
	for _, ip := range ips {
		if lip != nil && ip.IP.Equal(lip) {
			return true
		}
		for _, a := range local {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip.IP) {
				return true
			}
		}
	}
	return false
}
