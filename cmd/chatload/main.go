// Command chatload drives synthetic rooms through a nearchat cluster, with
// optional chaos, and counts every message: sent, delivered, lost,
// duplicated, out of order, latency, moves and the longest time a room went
// without a working server.
//
//	chatload -rooms 200 -members 3 -duration 2m -chaos kill=10s,central=@64s
//
// By default it starts its own cluster: Central as a child of -bin/central
// and -servers chat servers as children of -bin/chatserver. With -central and
// -control it joins an existing Central instead; then only the chat servers
// it started itself (-servers, which needs -secret) can be killed or
// drained, and Central cannot be restarted. Progress goes to stderr once a
// second, the summary table to stdout, the JSON report to the -json file
// ("-" for stdout, and the table then goes to stderr). Interrupted, it
// exits 128 plus the signal's number, 130 for SIGINT and 143 for SIGTERM,
// even when the JSON report then cannot be written (the table says the
// run was cut short, and is no verdict). Otherwise it exits 1 when a
// message was lost, duplicated or reordered, a room did not form, (with
// -max-outage) a room went too long without a working server, or the
// JSON report was not written.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"time"

	"nearchat/bench/load"
	"nearchat/pkg/bounds"
	"nearchat/pkg/interrupt"
)

// defaultGOGC is chatload's own collector setting. Its members are
// thousands of clients in one process, and one collector marks them all
// at once: at 2,000 x 3, 280 MB of live heap took 360 ms to mark every
// 18 s on this 2-core machine, and every mark was a spike of 50-100 ms in
// the latency of every room, which no user's own client would see. At 800
// the collector runs about a ninth as often, on a heap up to nine times
// the live one (about 2.5 GB at 2,000 x 3). The figure measured stays the
// system's: Central and the chat servers run with their own setting.
const defaultGOGC = 800

