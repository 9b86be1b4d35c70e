package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"nearchat/bench"
	"nearchat/pkg/tlsconfig"
)

// result is one server's figures for one cell.
type result struct {
	server     string
	msgsPerSec float64
	lat        *bench.Histogram
	perCPU     float64 // deliveries per second of server CPU time
	// reads and writes are the server's read-like and write-like system
	// calls per 100 deliveries: how well it batches, which is most of
	// what deliveries per CPU-second measure while the server is not
	// saturated.
	reads, writes float64
	// serverBusy and loadBusy are the share of one CPU the server and the
	// load generator used over the cell. Neither near 100% means the cell
	// measured latency (the machine's scheduling included), not capacity.
	serverBusy, loadBusy float64
	hwm                  int64
	err                  error
}

// group is one row block of the table: a pattern at one room size and
// payload size, every server's result.
type group struct {
	pattern string
	members int
	size    int
	results []result
}

func (g *group) get(server string) *result {
	for i := range g.results {
		if g.results[i].server == server && g.results[i].err == nil {
			return &g.results[i]
		}
	}
	return nil
}

func protocolFor(kind string) protocol {
	if strings.HasPrefix(kind, kindNATS) {
		return &natsProto{}
	}
	return &nearchatProto{}
}

func (o *options) dialer(kind, addr string) dialer {
	d := dialer{addr: addr}
	if strings.HasSuffix(kind, "-tls") {
		cfg, err := tlsconfig.Client(o.certs.CA, "", "")
		if err != nil {
			panic(err) // the certificates were written by this process
		}
		cfg.ServerName = "127.0.0.1"
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
		d.tls = cfg
	}
	return d
}

func compare(o *options) int {
	var groups []*group
	start, load0 := time.Now(), loadAverage()
	for _, m := range o.members {
		gs := make([]*group, len(o.sizes))
		for i, size := range o.sizes {
			gs[i] = &group{pattern: "one room", members: m, size: size}
		}
		kinds := append([]string(nil), o.servers...)
		for _, b := range o.baselineM {
			if b == m {
				kinds = append(kinds, kindBaseline)
			}
		}
		for _, rs := range o.oneRoom(kinds, m) {
			for i := range gs {
				gs[i].results = append(gs[i].results, rs[i])
			}
		}
		groups = append(groups, gs...)
	}
	if o.rooms > 0 {
		g := &group{pattern: fmt.Sprintf("%d rooms at %d msg/s", o.rooms, o.rate), members: 2, size: o.sizes[0]}
		kinds := append([]string(nil), o.servers...)
		if len(o.baselineM) > 0 {
			kinds = append(kinds, kindBaseline)
		}
		for _, rs := range o.fixedRate(kinds, g.size) {
			g.results = append(g.results, rs[0])
		}
		groups = append(groups, g)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s, %s/%s, Go %s. Servers pinned to CPU %s, load generator to CPU %s; %v per cell, in %d rounds taken in turn across the servers, %s (one room); fixed rate over %v, in rounds too.\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.Version(), o.serverCPU, o.loadCPU, o.cell, o.rounds, o.describeInFlight(), o.rateTime)
	fmt.Fprintf(&b, "Load average (1, 5, 15 min) %s at the start, %s at the end: above 1 or so, other work shares the CPUs and the cells swing.\n", load0, loadAverage())
	fmt.Fprintf(&b, "Command: %s\n\n", strings.Join(os.Args, " "))
	writeTable(&b, groups)
	if o.idle > 0 {
		b.WriteString("\n")
		o.idleTable(&b)
	}
	fmt.Fprintf(&b, "\nTotal %v.\n", time.Since(start).Round(time.Second))
	fmt.Print(b.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "compare: the table was not written to -o, only printed above:", err)
			return 1
		}
	}
	for _, g := range groups {
		for _, r := range g.results {
			if r.err != nil {
				return 1
			}
		}
	}
	return 0
}

