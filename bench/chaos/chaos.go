package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"nearchat/bench/cluster"
	"nearchat/pkg/bounds"
)

// Config is one harness run.
type Config struct {
	// Bin holds central, chatserver and chat.
	Bin string
	// Dir receives one log directory per scenario run.
	Dir string
	// Converge is how soon after the last fault every room must have
	// converged.
	Converge time.Duration
	// CentralRSS and ServerRSS cap the resident memory of Central and of
	// each chat server, sampled through the run.
	CentralRSS, ServerRSS int64
	// Rate is each bot's messages per second.
	Rate float64
	// Hold is how long the long faults last: a slow reader reads slowly
	// for Hold, a stalled reader stops for Hold/2. make chaos holds them
	// for a minute; the short run in make test scales them down.
	Hold time.Duration
}

// DefaultConfig returns the caps and timings the README states.
func DefaultConfig() Config {
	return Config{Bin: "bin", Converge: 5 * time.Second, CentralRSS: 32 << 20, ServerRSS: 64 << 20, Rate: 20, Hold: time.Minute}
}

// MaxRSSCap bounds CentralRSS and ServerRSS: a terabyte, far past any
// machine this runs on and far from where the bytes overflow int64.
const MaxRSSCap = 1 << 40

// Validate reports the first setting out of range as a *bounds.Error
// naming the bin/chaos flag that sets it, the value and the range (the
// RSS caps in MiB, as the flags take them).
// bin/chaos calls it before running any scenario and exits 2.
// It only reads c: safe for concurrent use.
func (c *Config) Validate() error {
	return bounds.First(
		// The stalled reader stops for Hold/2: under a second, a scenario's
		// fault ends before the room can notice it.
		bounds.Range("hold", c.Hold, time.Second, time.Hour),
		bounds.Range("converge", c.Converge, 10*time.Millisecond, time.Hour),
		bounds.Range("central-rss", c.CentralRSS>>20, 1, MaxRSSCap>>20),
		bounds.Range("server-rss", c.ServerRSS>>20, 1, MaxRSSCap>>20),
	)
}

// Result is what one scenario run found.
type Result struct {
	Scenario   string           `json:"scenario"`
	Seed       uint64           `json:"seed"`
	Pass       bool             `json:"pass"`
	Violations []string         `json:"violations,omitempty"`
	Error      string           `json:"error,omitempty"` // the harness itself failed
	ConvergeMS float64          `json:"converge_ms"`     // after the last fault; -1 if never
	Received   int              `json:"received"`
	Missed     int              `json:"missed"`
	MaxRSS     map[string]int64 `json:"max_rss_bytes"`
	Seconds    float64          `json:"seconds"`
	Logs       string           `json:"logs"`
}