func main() {
	cfg := load.DefaultConfig()
	fs := flag.NewFlagSet("chatload", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: chatload [flags]

Drives synthetic rooms through a nearchat cluster and counts every message.

Chaos schedule (-chaos): comma-separated kind=WHEN, WHEN being D (every D,
first at D after sending starts) or @T (once at T):
  kill=D     SIGKILL the chat server hosting most rooms; it starts again
             (same name and address) once Central moved its rooms away
  drain=D    SIGTERM it instead: it drains through Central, exits, restarts
  add=D      start one more chat server (up to -max-servers)
  central=D  close Central and start a new one on the same ports
e.g. -chaos kill=10s,central=@64s

flags:
`)
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Rooms, "rooms", cfg.Rooms, "number of rooms, 1 to 20000")
	fs.IntVar(&cfg.Members, "members", cfg.Members, "members per room, 2 to 16")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "mean messages per second per member, 0.001 to 1000")
	arrivals := fs.String("arrivals", string(cfg.Arrivals), "inter-message times: exp (Poisson) or uniform (±50%)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "message text `bytes`, 0 to 4096")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long members send once every room is up, 1ms to 24h")
	fs.DurationVar(&cfg.SetupTimeout, "setup-timeout", cfg.SetupTimeout, "bound on forming every room, 1ms to 1h")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "bound on waiting for acks and deliveries after sending stops, 1ms to 1h")
	fs.IntVar(&cfg.SetupConcurrency, "setup-concurrency", cfg.SetupConcurrency, "rooms formed at once, 1 to 1024")
	fs.StringVar(&cfg.Central, "central", "", "existing Central's REST `address` (with -control); empty: start one (-bin/central)")
	fs.StringVar(&cfg.Control, "control", "", "existing Central's control `address`")
	fs.IntVar(&cfg.Servers, "servers", cfg.Servers, "chat servers to start, 0 to -max-servers (at least 1 without -central)")
	fs.IntVar(&cfg.MaxServers, "max-servers", cfg.MaxServers, "most chat servers of ours running at once, 1 to 64")
	fs.StringVar(&cfg.Bin, "bin", cfg.Bin, "`directory` holding central and chatserver")
	fs.StringVar(&cfg.Secret, "secret", "", "cluster secret (default $NEARCHAT_SECRET; made up for our own Central)")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "chat servers' heartbeat interval, 10ms to 1h")
	fs.DurationVar(&cfg.OfflineAfter, "offline-after", cfg.OfflineAfter, "our Central marks a silent chat server down after this, from -heartbeat to 1h")
	fs.DurationVar(&cfg.ProbeEvery, "probe-every", cfg.ProbeEvery, "members' RTT probe and latency report interval, 50ms to 1h")
	fs.DurationVar(&cfg.Liveness, "liveness", cfg.Liveness, "members' liveness check of their chat connection, 10ms to 1m (0: off)")
	fs.DurationVar(&cfg.MinGain, "min-gain", cfg.MinGain, "our Central's absolute anti-flap margin (all servers share one loopback: a smaller gain is noise), 0 to 1h")
	chaos := fs.String("chaos", "", "chaos `schedule` (see above)")
	maxOutage := fs.Duration("max-outage", 0, "also fail when a room went longer than this without a working server, at least 0 (0: no limit)")
	jsonOut := fs.String("json", "", "write the JSON report to this `file` (- for stdout)")
	fs.StringVar(&cfg.LogDir, "logs", "", "`directory` for the logs of Central, the servers and the clients (default: temporary, removed after a clean run)")
	fs.BoolVar(&cfg.KeepLogs, "keep-logs", false, "keep the temporary log directory after a clean run")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of chatload's own process (the members; Central and the chat servers are processes of their own) to this `file`, for go tool pprof")
	gogc := fs.Int("gogc", defaultGOGC, "chatload's own collector: it runs once the heap grew this many percent past what the last one left, -1 (off) or 1 to 100000; Central and the chat servers keep their environment's GOGC")
	quiet := fs.Bool("q", false, "no progress lines")
	verbose := fs.Bool("v", false, "log the run's own warnings to stderr")
	bounds.Parse("chatload", fs, os.Args[1:])
	if err := bounds.FromEnv(fs, map[string]string{"secret": "NEARCHAT_SECRET"}); err != nil {
		bounds.Exit("chatload", err)
	}
	cfg.Arrivals = load.Arrivals(*arrivals)
	var err error
	if cfg.Chaos, err = load.ParseChaos(*chaos); err != nil {
		fmt.Fprintln(os.Stderr, "chatload:", err)
		os.Exit(2)
	}
	var gcErr error
	if *gogc != -1 && (*gogc < 1 || *gogc > 100000) {
		gcErr = bounds.Fail("gogc", *gogc, "-1 (off) or 1 to 100000")
	}
	if err := bounds.First(cfg.Validate(), bounds.AtLeast("max-outage", *maxOutage, 0), gcErr); err != nil {
		bounds.Exit("chatload", err)
	}
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if *jsonOut != "" && *jsonOut != "-" {
		// Checked before the run, not after it: a report that cannot be
		// written lost the whole run's figures, with exit status 0
		// (usability review 7, H3).
		f, err := os.OpenFile(*jsonOut, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			bounds.Exit("chatload", bounds.Fail("json", *jsonOut, "a file that can be written ("+err.Error()+")"))
		}
		f.Close()
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatload: -cpuprofile:", err)
			os.Exit(2)
		}
	}
	debug.SetGCPercent(*gogc) // this process only: the servers are started with the environment as it is
	ctx, stop := interrupt.Notify(context.Background())
	defer stop()
	rep, err := load.Run(ctx, cfg)
	pprof.StopCPUProfile() // before any exit below; a no-op without -cpuprofile
	interrupted := interrupt.Status(ctx)
	var jsonErr error
	if rep != nil {
		rep.Interrupted = interrupted != 0
		table := os.Stdout
		if *jsonOut == "-" {
			table = os.Stderr // stdout is the JSON's alone
		}
		fmt.Fprintln(table)
		_ = rep.WriteTable(table)
		if *jsonOut != "" {
			if jsonErr = writeJSON(*jsonOut, rep); jsonErr != nil {
				fmt.Fprintln(os.Stderr, "chatload: the JSON report:", jsonErr)
			}
		}
	}
	// The signal's status comes first, as in chaos: a report that failed
	// to be written on the way out must not make an interrupted run look
	// like one that lost messages.
	if interrupted != 0 {
		fmt.Fprintf(os.Stderr, "chatload: %v\n", context.Cause(ctx))
		os.Exit(interrupted)
	}
	if jsonErr != nil {
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatload:", err)
		os.Exit(1)
	}
	if !rep.OK() {
		os.Exit(1)
	}
	if limit := *maxOutage; limit > 0 && float64(rep.Outage.Max) > float64(limit)/float64(time.Millisecond) {
		fmt.Fprintf(os.Stderr, "chatload: a room went %v without a working server, limit %v\n", rep.Outage.Max, limit)
		os.Exit(1)
	}
}

func writeJSON(path string, rep *load.Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
