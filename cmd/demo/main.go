// Command demo plays the paper's scenario on one machine, with real
// processes: Central, four chat servers and two bots, all on loopback, the
// bots seeing the paper's round-trip times through emulated delay. serv1 is
// held back, the chat starts on serv3, serv1 starts and the chat moves
// there, serv1 is killed and the chat moves back. It prints a timeline and a
// final delivery count, and stops every process it started. It exits 1
// when a step fails, and 128 plus the signal's number (130, 143) when
// SIGINT or SIGTERM cuts it short.
//
// The processes run under bench/cluster, which records every event the
// bots print: a step waits for its event without discarding any other, and
// a failure says what was awaited, what the bots last said and what
// Central holds. The bots' event logs (<bot>.events.jsonl) are kept with
// the other logs on failure or with -keep-logs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"nearchat/bench/cluster"
	"nearchat/pkg/bounds"
	"nearchat/pkg/interrupt"
)

// maxRate bounds -rate: above it the bots' messages, not the moves, are
// what the demo would measure.
const maxRate = 1000

// checkFlags refuses values the demo cannot run with, before any process
// starts, naming the flag, the value and what it takes, on one line.
func checkFlags(bin string, rate float64, hold time.Duration, dash string, rest []string) error {
	if len(rest) > 0 {
		return fmt.Errorf("unexpected arguments %q: every setting is a flag", rest)
	}
	return bounds.First(
		bounds.Range("rate", rate, 0.001, maxRate),
		// Shorter, and a phase ends before a probe round can see it.
		bounds.Range("hold", hold, time.Second, time.Hour),
		checkDashboard(dash),
		checkBin(bin),
	)
}

// programs are what the demo starts from -bin.
var programs = []string{"central", "chatserver", "chat"}

// checkBin refuses a -bin the demo could not start its processes from,
// naming every program missing, as cmd/chaos's checkBin words it: a
// program that is there but not executable used to pass, and fail only
// once Central was up.
func checkBin(bin string) error {
	const want = "the directory holding central, chatserver and chat (make build puts them in bin/)"
	if fi, err := os.Stat(bin); err != nil {
		return bounds.Fail("bin", bin, want+": "+reason(err))
	} else if !fi.IsDir() {
		return bounds.Fail("bin", bin, want+": it is not a directory")
	}
	var missing []string
	for _, prog := range programs {
		fi, err := os.Stat(filepath.Join(bin, prog))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, prog)
		}
	}
	if len(missing) > 0 {
		return bounds.Fail("bin", bin, want+": no executable "+strings.Join(missing, ", ")+" there")
	}
	return nil
}

// absBin makes -bin absolute, so it names the same directory wherever a
// process is started from. Joined with a program's name, a relative one
// such as "." gave a bare "central", which os/exec looks up in $PATH: the
// demo ran some other central, or none.
func absBin(bin string) string {
	if abs, err := filepath.Abs(bin); err == nil {
		return abs
	}
	return bin // the working directory is gone: checkBin says so
}

// checkEtcd refuses -replicas where no etcd can be found, as
// bench/cluster finds it, before anything starts: the cluster demo needs
// three etcd members.
func checkEtcd(replicas bool, lookPath func(string) (string, error)) error {
	if !replicas {
		return nil
	}
	if _, err := lookPath("etcd"); err != nil {
		return errors.New("no etcd in $PATH, and -replicas runs three etcd members: make deps installs Debian's etcd-server (as root)")
	}
	return nil
}

// reason is what the system said about a path, without the path the
// refusal already quotes: "no such file or directory".
func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// checkDashboard refuses a -dashboard address Central could not serve
// the demo's dashboard on, at once: Central would exit, and the demo
// find out only when waiting for it timed out. The demo gives Central no
// dashboard token, so the address must be loopback; it must be free, which
// binding it for a moment shows.
func checkDashboard(dash string) error {
	if dash == "" {
		return nil
	}
	const want = "a free loopback host:port, e.g. 127.0.0.1:8088 (the demo's dashboard has no token), or empty for any free port"
	if bounds.Addr("dashboard", dash, false) != nil {
		return bounds.Fail("dashboard", dash, want)
	}
	host, _, _ := net.SplitHostPort(dash)
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return bounds.Fail("dashboard", dash, want)
	}
	ln, err := net.Listen("tcp", dash)
	if err != nil {
		return bounds.Fail("dashboard", dash, want+" ("+unwrapListen(err)+")")
	}
	ln.Close()
	return nil
}