// oneRoom measures a room of m members on a fresh server of every kind,
// one result per kind and payload size.
func (o *options) oneRoom(kinds []string, m int) [][]result {
	window, batch := o.inFlight(m)
	plans := make([]cellPlan, len(o.sizes))
	for i, size := range o.sizes {
		plans[i] = cellPlan{
			name: fmt.Sprintf("members=%d size=%d", m, size),
			warm: func(l *load) error {
				l.size = size
				for range 4 * window {
					if err := l.send(l.rooms[0], time.Now(), 1); err != nil {
						return err
					}
				}
				return l.drain(60 * time.Second)
			},
			drive: func(l *load, d time.Duration) error { return l.closedLoop(d, batch) },
		}
	}
	return o.inTurn(kinds, fmt.Sprintf("m%d", m), 1, m, window, o.cell, plans)
}

// cellPlan is how one cell is warmed up and driven on each server.
type cellPlan struct {
	name  string
	warm  func(l *load) error
	drive func(l *load, d time.Duration) error // one round of d
}

// inTurn starts a fresh server of every kind, each with a load of rooms
// rooms of m members (window messages in flight in each), and measures
// every cell of plans on each: one result per kind and plan. The servers
// run side by side (idle but for the one measured), and each cell is
// measured in o.rounds rounds of total/o.rounds taken in turn across
// them (each round starting one server later), their figures summed: a
// spell of other work on the machine then falls on every server alike,
// not on whichever was being measured, and the ratio rows compare like
// with like.
func (o *options) inTurn(kinds []string, tag string, rooms, m, window int, total time.Duration, plans []cellPlan) [][]result {
	out := make([][]result, len(kinds))
	type side struct {
		c   *child
		l   *load
		sum []tally
	}
	sides := make([]*side, len(kinds))
	stop := func(k int) {
		if sd := sides[k]; sd != nil {
			sd.l.close()
			sd.c.stop()
			sides[k] = nil
		}
	}
	defer func() {
		for k := range sides {
			stop(k)
		}
	}()
	// A server that fails is stopped at once, so that it does not go on
	// working off a backlog on the CPU the others are measured on.
	fail := func(k int, err error) {
		fmt.Fprintf(os.Stderr, "compare: %s %s: %v\n", kinds[k], tag, err)
		for i := range out[k] {
			if out[k][i].err == nil && out[k][i].lat == nil {
				out[k][i] = result{server: kinds[k], err: err}
			}
		}
		stop(k)
	}
	for k, kind := range kinds {
		out[k] = make([]result, len(plans))
		c, err := startChild(o, kind, tag)
		if err != nil {
			fail(k, err)
			continue
		}
		t0 := time.Now()
		l, err := newLoad(protocolFor(kind), o.dialer(kind, c.addr), rooms, m, window)
		if err != nil {
			c.stop()
			fail(k, err)
			continue
		}
		fmt.Fprintf(os.Stderr, "compare: %s: %d rooms of %d joined in %v\n", kind, rooms, m, time.Since(t0).Round(time.Millisecond))
		sides[k] = &side{c: c, l: l, sum: make([]tally, len(plans))}
	}
	round := total / time.Duration(o.rounds)
	for i, p := range plans {
		for k, sd := range sides {
			if sd == nil {
				continue
			}
			if err := p.warm(sd.l); err != nil {
				fail(k, fmt.Errorf("warm-up: %w", err))
				continue
			}
			sd.l.reset()
		}
		for r := range o.rounds {
			// Each round starts one server later, so that whatever the
			// previous server's round leaves behind (the load generator's
			// garbage, a server finishing its writes) falls on every
			// server in turn.
			for j := range sides {
				k := (j + r) % len(sides)
				sd := sides[k]
				if sd == nil {
					continue
				}
				t, err := o.measure(sd.c, sd.l, func() error { return p.drive(sd.l, round) })
				if err != nil {
					fail(k, err)
					continue
				}
				sd.sum[i].add(t)
			}
		}
		for k, sd := range sides {
			if sd == nil {
				continue
			}
			// The histograms were not reset between rounds: they hold
			// every round's deliveries.
			r, err := sd.sum[i].result(sd.c, sd.l.latency())
			if err != nil {
				fail(k, err)
				continue
			}
			r.server = kinds[k]
			out[k][i] = r
			fmt.Fprintf(os.Stderr, "compare: %s %s: %.0f msgs/s, p99 %v, %.0f per CPU-s, %.1f reads and %.1f writes per 100, CPU busy %.0f%% server, %.0f%% load\n",
				kinds[k], p.name, r.msgsPerSec, r.lat.Quantile(0.99), r.perCPU, r.reads, r.writes, 100*r.serverBusy, 100*r.loadBusy)
		}
	}
	return out
}