// Line is the result as one line of text.
func (r Result) Line() string {
	status := "PASS"
	if !r.Pass {
		status = "FAIL"
	}
	var rss []string
	for _, k := range sortedKeys(r.MaxRSS) {
		rss = append(rss, fmt.Sprintf("%s=%dMiB", k, r.MaxRSS[k]>>20))
	}
	conv := "never"
	if r.ConvergeMS >= 0 {
		conv = fmt.Sprintf("%.0fms", r.ConvergeMS)
	}
	s := fmt.Sprintf("%s %-26s seed=%-20d %5.1fs converged=%s received=%d missed=%d rss[%s]",
		status, r.Scenario, r.Seed, r.Seconds, conv, r.Received, r.Missed, strings.Join(rss, " "))
	if r.Error != "" {
		s += "\n    harness error: " + r.Error
	}
	for _, v := range r.Violations {
		s += "\n    violation: " + v
	}
	if !r.Pass {
		s += "\n    logs: " + r.Logs
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// Env is the cluster one scenario runs on: Central, three chat servers
// s1..s3 (emulated RTTs 20, 40 and 60 ms from every bot, so rooms start
// on s1 and a move has a clear destination) and a room of alice (who
// asked), bob and carol, with a fault proxy on every link.
type Env struct {
	C    *cluster.Cluster
	Rng  *rand.Rand
	cfg  Config
	ctx  context.Context
	Room string

	// Proxies: chat servers (frames, shared by every member, rules per
	// user), server heartbeats to Central (raw HTTP), and per bot its
	// control link (frames) and REST link (raw HTTP).
	Chat, Beat    map[string]*Proxy
	Control, REST map[string]*Proxy
	// Rep is the Central replicas of a Replicas scenario; Etcd[c][m] the
	// proxy between Central c and etcd member m.
	Rep  *cluster.Replicas
	Etcd [][]*Proxy

	mu        sync.Mutex
	lastFault time.Time
	viol      []string
	log       func(string, ...any)
}

// Fault marks that a fault happened now: convergence is timed from the
// last one.
func (e *Env) Fault(format string, a ...any) {
	e.mu.Lock()
	e.lastFault = time.Now()
	e.mu.Unlock()
	e.log(format, a...)
}

// Violate records a violation a scenario finds on its own.
func (e *Env) Violate(format string, a ...any) {
	e.mu.Lock()
	e.viol = append(e.viol, fmt.Sprintf(format, a...))
	e.mu.Unlock()
}

// Heal removes every proxy rule.
func (e *Env) Heal() {
	for _, m := range []map[string]*Proxy{e.Chat, e.Beat, e.Control, e.REST} {
		for _, p := range m {
			p.Heal()
		}
	}
	for _, ps := range e.Etcd {
		for _, p := range ps {
			p.Heal()
		}
	}
	e.Fault("healed every link")
}

// Sleep waits d (or until the run is cancelled).
func (e *Env) Sleep(d time.Duration) error {
	select {
	case <-e.ctx.Done():
		return e.ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// Jitter returns a duration in [lo, hi) drawn from the seed.
func (e *Env) Jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(e.Rng.Int64N(int64(hi-lo)+1))
}

// Where returns the room's server and epoch as Central lists them.
func (e *Env) Where() (string, uint64, error) {
	cctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	rooms, err := e.C.API.Rooms(cctx, e.C.Secret())
	if err != nil {
		return "", 0, err
	}
	for _, r := range rooms {
		if r.ID == e.Room {
			return r.Server, r.Epoch, nil
		}
	}
	return "", 0, fmt.Errorf("Central lists no room %s", e.Room)
}

// AwaitMove waits for a move of any bot at or after event from.
func (e *Env) AwaitMove(from int, timeout time.Duration) (cluster.Event, error) {
	return e.C.Events.Await(e.ctx, from, timeout, cluster.Is("moved"))
}

// Scenario is one fault script.
type Scenario struct {
	Name string
	// What the scenario injects, for the listing.
	Doc string
	// ServerArgs and BotArgs are extra flags for every chat server and
	// bot of this scenario; HoldArgs, more server flags that scale with
	// Config.Hold.
	ServerArgs, BotArgs []string
	HoldArgs            func(hold time.Duration) []string
	// CentralArgs are extra flags for Central; later flags win, so they
	// may override the harness's own.
	CentralArgs []string
	// Before, when set, runs once every proxy is up and before the bots
	// start: faults the bots must meet from their first connection.
	Before func(e *Env)
	// Rate overrides Config.Rate when set.
	Rate float64
	// NoLoss makes any Missed, and any member's chat link breaking, a
	// violation too: the design's "back-pressure before loss" (a slow
	// member slows the senders before a buffer overflows) allows no loss
	// and no cut-off where every process stays up.
	NoLoss bool
	// Replicas runs three Centrals on three etcd members (see
	// replicas.go) instead of one Central; servers and bots get every
	// Central's address and no proxy on their links to Central.
	Replicas bool
	// Tickets has Central sign room tickets and the chat servers check
	// them (cluster.Options.Tickets); otherwise the servers run -insecure.
	Tickets bool
	Run     func(e *Env) error
	// Check, when set, looks at every bot event once the bots stopped
	// and reports what the scenario alone promises.
	Check func(e *Env, evs []cluster.Event)
}

var members = []string{"alice", "bob", "carol"}

var serverRTT = map[string]string{"s1": "20ms", "s2": "40ms", "s3": "60ms"}

// RunScenario runs sc once with seed on a fresh cluster and checks the
// invariants afterwards.
func RunScenario(ctx context.Context, cfg Config, sc Scenario, seed uint64, logf func(string, ...any)) Result {
	start := time.Now()
	res := Result{Scenario: sc.Name, Seed: seed, ConvergeMS: -1, MaxRSS: map[string]int64{}}
	res.Logs = filepath.Join(cfg.Dir, fmt.Sprintf("%s-%d", sc.Name, seed))
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// The scenario's own timeline goes to chaos.log beside the processes'
	// logs, so a failure can be read in order.
	if err := os.MkdirAll(res.Logs, 0o755); err == nil {
		if f, err := os.Create(filepath.Join(res.Logs, "chaos.log")); err == nil {
			defer f.Close()
			var mu sync.Mutex
			inner := logf
			logf = func(format string, a ...any) {
				inner(format, a...)
				mu.Lock()
				fmt.Fprintf(f, format+"\n", a...)
				mu.Unlock()
			}
		}
	}
	e := &Env{cfg: cfg, ctx: ctx, Rng: rand.New(rand.NewPCG(seed, uint64(len(sc.Name)))),
		Chat: map[string]*Proxy{}, Beat: map[string]*Proxy{}, Control: map[string]*Proxy{}, REST: map[string]*Proxy{},
		log: func(f string, a ...any) {
			logf("  %s %6.2fs "+f, append([]any{sc.Name, time.Since(start).Seconds()}, a...)...)
		}}
	err := e.run(sc, seed, &res)
	if err != nil {
		res.Error = err.Error()
	}
	res.Violations = append(res.Violations, e.viol...)
	res.Pass = err == nil && len(res.Violations) == 0
	res.Seconds = time.Since(start).Seconds()
	logf("%s", res.Line())
	return res
}

func (e *Env) run(sc Scenario, seed uint64, res *Result) error {
	ctx := e.ctx
	pseed := seed
	proxy := func(name, target string, frames bool) (*Proxy, error) {
		pseed++
		return NewProxy(name, target, frames, pseed)
	}
	opts := cluster.Options{Bin: e.cfg.Bin, Dir: res.Logs, CentralArgs: []string{
		"-scan", "1s", "-heartbeat", "500ms", "-offline-after", "3s", "-min-dwell", "2s",
		"-assign-retry", "300ms", "-assign-give-up", "5s"}, Tickets: sc.Tickets}
	opts.CentralArgs = append(opts.CentralArgs, sc.CentralArgs...)
	if sc.Replicas {
		if err := e.startReplicas(&opts, proxy); err != nil {
			return err
		}
		defer e.closeReplicas()
	}
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	e.C = c
	defer func() {
		c.Close()
		for _, m := range []map[string]*Proxy{e.Chat, e.Beat, e.Control, e.REST} {
			for _, p := range m {
				p.Close()
			}
		}
	}()
	for k, id := range []string{"s1", "s2", "s3"} {
		listen, err := cluster.FreeAddr()
		if err != nil {
			return err
		}
		if e.Chat[id], err = proxy(id, listen, true); err != nil {
			return err
		}
		central := "" // the cluster's
		if sc.Replicas {
			// Every replica, each server first trying another, so
			// that followers hold heartbeats too.
			central, _ = e.Rep.Rotated(k)
		} else {
			if e.Beat[id], err = proxy(id+"-central", c.REST, false); err != nil {
				return err
			}
			central = e.Beat[id].Addr()
		}
		// Later flags win: a scenario's ServerArgs may override these.
		args := append([]string{"-heartbeat", "500ms", "-drain-timeout", "3s"}, sc.ServerArgs...)
		if sc.HoldArgs != nil {
			args = append(args, sc.HoldArgs(e.cfg.Hold)...)
		}
		if _, err := c.AddServer(ctx, cluster.ServerOptions{ID: id, Listen: listen, Advertise: e.Chat[id].Addr(),
			Central: central, Args: args}); err != nil {
			return err
		}
	}
	var emu []string
	for _, id := range sortedKeys(serverRTT) {
		emu = append(emu, id+"="+serverRTT[id])
	}
	if sc.Before != nil {
		sc.Before(e)
	}
	rate := e.cfg.Rate
	if sc.Rate > 0 {
		rate = sc.Rate
	}
	from := c.Events.Len()
	// The invitees first, and the requester once they are registered:
	// it gives up on a peer Central does not know after a few tries.
	for _, i := range []int{1, 2, 0} {
		name := members[i]
		if i == 0 {
			for _, m := range members[1:] {
				if err := e.awaitReady(from, m); err != nil {
					return err
				}
			}
		}
		var rest, control string // the cluster's
		if sc.Replicas {
			// Every replica, each bot first trying another, so that
			// followers hold control connections and killing one
			// drops bots that must reconnect elsewhere.
			rest, control = e.Rep.Rotated(i)
		} else {
			if e.Control[name], err = proxy(name+"-control", c.Control, true); err != nil {
				return err
			}
			if e.REST[name], err = proxy(name+"-rest", c.REST, false); err != nil {
				return err
			}
			rest, control = e.REST[name].Addr(), e.Control[name].Addr()
		}
		role := []string{"-accept"}
		if i == 0 {
			role = []string{"-peer", strings.Join(members[1:], ",")}
		}
		args := append(append(role, "-v", "-probe-every", "1s", "-rate", fmt.Sprint(rate),
			"-emulate-rtt", strings.Join(emu, ",")), sc.BotArgs...)
		if _, err := c.StartBot(cluster.BotOptions{Name: name, REST: rest, Control: control, Args: args}); err != nil {
			return err
		}
	}
	for _, name := range members {
		ev, err := c.Events.Await(ctx, from, 45*time.Second, func(ev cluster.Event) bool {
			return ev.Bot == name && ev.Kind() == "joined"
		})
		if err != nil {
			return fmt.Errorf("%s never joined the room: %w", name, err)
		}
		e.Room = ev.Str("room")
	}
	e.log("room %s formed", e.Room)

	stopRSS := e.sampleRSS(res)
	defer stopRSS()
	if err := e.Sleep(time.Second); err != nil {
		return err
	}
	e.Fault("start")
	if err := sc.Run(e); err != nil {
		return fmt.Errorf("scenario: %w", err)
	}
	e.Heal()
	e.mu.Lock()
	last := e.lastFault
	e.mu.Unlock()
	var diff []string
	err = cluster.WaitFor(ctx, e.cfg.Converge, func() bool {
		diff = divergence(ctx, c)
		return len(diff) == 0
	})
	if err == nil {
		res.ConvergeMS = float64(time.Since(last).Microseconds()) / 1000
		e.log("converged %.0f ms after the last fault", res.ConvergeMS)
	} else {
		e.Violate("not converged %v after the last fault: %s", e.cfg.Converge, strings.Join(diff, "; "))
		// Give it longer, to tell "slow" from "never" in the report.
		if cluster.WaitFor(ctx, 10*time.Second, func() bool { return len(divergence(ctx, c)) == 0 }) == nil {
			res.ConvergeMS = float64(time.Since(last).Microseconds()) / 1000
		}
	}
	if err := e.Sleep(1500 * time.Millisecond); err != nil {
		return err
	}
	e.settle(time.Minute)
	// Stop every bot at once; each stops sending, lets its last messages
	// be acknowledged and prints its report.
	stopAt := time.Now()
	var wg sync.WaitGroup
	for _, b := range c.Bots() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.StopClean(20 * time.Second); err != nil {
				e.Violate("%v", err)
			}
		}()
	}
	wg.Wait()
	stopRSS()
	evs := c.Events.All()
	viol, recv, missed := delivery(evs, stopAt)
	res.Received, res.Missed = recv, missed
	if sc.NoLoss && missed > 0 {
		e.Violate("%d messages reported missed with every process up: back-pressure should have slowed the senders first", missed)
	}
	if sc.NoLoss {
		for i, ev := range evs {
			if ev.Kind() == "broken" && ev.At.Before(stopAt) && !resumed(ev, evs[i+1:]) {
				e.Violate("%s was cut off from %s with every process up: %s", ev.Bot, ev.Str("server"), ev.Str("err"))
			}
		}
	}
	if sc.Check != nil {
		sc.Check(e, evs)
	}
	for _, v := range viol {
		e.Violate("%s", v)
	}
	for name, b := range res.MaxRSS {
		limit := e.cfg.ServerRSS
		if name == "central" {
			limit = e.cfg.CentralRSS
		}
		if b > limit {
			e.Violate("%s's RSS reached %d MiB, over its cap of %d MiB", name, b>>20, limit>>20)
		}
	}
	return nil
}

// awaitReady waits for bot name's "ready" event (it registered with
// Central). A bot that exits before it is started once more: on a loaded
// machine its start-up check of Central's control port can fail; the
// retry is logged, and a second failure ends the run.
func (e *Env) awaitReady(from int, name string) error {
	b := e.C.Bot(name)
	for try := 1; ; try++ {
		ready := make(chan error, 1)
		go func() {
			_, err := e.C.Events.Await(e.ctx, from, 30*time.Second, func(ev cluster.Event) bool {
				return ev.Bot == name && ev.Kind() == "ready"
			})
			ready <- err
		}()
		select {
		case err := <-ready:
			if err != nil {
				return fmt.Errorf("%s never registered with Central: %w", name, err)
			}
			return nil
		case <-b.Exited():
		}
		if try == 2 {
			return fmt.Errorf("%s exited twice before it registered with Central (see %s.log)", name, name)
		}
		e.log("%s exited before it registered with Central (see %s.log); starting it again", name, name)
		if err := b.Start(); err != nil {
			return err
		}
	}
}

// settle waits, up to timeout, until no running bot lags: each has
// received (or been told it missed) every other running bot's messages
// sent more than a second ago. A bot's "sent" is when its client took the
// message, and after a long stall a sender's client may hold seconds of
// messages that flow control keeps back; they are owed, and the bots must
// not stop before they arrive. A backlog that never drains is left to the
// delivery check to report.
func (e *Env) settle(timeout time.Duration) {
	running := map[string]int{}
	for _, b := range e.C.Bots() {
		if b.Running() {
			running[b.Name] = b.Starts()
		}
	}
	sent := map[string][]sentMsg{} // "sender inc": its messages so far
	got := map[string]uint64{}     // "receiver|sender inc" (or "receiver|sender" for a Missed)
	pos := 0
	scan := func() {
		evs := e.C.Events.All()
		for _, ev := range evs[pos:] {
			if running[ev.Bot] != ev.Run {
				continue
			}
			switch ev.Kind() {
			case "sent":
				k := ev.Bot + " " + ev.Str("inc")
				sent[k] = append(sent[k], sentMsg{num: uint64(ev.Num("num")), at: ev.At})
			case "received":
				k := ev.Bot + "|" + ev.Str("from") + " " + ev.Str("inc")
				got[k] = max(got[k], uint64(ev.Num("num")))
			case "missed":
				k := ev.Bot + "|" + ev.Str("from")
				got[k] = max(got[k], uint64(ev.Num("last")))
			}
		}
		pos = len(evs)
	}
	start := time.Now()
	err := cluster.WaitFor(e.ctx, timeout, func() bool {
		scan()
		old := time.Now().Add(-time.Second)
		for s, msgs := range sent {
			i := sort.Search(len(msgs), func(i int) bool { return msgs[i].at.After(old) })
			if i == 0 {
				continue
			}
			last := msgs[i-1].num
			from, _, _ := strings.Cut(s, " ")
			for r := range running {
				if r != from && got[r+"|"+s] < last && got[r+"|"+from] < last {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		e.log("some bot still lags %v after the heal; stopping anyway", timeout)
		return
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		e.log("the last backlog drained in %v", d.Round(time.Millisecond))
	}
}

// sampleRSS records the largest RSS of Central and each chat server until
// the returned function is called.
func (e *Env) sampleRSS(res *Result) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	var mu sync.Mutex
	sample := func() {
		mu.Lock()
		defer mu.Unlock()
		if p := e.C.Central(); p != nil {
			res.MaxRSS["central"] = max(res.MaxRSS["central"], rss(p.Pid()))
		}
		for _, s := range e.C.Servers() {
			res.MaxRSS[s.ID] = max(res.MaxRSS[s.ID], rss(s.Pid()))
		}
	}
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stop); <-done }) }
}

