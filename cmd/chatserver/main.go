// Command chatserver runs one nearchat chat server: rooms, broadcast and the
// TCP echo that clients probe for round-trip times.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"nearchat/chatserver"
	"nearchat/pkg/bounds"
	"nearchat/pkg/metricshttp"
	"nearchat/pkg/ticket"
	"nearchat/pkg/tlsconfig"
)

// memHeadroom is what the process needs beyond its budgets (runtime, event
// loops, connections) in the soft memory limit it sets.
const memHeadroom = 64 << 20

func main() {
	cfg := chatserver.DefaultConfig()
	fs := flag.NewFlagSet("chatserver", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: chatserver [flags]\n\nServes nearchat rooms on a gnet event loop.\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "TCP `address` to serve chat on, host:port with port 0 to 65535 (0: any free port)")
	fs.StringVar(&cfg.ID, "id", cfg.ID, "server `name` announced to clients and Central: 1 to 32 ASCII letters, digits, '.', '_' or '-', not \"central\" (default chat-<port>)")
	fs.IntVar(&cfg.Loops, "loops", cfg.Loops, "event loops, 0 to 1024 (0: one per CPU)")
	fs.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "maximum open connections, TLS handshakes included; past it the oldest that has not joined a room gives way, or the new one is refused; at least 1")
	fs.IntVar(&cfg.MaxConnsPerSource, "max-conns-per-source", cfg.MaxConnsPerSource, "connections one IP address may hold (past it, as past -max-conns); at least 0 (0: no limit)")
	fs.DurationVar(&cfg.HelloTimeout, "hello-timeout", cfg.HelloTimeout, "close a connection that has not said Hello within this long, 1ms to 24h")
	fs.DurationVar(&cfg.FrameTimeout, "frame-timeout", cfg.FrameTimeout, "close a connection that takes longer than this to finish a frame it started, 1ms to 24h")
	fs.IntVar(&cfg.MaxRooms, "max-rooms", cfg.MaxRooms, "maximum rooms hosted, at least 1")
	fs.IntVar(&cfg.MaxMembers, "max-members", cfg.MaxMembers, "maximum members of one room, at least 1")
	fs.IntVar(&cfg.MaxOutbound, "max-outbound", cfg.MaxOutbound, "unsent `bytes` after which a member is cut off as a slow consumer, at least 65536")
	fs.IntVar(&cfg.History, "history", cfg.History, "recent messages kept per room for reconnecting members, 0 to 1048576 (0: none; members then recover through the senders' resends)")
	fs.IntVar(&cfg.HighWater, "high-water", cfg.HighWater, "backlog `bytes` (unsent, plus fan-out queued on its event loop) past which a member is behind and its room's Acks are withheld, below -max-outbound (0: max-outbound/4)")
	fs.DurationVar(&cfg.SlowTimeout, "slow-timeout", cfg.SlowTimeout, "how long a member may stay behind before it is cut off, 1ms to 24h")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "close a connection that said Hello and then sends nothing (not even a ping) this long, 0 to 24h (0: never)")
	fs.Float64Var(&cfg.SendRate, "send-rate", cfg.SendRate, "Chat frames a second taken from one member; past it its input waits (one that sends 256 KiB more meanwhile is cut off), 1 to 1e9")
	fs.Float64Var(&cfg.ResendRate, "resend-rate", cfg.ResendRate, "Resend asks a second forwarded per asker, 0.01 to 1e6")
	fs.Int64Var(&cfg.HistoryBudget, "history-budget", cfg.HistoryBudget, "total `bytes` of all rooms' histories, at least 0 (0: an eighth of the machine's memory)")
	fs.Int64Var(&cfg.OutboundBudget, "outbound-budget", cfg.OutboundBudget, "total unsent `bytes` of all members, at least 0 (0: an eighth of the machine's memory)")
	fs.StringVar(&cfg.Central, "central", cfg.Central, "Central's REST `address` (host:port or URL), or several Central replicas' comma-separated (heartbeats go to the one that serves); empty runs standalone")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "`file` keeping the server token from Central, so a restart takes this id back at once (otherwise after Central declares the old instance down)")
	fs.StringVar(&cfg.Secret, "secret", "", "cluster `secret` presented to Central (default $NEARCHAT_SECRET)")
	fs.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "host:port `address` clients should dial, as told to Central, port 1 to 65535 (default: the bound address)")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "heartbeat interval to Central, 10ms to 1h (0: what Central suggests)")
	drainTimeout := fs.Duration("drain-timeout", 10*time.Second, "on SIGTERM/SIGINT, how long to wait for Central to move the rooms away before closing, 0 to 24h")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "how long shutdown waits for goodbye frames, 0 to 24h")
	tlsCert := fs.String("tls-cert", "", "certificate `file`: serve TLS 1.3 on -listen (and plaintext only on -plain-listen, if given)")
	tlsKey := fs.String("tls-key", "", "private key `file` of -tls-cert")
	plain := fs.String("plain-listen", "", "with TLS on, also serve plaintext on this `address` (default: none)")
	ca := fs.String("ca", "", "CA `file` to verify Central with; reaches Central over https")
	clientCert := fs.String("client-cert", "", "certificate `file` to present to Central (stands for -secret when Central trusts its CA)")
	clientKey := fs.String("client-key", "", "private key `file` of -client-cert")
	ticketKey := fs.String("ticket-key", "", "`file` with Central's ticket public key; when set, joins need a ticket signed by Central")
	insecure := fs.Bool("insecure", false, "without -ticket-key, admit joins with no ticket: anyone may join any room under any name (tests and labs only)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on this `address` at /metrics, e.g. 127.0.0.1:9091 (empty: off)")
	verbose := fs.Bool("v", false, "log debug detail")
	bounds.Parse("chatserver", fs, os.Args[1:])
	if err := bounds.FromEnv(fs, map[string]string{"secret": "NEARCHAT_SECRET"}); err != nil {
		bounds.Exit("chatserver", err)
	}
	if err := bounds.First(
		bounds.Range("drain-timeout", *drainTimeout, 0, chatserver.MaxTimeout),
		bounds.Addr("metrics", *metricsAddr, true),
	); err != nil {
		bounds.Exit("chatserver", err)
	}
	switch {
	case *ticketKey != "" && *insecure:
		fmt.Fprintln(os.Stderr, "chatserver: -ticket-key and -insecure exclude each other: with -ticket-key joins need a ticket, -insecure admits anyone to any room")
		os.Exit(2)
	case *ticketKey == "" && !*insecure:
		fmt.Fprintln(os.Stderr, "chatserver: give -ticket-key (Central's ticket public key, from make certs), or -insecure to admit anyone to any room")
		os.Exit(2)
	case *plain != "" && *tlsCert == "":
		fmt.Fprintln(os.Stderr, "chatserver: -plain-listen is the plaintext port beside TLS: it needs -tls-cert (without TLS, -listen is plaintext)")
		os.Exit(2)
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(os.Stderr, "chatserver: -tls-cert and -tls-key go together")
		os.Exit(2)
	}
	if *tlsCert != "" {
		tc, err := tlsconfig.Server(*tlsCert, *tlsKey, "")
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatserver:", err)
			os.Exit(2)
		}
		cfg.TLS, cfg.TLSListen, cfg.Listen = tc, cfg.Listen, *plain
	}
	if *ca != "" {
		tc, err := tlsconfig.Client(*ca, *clientCert, *clientKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatserver:", err)
			os.Exit(2)
		}
		cfg.CentralTLS = tc
	}
	if *ticketKey != "" {
		pub, err := ticket.LoadPublic(*ticketKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatserver:", err)
			os.Exit(2)
		}
		cfg.TicketKey = pub
	}
	if err := cfg.Validate(); err != nil {
		bounds.Exit("chatserver", err)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if *insecure {
		cfg.Logger.Warn("INSECURE: no room tickets; anyone who reaches this server can join any room as anyone, and replace a member")
	}
	cfg.Metrics = *metricsAddr != ""
	// With both budgets given, the garbage collector is told about them:
	// without a limit it lets the heap grow to twice what is live before
	// it collects, so the RSS would reach twice the budgets. GOMEMLIMIT,
	// when set, wins.
	if cfg.HistoryBudget > 0 && cfg.OutboundBudget > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.HistoryBudget + cfg.OutboundBudget + memHeadroom)
	}
	s, err := chatserver.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *metricsAddr != "" {
		m, err := metricshttp.Listen(*metricsAddr, s.Collector())
		if err != nil {
			s.Close()
			fmt.Fprintln(os.Stderr, "chatserver:", err)
			os.Exit(1)
		}
		defer m.Close()
		cfg.Logger.Info("metrics", "url", "http://"+m.Addr()+"/metrics")
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sigs
		if cfg.Central != "" {
			// First signal: drain, so Central moves the rooms away before
			// we go. A second signal cuts the wait short.
			cfg.Logger.Info("draining: asking Central to move the rooms", "timeout", *drainTimeout)
			dctx, dcancel := context.WithTimeout(ctx, *drainTimeout)
			go func() { <-sigs; dcancel() }()
			if err := s.Drain(dctx); err != nil {
				cfg.Logger.Warn("drain incomplete; closing anyway", "err", err)
			}
			dcancel()
		}
		cancel()
	}()
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