// Without -window, a room keeps autoWindow messages in flight, or fewer
// where that would make more than maxDeliveriesInFlight deliveries owed
// at once, but never fewer than minWindow. A thousand messages keep either
// server busy in small rooms; in big ones each message is work enough, and
// a million deliveries in flight would only measure queueing.
const (
	autoWindow            = 1024
	minWindow             = 64
	maxDeliveriesInFlight = 64 << 10
)

// inFlight returns the window and the write batch of a room of m.
func (o *options) inFlight(m int) (window, batch int) {
	window = o.window
	if window == 0 {
		window = min(autoWindow, max(minWindow, maxDeliveriesInFlight/max(m-1, 1)))
	}
	batch = o.batch
	if batch == 0 {
		batch = window
	}
	return window, batch
}

func (o *options) describeInFlight() string {
	var w, b string
	if o.window == 0 {
		w = fmt.Sprintf("%d messages in flight (at most %d deliveries, at least %d messages)", autoWindow, maxDeliveriesInFlight, minWindow)
	} else {
		w = fmt.Sprintf("%d messages in flight", o.window)
	}
	switch o.batch {
	case 0:
		b = "the sender writes all it may send in one system call"
	case 1:
		b = "one system call a message"
	default:
		b = fmt.Sprintf("up to %d messages a system call", o.batch)
	}
	return w + ", " + b
}

// tally is what a cell's figures are made of, summed over its rounds.
type tally struct {
	n                     uint64        // deliveries
	elapsed, server, self time.Duration // wall time, the server's CPU, the load generator's
	reads, writes         uint64        // the server's system calls
}

func (t *tally) add(u tally) {
	t.n += u.n
	t.elapsed += u.elapsed
	t.server += u.server
	t.self += u.self
	t.reads += u.reads
	t.writes += u.writes
}

// result turns t into a cell's figures, with lat the latencies of its
// deliveries and c's peak RSS.
func (t tally) result(c *child, lat *bench.Histogram) (result, error) {
	hwm, err := c.status("VmHWM")
	if err != nil {
		return result{}, err
	}
	return t.figures(lat, hwm), nil
}

func (t tally) figures(lat *bench.Histogram, hwm int64) result {
	n, secs := float64(t.n), t.elapsed.Seconds()
	r := result{msgsPerSec: n / secs, lat: lat, hwm: hwm,
		serverBusy: t.server.Seconds() / secs, loadBusy: t.self.Seconds() / secs}
	if t.server > 0 {
		r.perCPU = n / t.server.Seconds()
	}
	if n > 0 {
		r.reads, r.writes = float64(t.reads)*100/n, float64(t.writes)*100/n
	}
	return r
}

// measure runs drive, waits for its deliveries, and tallies the figures
// of that stretch.
func (o *options) measure(c *child, l *load, drive func() error) (tally, error) {
	before := l.received.Load()
	cpu0, err := c.cpu()
	if err != nil {
		return tally{}, err
	}
	r0, w0, err := c.syscalls()
	if err != nil {
		return tally{}, err
	}
	self0 := selfCPU()
	t0 := time.Now()
	if err := drive(); err != nil {
		return tally{}, err
	}
	if err := l.drain(60 * time.Second); err != nil {
		return tally{}, err
	}
	elapsed := time.Since(t0)
	self1 := selfCPU()
	cpu1, err := c.cpu()
	if err != nil {
		return tally{}, err
	}
	r1, w1, err := c.syscalls()
	if err != nil {
		return tally{}, err
	}
	return tally{n: l.received.Load() - before, elapsed: elapsed, server: cpu1 - cpu0, self: self1 - self0,
		reads: uint64(r1 - r0), writes: uint64(w1 - w0)}, nil
}

// fixedRate measures many rooms of two at a fixed total rate on a fresh
// server of every kind, in rounds taken in turn (inTurn). Each server
// first runs a second at the rate.
func (o *options) fixedRate(kinds []string, size int) [][]result {
	plan := cellPlan{
		name: "fixed rate",
		warm: func(l *load) error {
			l.size = size
			if err := l.fixedRate(o.rate, time.Second); err != nil {
				return err
			}
			return l.drain(30 * time.Second)
		},
		drive: func(l *load, d time.Duration) error { return l.fixedRate(o.rate, d) },
	}
	return o.inTurn(kinds, "rate", o.rooms, 2, 0, o.rateTime, []cellPlan{plan})
}

