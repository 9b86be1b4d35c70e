// Command demo plays the paper's scenario on one machine, with real
// processes: Central, four chat servers and two bots, all on loopback, the
// bots seeing the paper's round-trip times through emulated delay. serv1 is
// held back, the chat starts on serv3, serv1 starts and the chat moves
// there, serv1 is killed and the chat moves back. It prints a timeline and a
// final delivery count, and stops every process it started.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"nearchat/pkg/ticket"
	"nearchat/pkg/tlsconfig"
)

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
	bin     string
	logDir  string
	start   time.Time
	rest    string
	control string
	secret  string

	dashboard string // Central's dashboard address

	mu    sync.Mutex
	procs map[string]*exec.Cmd

	events chan botEvent

	tls   bool
	certs tlsconfig.Files
	tpriv string // ticket signing key (Central)
	tpub  string // ticket public key (chat servers)
}

type botEvent struct {
	bot    string
	fields map[string]any
}

func main() {
	bin := flag.String("bin", "bin", "`directory` holding central, chatserver and chat")
	rate := flag.Float64("rate", 10, "messages per second from each bot")
	hold := flag.Duration("hold", 4*time.Second, "how long each phase of the chat runs before the next event")
	keep := flag.Bool("keep-logs", false, "keep the processes' logs (their directory is printed)")
	dash := flag.String("dashboard", "", "`address` of Central's live dashboard (default: a free loopback port)")
	useTLS := flag.Bool("tls", true, "TLS 1.3 on every link and signed room tickets (a throwaway CA is made for the run)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{bin: *bin, procs: map[string]*exec.Cmd{}, events: make(chan botEvent, 1024), secret: "demo-secret", tls: *useTLS, dashboard: *dash}
	err := d.run(ctx, *rate, *hold)
	d.stopAll()
	if *keep || err != nil {
		fmt.Printf("logs: %s\n", d.logDir)
	} else if d.logDir != "" {
		os.RemoveAll(d.logDir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func (d *demo) say(format string, a ...any) {
	fmt.Printf("%7.3fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, a...))
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (d *demo) spawn(name string, stdout io.Writer, args ...string) (*exec.Cmd, error) {
	path := filepath.Join(d.bin, args[0])
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s not built (run make build): %w", path, err)
	}
	logf, err := os.Create(filepath.Join(d.logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args[1:]...)
	cmd.Stderr = logf
	cmd.Stdout = logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// Our own process group, so a Ctrl-C on the terminal reaches only us
	// and we stop the children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d.mu.Lock()
	d.procs[name] = cmd
	d.mu.Unlock()
	go func() { _ = cmd.Wait(); logf.Close() }()
	return cmd, nil
}

func (d *demo) signal(name string, sig syscall.Signal) {
	d.mu.Lock()
	cmd := d.procs[name]
	if sig == syscall.SIGKILL {
		delete(d.procs, name)
	}
	d.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(sig)
	}
}

func (d *demo) stopAll() {
	d.mu.Lock()
	procs := d.procs
	d.procs = map[string]*exec.Cmd{}
	d.mu.Unlock()
	for _, cmd := range procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, cmd := range procs {
		for cmd.ProcessState == nil && time.Now().Before(deadline) {
			if cmd.Process.Signal(syscall.Signal(0)) != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
	}
}

func (d *demo) startServer(id string) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	args := []string{"chatserver", "-listen", addr, "-id", id, "-central", d.rest, "-heartbeat", "500ms"}
	if d.tls {
		// The client certificate stands for the cluster secret.
		args = append(args, "-tls-cert", d.certs.ServerCert, "-tls-key", d.certs.ServerKey, "-ca", d.certs.CA,
			"-client-cert", d.certs.ClientCert, "-client-key", d.certs.ClientKey, "-ticket-key", d.tpub)
	} else {
		args = append(args, "-secret", d.secret)
	}
	_, err = d.spawn(id, nil, args...)
	return err
}

func (d *demo) startBot(name string, role ...string) error {
	var emu []string
	for _, s := range servers {
		emu = append(emu, fmt.Sprintf("%s=%v", s.id, s.rtt))
	}
	pr, pw := io.Pipe()
	args := append([]string{"chat", "-bot", "-name", name, "-central", d.rest, "-control", d.control,
		"-emulate-rtt", strings.Join(emu, ","), "-quiet", "-probe-every", "1s", "-log", filepath.Join(d.logDir, name+".client.log")}, role...)
	if d.tls {
		args = append(args, "-ca", d.certs.CA)
	}
	if _, err := d.spawn(name, pw, args...); err != nil {
		return err
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				d.events <- botEvent{bot: name, fields: m}
			}
		}
	}()
	return nil
}

// await returns the first bot event satisfying match, or fails after timeout.
func (d *demo) await(ctx context.Context, what string, timeout time.Duration, match func(botEvent) bool) (botEvent, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case ev := <-d.events:
			if ev.fields["ev"] == "error" {
				d.say("%s: error: %v", ev.bot, ev.fields["err"])
			}
			if match(ev) {
				return ev, nil
			}
		case <-t.C:
			return botEvent{}, fmt.Errorf("no %s within %v", what, timeout)
		case <-ctx.Done():
			return botEvent{}, ctx.Err()
		}
	}
}

func is(kind string, fields ...string) func(botEvent) bool {
	return func(e botEvent) bool {
		if e.fields["ev"] != kind {
			return false
		}
		for i := 0; i+1 < len(fields); i += 2 {
			if fmt.Sprint(e.fields[fields[i]]) != fields[i+1] {
				return false
			}
		}
		return true
	}
}

func (d *demo) run(ctx context.Context, rate float64, hold time.Duration) error {
	var err error
	if d.logDir, err = os.MkdirTemp("", "nearchat-demo-"); err != nil {
		return err
	}
	if d.rest, err = freeAddr(); err != nil {
		return err
	}
	if d.control, err = freeAddr(); err != nil {
		return err
	}
	if d.dashboard == "" {
		if d.dashboard, err = freeAddr(); err != nil {
			return err
		}
	}
	d.start = time.Now()
	fmt.Println("nearchat demo: the paper's scenario on loopback, RTTs emulated for the two bots")
	fmt.Println("  serv1 40 ms, serv3 60 ms, serv4 80 ms, serv2 100 ms (from either client)")
	fmt.Println()
	cargs := []string{"central", "-rest", d.rest, "-control", d.control, "-secret", d.secret,
		"-scan", "1s", "-heartbeat", "500ms", "-offline-after", "3s", "-min-dwell", "2s", "-dashboard", d.dashboard}
	if d.tls {
		if d.certs, err = tlsconfig.WriteDev(filepath.Join(d.logDir, "certs"), nil, 24*time.Hour); err != nil {
			return err
		}
		d.tpriv, d.tpub = filepath.Join(d.certs.Dir, "ticket.key"), filepath.Join(d.certs.Dir, "ticket.pub")
		if err := ticket.GenerateFiles(d.tpriv, d.tpub); err != nil {
			return err
		}
		cargs = append(cargs, "-tls-cert", d.certs.ServerCert, "-tls-key", d.certs.ServerKey,
			"-tls-client-ca", d.certs.CA, "-chat-ca", d.certs.CA, "-ticket-key", d.tpriv)
	}
	if _, err := d.spawn("central", nil, cargs...); err != nil {
		return err
	}
	mode := "plaintext, cluster secret"
	if d.tls {
		mode = "TLS 1.3 everywhere, signed room tickets, chat servers authenticated by certificate"
	}
	d.say("central up: REST %s, control %s (%s)", d.rest, d.control, mode)
	d.say("dashboard: http://%s/ (-hold 30s gives each phase time to watch it)", d.dashboard)
	time.Sleep(200 * time.Millisecond)
	for _, id := range []string{"serv2", "serv3", "serv4"} {
		if err := d.startServer(id); err != nil {
			return err
		}
	}
	d.say("chat servers serv2, serv3, serv4 started; serv1 held back")
	rateArg := fmt.Sprint(rate)
	if err := d.startBot("bob", "-accept", "-rate", rateArg); err != nil {
		return err
	}
	if err := d.startBot("alice", "-peer", "bob", "-rate", rateArg); err != nil {
		return err
	}
	probe, err := d.await(ctx, "latency probe from alice", 30*time.Second, func(e botEvent) bool {
		m, _ := e.fields["rtt_ms"].(map[string]any)
		return e.bot == "alice" && e.fields["ev"] == "probe" && len(m) >= 3
	})
	if err != nil {
		return err
	}
	d.say("alice measured: %s", rttLine(probe.fields["rtt_ms"]))

	joined, err := d.await(ctx, "room assignment", 30*time.Second, is("joined"))
	if err != nil {
		return err
	}
	first := joined.fields["server"]
	d.say("chat started on %v (worst member RTT %.1f ms)", first, joined.fields["rtt_ms"])
	if first != "serv3" {
		return fmt.Errorf("chat started on %v, want serv3", first)
	}
	if err := d.pause(ctx, hold); err != nil {
		return err
	}

	upAt := time.Now()
	if err := d.startServer("serv1"); err != nil {
		return err
	}
	d.say("serv1 started")
	mv, err := d.await(ctx, "move to serv1", 20*time.Second, is("moved", "to", "serv1"))
	if err != nil {
		return err
	}
	d.say("chat moved %v -> serv1 (%s): %.1f ms -> %.1f ms, %.2fs after serv1 started, handoff %.0f ms",
		mv.fields["from"], mv.fields["reason"], mv.fields["prev_rtt_ms"], mv.fields["rtt_ms"],
		time.Since(upAt).Seconds(), mv.fields["took_ms"])
	if err := d.pause(ctx, hold); err != nil {
		return err
	}

	killAt := time.Now()
	d.signal("serv1", syscall.SIGKILL)
	d.say("serv1 killed with SIGKILL")
	back, err := d.await(ctx, "move away from serv1", 20*time.Second, is("moved", "from", "serv1"))
	if err != nil {
		return err
	}
	d.say("chat moved serv1 -> %v (%s), %.0f ms after the kill", back.fields["to"], back.fields["reason"],
		float64(time.Since(killAt).Microseconds())/1000)
	if err := d.pause(ctx, hold); err != nil {
		return err
	}

	d.say("stopping the bots")
	d.signal("alice", syscall.SIGTERM)
	d.signal("bob", syscall.SIGTERM)
	reports := map[string]map[string]any{}
	for len(reports) < 2 {
		r, err := d.await(ctx, "delivery reports", 10*time.Second, is("report"))
		if err != nil {
			return err
		}
		reports[r.bot] = r.fields
	}
	return d.verdict(reports)
}

func (d *demo) pause(ctx context.Context, hold time.Duration) error {
	t := time.NewTimer(hold)
	defer t.Stop()
	for {
		select {
		case ev := <-d.events:
			if ev.fields["ev"] == "error" || ev.fields["ev"] == "missed" {
				d.say("%s: %v: %v", ev.bot, ev.fields["ev"], ev.fields["err"])
			}
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
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
func (d *demo) verdict(reports map[string]map[string]any) error {
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
			errs = append(errs, fmt.Errorf("%s -> %s: sent %d, delivered %d", p[0], p[1], sent, got))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	fmt.Println("\nevery message delivered exactly once, in order, across both moves")
	return nil
}