// Kill SIGKILLs a chat server and records the fault.
func (e *Env) Kill(id string) error {
	s := e.C.Server(id)
	if s == nil {
		return fmt.Errorf("no server %s", id)
	}
	e.Fault("SIGKILL %s", id)
	return s.Kill()
}

// Drain SIGTERMs a chat server (it asks Central to move its rooms, then
// exits) without waiting for the exit.
func (e *Env) Drain(id string) error {
	s := e.C.Server(id)
	if s == nil {
		return fmt.Errorf("no server %s", id)
	}
	e.Fault("drain %s (SIGTERM)", id)
	return s.Signal(syscall.SIGTERM)
}

// Restart starts a stopped server again once its old process is gone.
func (e *Env) Restart(id string) error {
	s := e.C.Server(id)
	if s == nil {
		return fmt.Errorf("no server %s", id)
	}
	if ex := s.Exited(); ex != nil {
		select {
		case <-ex:
		case <-time.After(10 * time.Second):
			return errors.New(id + " did not exit")
		}
	}
	e.Fault("restart %s", id)
	return e.C.StartServer(e.ctx, id)
}

// resumed reports whether broken, a bot's report that its connection fell
// silent (liveness), was followed by that connection answering again (the
// bot's resumed event, same server and epoch) with no move between: a link
// that only went quiet for a while, not a member cut off.
func resumed(broken cluster.Event, later []cluster.Event) bool {
	if b, _ := broken.Fields["silent"].(bool); !b {
		return false
	}
	for _, ev := range later {
		if ev.Bot != broken.Bot {
			continue
		}
		switch ev.Kind() {
		case "resumed":
			return ev.Str("server") == broken.Str("server") && ev.Num("epoch") == broken.Num("epoch")
		case "moved", "broken":
			return false
		}
	}
	return false
}