// idleTable measures the resident memory idle members cost each server.
func (o *options) idleTable(b *strings.Builder) {
	fmt.Fprintf(b, "Resident memory per idle member: %d connections joined in rooms of two, server VmRSS after a GC, before and after.\n\n", o.idle)
	fmt.Fprintln(b, "| server | RSS before | RSS after | bytes/member |")
	fmt.Fprintln(b, "|---|---:|---:|---:|")
	for _, kind := range o.servers {
		before, after, err := o.idleMemory(kind)
		if err != nil {
			fmt.Fprintf(os.Stderr, "compare: %s idle: %v\n", kind, err)
			fmt.Fprintf(b, "| %s | failed: %v | | |\n", kind, err)
			continue
		}
		fmt.Fprintf(b, "| %s | %.1f MiB | %.1f MiB | %.0f |\n", kind, mib(before), mib(after), float64(after-before)/float64(o.idle))
	}
}

func (o *options) idleMemory(kind string) (before, after int64, err error) {
	c, err := startChild(o, kind, "idle")
	if err != nil {
		return 0, 0, err
	}
	defer c.stop()
	if err := c.gc(); err != nil {
		return 0, 0, err
	}
	if before, err = c.status("VmRSS"); err != nil {
		return 0, 0, err
	}
	l, err := newLoad(protocolFor(kind), o.dialer(kind, c.addr), o.idle/2, 2, 0)
	if err != nil {
		return 0, 0, err
	}
	defer l.close()
	if err := c.gc(); err != nil {
		return 0, 0, err
	}
	after, err = c.status("VmRSS")
	if o.profile != "" && err == nil {
		err = c.heapProfile(filepath.Join(o.profile, kind+"-idle.heap"))
	}
	return before, after, err
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func writeTable(b *strings.Builder, groups []*group) {
	fmt.Fprintln(b, "| pattern | members | size | server | delivered msgs/s | p50 | p99 | p99.9 | deliveries per server CPU-s | server reads / writes per 100 deliveries | CPU busy: server / load generator | server peak RSS |")
	fmt.Fprintln(b, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, g := range groups {
		lead := fmt.Sprintf("| %s | %d | %d B", g.pattern, g.members, g.size)
		for _, r := range g.results {
			if r.err != nil {
				fmt.Fprintf(b, "%s | %s | failed: %s | | | | | | | |\n", lead, r.server, oneLine(r.err))
				continue
			}
			fmt.Fprintf(b, "%s | %s | %.0f | %s | %s | %s | %.0f | %.1f / %.1f | %.0f%% / %.0f%% | %.1f MiB |\n", lead, r.server, r.msgsPerSec,
				round(r.lat.Quantile(0.5)), round(r.lat.Quantile(0.99)), round(r.lat.Quantile(0.999)), r.perCPU, r.reads, r.writes,
				100*r.serverBusy, 100*r.loadBusy, mib(r.hwm))
		}
		for _, pair := range [][2]string{
			{kindNearchat, kindNATS}, {kindNearchat + "-tls", kindNATS + "-tls"},
			{kindNearchat, kindBaseline}, {kindNearchat + "-tls", kindNearchat},
		} {
			a, c := g.get(pair[0]), g.get(pair[1])
			if a == nil || c == nil {
				continue
			}
			fmt.Fprintf(b, "%s | **%s ÷ %s** | **%.2f×** | | **%.2f×** | | **%.2f×** | **%.2f×** | | |\n", lead, pair[0], pair[1],
				a.msgsPerSec/c.msgsPerSec, float64(a.lat.Quantile(0.99))/float64(c.lat.Quantile(0.99)), a.perCPU/c.perCPU,
				(a.reads+a.writes)/(c.reads+c.writes))
		}
	}
}

func oneLine(err error) string {
	s := err.Error()
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ReplaceAll(s, "|", "/")
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(100 * time.Nanosecond)
	}
}

// loadAverage is the machine's 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " / ")
}

// selfCPU is the CPU time this process (the load generator) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