// unwrapListen returns the system's reason a listen failed ("address
// already in use"), without the address the message repeats.
func unwrapListen(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// The paper's topology, as round-trip times from either client.
var servers = []struct {
	id  string
	rtt time.Duration
}{
	{"serv1", 40 * time.Millisecond},
	{"serv2", 100 * time.Millisecond},
	{"serv3", 60 * time.Millisecond},
	{"serv4", 80 * time.Millisecond},
}

type demo struct {
	c         *cluster.Cluster
	start     time.Time
	dashboard string // Central's dashboard address
}

func main() {
	bin := flag.String("bin", "bin", "`directory` holding central, chatserver and chat")
	rate := flag.Float64("rate", 10, "messages per second from each bot, 0.001 to 1000")
	hold := flag.Duration("hold", 4*time.Second, "how long each phase of the chat runs before the next event, 1s to 1h")
	keep := flag.Bool("keep-logs", false, "keep the processes' logs and the bots' event logs (their directory is printed)")
	dash := flag.String("dashboard", "", "free loopback `address` of Central's live dashboard, host:port with port 0 to 65535 (default: a free loopback port)")
	useTLS := flag.Bool("tls", true, "TLS 1.3 on every link and signed room tickets (a throwaway CA is made for the run)")
	replicas := flag.Bool("replicas", false, "the cluster demo instead (make cluster-demo): 3 etcd members, 3 Central replicas, 4 chat servers, 2 bots; SIGKILL the leader Central, then an etcd member (plaintext)")
	flag.Parse()
	*bin = absBin(*bin)
	if err := checkFlags(*bin, *rate, *hold, *dash, flag.Args()); err != nil {
		bounds.Exit("demo", err)
	}
	if err := checkEtcd(*replicas, exec.LookPath); err != nil {
		bounds.Exit("demo", err)
	}

	ctx, stop := interrupt.Notify(context.Background())
	defer stop()
	dir, err := os.MkdirTemp("", "nearchat-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if *dash == "" {
		if *dash, err = cluster.FreeAddr(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
	}
	d := &demo{start: time.Now(), dashboard: *dash}
	if *replicas {
		err = d.runReplicas(ctx, *bin, dir, *rate, *hold)
	} else {
		err = d.run(ctx, cluster.Options{Bin: *bin, Dir: dir, TLS: *useTLS, Tickets: true,
			CentralArgs: []string{"-scan", "1s", "-heartbeat", "500ms", "-offline-after", "3s", "-min-dwell", "2s", "-min-gain", "10ms",
				"-dashboard", *dash}}, *rate, *hold)
	}
	// A step the signal cut short failed for no fault of the cluster's:
	// there is nothing to diagnose.
	interrupted := interrupt.Status(ctx)
	if err != nil && d.c != nil && interrupted == 0 {
		d.diagnose()
	}
	if d.c != nil {
		d.c.Close()
	}
	if *keep || err != nil {
		fmt.Printf("logs: %s (<name>.log: each process; <bot>.events.jsonl: the bots' events; <bot>.client.log: the bots' client logs)\n", dir)
	} else {
		os.RemoveAll(dir)
	}
	if interrupted != 0 {
		fmt.Fprintf(os.Stderr, "demo: %v; every process it started is stopped\n", context.Cause(ctx))
		os.Exit(interrupted)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func (d *demo) say(format string, a ...any) {
	fmt.Printf("%7.3fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, a...))
}

// await waits for the first event at or after from that matches, printing
// the bots' errors and Missed reports seen on the way. Its error names what
// was awaited.
func (d *demo) await(ctx context.Context, from int, what string, timeout time.Duration, match func(cluster.Event) bool) (cluster.Event, error) {
	ev, err := d.c.Events.Await(ctx, from, timeout, match)
	if err != nil {
		return ev, fmt.Errorf("waiting for %s: %w", what, err)
	}
	return ev, nil
}

// pause lets the chat run for hold, reporting as they come the bots'
// errors and Missed reports, and any move nobody caused (alice's view; a
// loaded machine's probe noise can beat the anti-flap margins).
func (d *demo) pause(ctx context.Context, hold time.Duration) error {
	from := d.c.Events.Len()
	end := time.Now().Add(hold)
	for {
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		ev, err := d.c.Events.Await(ctx, from, left, func(e cluster.Event) bool {
			return e.Kind() == "error" || e.Kind() == "missed" || (e.Kind() == "moved" && e.Bot == "alice")
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return nil
		}
		if ev.Kind() == "moved" {
			d.say("chat moved %s -> %s (%s)", ev.Str("from"), ev.Str("to"), ev.Str("reason"))
		} else {
			d.say("%s: %s: %s", ev.Bot, ev.Kind(), fieldsLine(ev.Fields))
		}
		from = ev.Seq + 1
	}
}

// alices narrows match to alice's events: both bots report every move, and
// the timeline follows one view of it.
func alices(match func(cluster.Event) bool) func(cluster.Event) bool {
	return func(e cluster.Event) bool { return e.Bot == "alice" && match(e) }
}

// where returns the chat's server as the bots last said (a joined or
// moved event) and the position of that event.
func (d *demo) where() (string, int) {
	evs := d.c.Events.All()
	for i := len(evs) - 1; i >= 0; i-- {
		switch evs[i].Kind() {
		case "joined":
			return evs[i].Str("server"), i
		case "moved":
			return evs[i].Str("to"), i
		}
	}
	return "", 0
}

// backOn waits until the chat is on id again, if it moved away.
func (d *demo) backOn(ctx context.Context, id string) error {
	at, seq := d.where()
	if at == id {
		return nil
	}
	d.say("the chat is on %s, not %s: waiting for it to return to the better server", at, id)
	mv, err := d.await(ctx, seq+1, "the chat's return to "+id, 20*time.Second, alices(cluster.Is("moved", "to", id)))
	if err != nil {
		return err
	}
	d.say("chat moved %s -> %s (%s)", mv.Str("from"), id, mv.Str("reason"))
	return nil
}

func emulation() string {
	var emu []string
	for _, s := range servers {
		emu = append(emu, fmt.Sprintf("%s=%v", s.id, s.rtt))
	}
	return strings.Join(emu, ",")
}

// measured matches a probe event of bot that covers every server in ids.
func measured(bot string, ids ...string) func(cluster.Event) bool {
	return func(e cluster.Event) bool {
		if e.Bot != bot || e.Kind() != "probe" {
			return false
		}
		m, _ := e.Fields["rtt_ms"].(map[string]any)
		for _, id := range ids {
			if _, ok := m[id]; !ok {
				return false
			}
		}
		return true
	}
}

func (d *demo) run(ctx context.Context, opts cluster.Options, rate float64, hold time.Duration) error {
	fmt.Println("nearchat demo: the paper's scenario on loopback, RTTs emulated for the two bots")
	fmt.Println("  serv1 40 ms, serv3 60 ms, serv4 80 ms, serv2 100 ms (from either client)")
	fmt.Println()
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	d.c = c
	mode := "plaintext, cluster secret, signed room tickets"
	if opts.TLS {
		mode = "TLS 1.3 everywhere, signed room tickets, chat servers authenticated by certificate"
	}
	d.say("central up: REST %s, control %s (%s)", c.REST, c.Control, mode)
	d.say("dashboard: http://%s/ (-hold 30s gives each phase time to watch it)", d.dashboard)
	// Every server is registered before the bots start, so their first
	// probe round measures all three.
	first := []string{"serv2", "serv3", "serv4"}
	for _, id := range first {
		if _, err := c.AddServer(ctx, cluster.ServerOptions{ID: id, Args: []string{"-heartbeat", "500ms"}}); err != nil {
			return err
		}
	}
	d.say("chat servers serv2, serv3, serv4 registered with Central; serv1 held back")

	rateArg := fmt.Sprint(rate)
	common := []string{"-emulate-rtt", emulation(), "-quiet", "-probe-every", "1s", "-rate", rateArg}
	if _, err := c.StartBot(cluster.BotOptions{Name: "bob", Args: append([]string{"-accept"}, common...)}); err != nil {
		return err
	}
	// alice asks for the chat right after her first latency report; bob's
	// vector must be complete by then, or Central places the room on what
	// it knows.
	if _, err := d.await(ctx, 0, "bob's measurement of serv2, serv3 and serv4", 30*time.Second, measured("bob", first...)); err != nil {
		return err
	}
	if _, err := c.StartBot(cluster.BotOptions{Name: "alice", Args: append([]string{"-peer", "bob"}, common...)}); err != nil {
		return err
	}
	// Every wait from here reads the recorded events from the start: a
	// joined event that comes before alice's full measurement is kept.
	joined, err := d.await(ctx, 0, "the room assignment (a joined event from either bot)", 45*time.Second, cluster.Is("joined"))
	if err != nil {
		return err
	}
	// alice's measurement as Central had it: her last probe before the join.
	if probe, ok := lastBefore(c.Events.All(), joined.Seq, measured("alice")); ok {
		d.say("alice measured: %s", rttLine(probe.Fields["rtt_ms"]))
	}
	at := joined.Str("server")
	d.say("chat started on %s (worst member RTT %.1f ms)", at, joined.Num("rtt_ms"))
	if at != "serv3" {
		// Central placed the room before it had every member's full
		// latency vector; it must correct that by itself.
		d.say("serv3 is the best server; waiting for Central to move the chat there")
		mv, err := d.await(ctx, joined.Seq, "a move to serv3 (the best server while serv1 is held back)", 20*time.Second, alices(cluster.Is("moved", "to", "serv3")))
		if err != nil {
			return err
		}
		d.say("chat moved %s -> serv3 (%s)", mv.Str("from"), mv.Str("reason"))
	}
	if err := d.pause(ctx, hold); err != nil {
		return err
	}

	upAt := time.Now()
	from := c.Events.Len()
	if _, err := c.AddServer(ctx, cluster.ServerOptions{ID: "serv1", Args: []string{"-heartbeat", "500ms"}}); err != nil {
		return err
	}
	d.say("serv1 started")
	mv, err := d.await(ctx, from, "the move to serv1 (it started as the best server)", 20*time.Second, alices(cluster.Is("moved", "to", "serv1")))
	if err != nil {
		return err
	}
	d.say("chat moved %s -> serv1 (%s): %.1f ms -> %.1f ms, %.2fs after serv1 started, handoff %.0f ms",
		mv.Str("from"), mv.Str("reason"), mv.Num("prev_rtt_ms"), mv.Num("rtt_ms"),
		mv.At.Sub(upAt).Seconds(), mv.Num("took_ms"))
	if err := d.pause(ctx, hold); err != nil {
		return err
	}

	// The kill must hit the chat's server.
	if err := d.backOn(ctx, "serv1"); err != nil {
		return err
	}
	killAt := time.Now()
	from = c.Events.Len()
	if err := c.Server("serv1").Kill(); err != nil {
		return err
	}
	d.say("serv1 killed with SIGKILL")
	back, err := d.await(ctx, from, "the move away from the killed serv1", 20*time.Second, alices(cluster.Is("moved", "from", "serv1")))
	if err != nil {
		return err
	}
	d.say("chat moved serv1 -> %s (%s), %.0f ms after the kill", back.Str("to"), back.Str("reason"),
		float64(back.At.Sub(killAt).Microseconds())/1000)
	if err := d.pause(ctx, hold); err != nil {
		return err
	}

	return d.finish(ctx)
}

// finish stops the bots and checks their delivery reports.
func (d *demo) finish(ctx context.Context) error {
	d.say("stopping the bots")
	c := d.c
	from := c.Events.Len()
	for _, name := range []string{"alice", "bob"} {
		_ = c.Bot(name).Signal(syscall.SIGTERM)
	}
	reports := map[string]map[string]any{}
	for _, name := range []string{"alice", "bob"} {
		r, err := d.await(ctx, from, name+"'s delivery report", 15*time.Second, func(e cluster.Event) bool {
			return e.Bot == name && e.Kind() == "report"
		})
		if err != nil {
			return err
		}
		reports[name] = r.Fields
	}
	return verdict(reports)
}

// lastBefore returns the last event before position seq that matches.
func lastBefore(evs []cluster.Event, seq int, match func(cluster.Event) bool) (cluster.Event, bool) {
	for i := min(seq, len(evs)) - 1; i >= 0; i-- {
		if match(evs[i]) {
			return evs[i], true
		}
	}
	return cluster.Event{}, false
}

// diagnose prints what a failed step needs to be understood: Central's
// servers and rooms and each bot's last events.
func (d *demo) diagnose() {
	fmt.Println()
	fmt.Println("what the cluster looked like when the demo failed:")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if list, err := d.c.API.AllServers(ctx); err != nil {
		fmt.Printf("  Central's servers: %v\n", err)
	} else {
		for _, s := range list {
			fmt.Printf("  Central's server %s: up=%v draining=%v rooms=%d\n", s.ID, s.Up, s.Draining, s.Rooms)
		}
	}
	if rooms, err := d.c.API.Rooms(ctx, d.c.Secret()); err != nil {
		fmt.Printf("  Central's rooms: %v\n", err)
	} else if len(rooms) == 0 {
		fmt.Println("  Central has no room")
	} else {
		for _, r := range rooms {
			fmt.Printf("  Central's room %s: server %s epoch %d members %v\n", r.ID, r.Server, r.Epoch, r.Members)
		}
	}
	evs := d.c.Events.All()
	for _, name := range []string{"bob", "alice"} {
		var mine []cluster.Event
		for _, e := range evs {
			if e.Bot == name {
				mine = append(mine, e)
			}
		}
		if b := d.c.Bot(name); b != nil && !b.Running() && b.Err() != nil {
			fmt.Printf("  %s exited: %v\n", name, b.Err())
		}
		fmt.Printf("  %s printed %d events; the last ones:\n", name, len(mine))
		for _, e := range mine[max(0, len(mine)-6):] {
			fmt.Printf("    %7.3fs %s %s\n", e.At.Sub(d.start).Seconds(), e.Kind(), fieldsLine(e.Fields))
		}
	}
}

func fieldsLine(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "ev" && k != "t" && k != "token" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func rttLine(v any) string {
	m, _ := v.(map[string]any)
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s %.1f ms", id, m[id]))
	}
	return strings.Join(parts, ", ")
}

// verdict checks each bot received exactly what the other sent.
func verdict(reports map[string]map[string]any) error {
	var errs []error
	num := func(v any) int { f, _ := v.(float64); return int(f) }
	pairs := [][2]string{{"alice", "bob"}, {"bob", "alice"}}
	fmt.Println()
	for _, p := range pairs {
		from, to := reports[p[0]], reports[p[1]]
		recv, _ := to["received"].(map[string]any)
		sent, got := num(from["sent"]), num(recv[p[0]])
		fmt.Printf("  %s -> %s: sent %d, delivered %d, lost %d, duplicated %d, reordered %d\n",
			p[0], p[1], sent, got, num(to["lost"]), num(to["duplicated"]), num(to["reordered"]))
		if sent != got || to["ok"] != true {
			errs = append(errs, fmt.Errorf("%s -> %s: sent %d, delivered %d (report: %s)", p[0], p[1], sent, got, fieldsLine(to)))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	fmt.Println("\nevery message delivered exactly once, in order, through every move and fault")
	return nil
}
