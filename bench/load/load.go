package load

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nearchat/client"
	"nearchat/pkg/connlimit"
)

// gen is one run's state.
type gen struct {
	cfg       Config
	log       *slog.Logger
	clientLog *slog.Logger
	run       string
	noKeep    bool // members dial for every probe (the open-file limit is short)
	cl        *cluster
	rooms     []*room

	lat     hist // every delivery, end to end
	window  hist // deliveries since the last progress line
	outage  hist
	handoff hist

	sentTotal   atomic.Uint64
	delivered   atomic.Uint64
	broken      atomic.Uint64
	disconnects atomic.Uint64
	missed      atomic.Uint64
	silences    atomic.Uint64 // silent connections that answered again, no move
	roomsUp     atomic.Int64

	mu          sync.Mutex
	errs        map[string]int
	moves       map[string]int
	movesSeen   map[string]bool        // room id + epoch
	chaosLog    map[string][]chaosMark // by server ID, oldest first
	centralAt   time.Time
	chaosDone   map[string]int
	centralDown []Millis
	centralStop []Millis
	worst       time.Duration
	worstRoom   string
	hitRooms    map[*room]bool
}

type chaosMark struct {
	kind ChaosKind
	at   time.Time
}

// causeWindow is how long after a chaos action a move is blamed on it.
const causeWindow = 30 * time.Second

func (g *gen) errorf(format string, a ...any) {
	k := fmt.Sprintf(format, a...)
	g.mu.Lock()
	g.errs[k]++
	g.mu.Unlock()
}

func (g *gen) relocated(m *member, ev client.Moved) {
	g.handoff.add(ev.Took)
	now := time.Now()
	key := fmt.Sprintf("%s/%d", ev.Room, ev.Assign.Epoch)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.movesSeen[key] {
		return
	}
	g.movesSeen[key] = true
	// Blame the newest action on the previous server taken before Central
	// sent the Assign, so a drain that follows a kill of the same server
	// does not take the kill's moves.
	assigned := now.Add(-ev.Took)
	cause := ""
	var mark *chaosMark
	for i, mk := range g.chaosLog[ev.Assign.Prev] {
		if !mk.at.After(assigned) {
			mark = &g.chaosLog[ev.Assign.Prev][i]
		}
	}
	if ev.From.ID == ev.To.ID {
		// A member whose connection broke joined the same server again
		// (Central confirmed the server): no room changed servers.
		cause = "rejoin, same server"
	} else if mark != nil && now.Sub(mark.at) < causeWindow {
		cause = string(mark.kind)
	} else if !g.centralAt.IsZero() && now.Sub(g.centralAt) < causeWindow {
		cause = string(ChaosCentral)
	} else {
		reason, _, _ := strings.Cut(ev.Assign.Reason, ":")
		cause = "other: " + reason
	}
	g.moves[cause]++
}

func (g *gen) noteOutage(r *room, d time.Duration) {
	id := r.roomID()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hitRooms[r] = true
	if d > g.worst {
		g.worst, g.worstRoom = d, id
	}
}

func (g *gen) movesSoFar() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.movesSeen)
}

func (g *gen) errCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, v := range g.errs {
		n += v
	}
	return n
}

// Run performs one load run as cfg describes and returns its report. The
// error is about the run itself (bad config, no chat server could start);
// a run that counted lost messages returns a Report whose OK is false.
// Safe for concurrent use, though two runs share the machine's CPUs.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("load: config: %w", err)
	}
	var rb [3]byte
	_, _ = crand.Read(rb[:])
	g := &gen{
		cfg: cfg, log: cfg.Logger, run: hex.EncodeToString(rb[:]),
		errs: map[string]int{}, moves: map[string]int{}, movesSeen: map[string]bool{},
		chaosLog: map[string][]chaosMark{}, chaosDone: map[string]int{}, hitRooms: map[*room]bool{},
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Central == "" && cfg.Secret == "" {
		g.cfg.Secret = "load-" + g.run
	}
	logDir, made := cfg.LogDir, false
	if logDir == "" {
		d, err := os.MkdirTemp("", "chatload-")
		if err != nil {
			return nil, err
		}
		logDir, made = d, true
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	// Every member holds a room connection, a control connection, a REST
	// connection now and then, and either a probe connection to each
	// server it probes every round (rtt.Config.Keep, at most 6) or up to
	// the 2 probes it runs at once (member.go), all in this process. The
	// Go runtime has raised the soft open-file limit to the hard one
	// (go.dev/issue/46279); raise the hard one too where we may (root
	// with CAP_SYS_RESOURCE; the servers and Central we start inherit
	// it). Short of that, the members dial for every probe as they did
	// before they kept connections, and if even that does not fit, say so.
	probed := 6
	if cfg.Servers > 0 {
		probed = min(cfg.Servers, probed)
	}
	members := uint64(cfg.Rooms * cfg.Members)
	keep, bare := members*uint64(3+probed)+1024, members*(3+2)+1024
	lim, err := connlimit.RaiseNoFile(keep)
	if lim < keep {
		g.noKeep = true
		g.progress("open-file limit %d: below the %d descriptors for kept probe connections; members dial for every probe", lim, keep)
	}
	if err != nil || lim < bare {
		g.log.Warn("open-file limit below what this run may need", "limit", lim, "want", bare, "err", err)
		g.progress("open-file limit %d, below the %d descriptors this run may need (raise the hard limit: ulimit -Hn)", lim, bare)
	}
	rep, err := g.runIn(ctx, logDir)
	if made && err == nil && rep.OK() && !cfg.KeepLogs {
		os.RemoveAll(logDir)
	} else if rep != nil || err != nil {
		g.progress("logs kept in %s", logDir)
	}
	return rep, err
}

func (g *gen) progress(format string, a ...any) {
	if g.cfg.Progress != nil {
		fmt.Fprintf(g.cfg.Progress, format+"\n", a...)
	}
}

func (g *gen) runIn(ctx context.Context, logDir string) (*Report, error) {
	cfg := g.cfg
	cl, err := newCluster(cfg, g.log, logDir)
	if err != nil {
		return nil, err
	}
	g.cl = cl
	defer cl.close()
	if g.cfg.Logger == nil {
		if l := cl.fileLogger("chatload", slog.LevelInfo); l != nil {
			g.log = l
		}
	}
	g.clientLog = cl.fileLogger("clients", slog.LevelWarn)
	for range cfg.Servers {
		if _, err := cl.addServer(ctx); err != nil {
			return nil, err
		}
	}
	g.progress("cluster up: Central %s (control %s), chat servers %s; run %s",
		cl.rest, cl.control, strings.Join(cl.Running(), " "), g.run)

	rep := &Report{
		Rooms: cfg.Rooms, Members: cfg.Members, Rate: cfg.Rate, Duration: ms(cfg.Duration),
		Servers: len(cl.Running()), Chaos: ChaosString(cfg.Chaos),
	}
	phase := atomic.Value{}
	phase.Store("setup")
	var phaseStart atomic.Int64
	phaseStart.Store(time.Now().UnixNano())
	progDone := make(chan struct{})
	progStop := make(chan struct{})
	go func() {
		defer close(progDone)
		g.progressLoop(progStop, &phase, &phaseStart)
	}()
	defer func() {
		close(progStop)
		<-progDone
	}()

	// Form the rooms.
	setupStart := time.Now()
	sctx, scancel := context.WithTimeout(ctx, cfg.SetupTimeout)
	sem := make(chan struct{}, cfg.SetupConcurrency)
	var wg sync.WaitGroup
	g.rooms = make([]*room, cfg.Rooms)
	for i := range g.rooms {
		g.rooms[i] = &room{idx: i, broken: map[int]brk{}}
	}
	for _, r := range g.rooms {
		select {
		case sem <- struct{}{}:
		case <-sctx.Done():
		}
		if sctx.Err() != nil {
			r.failed = "setup time out"
			g.errorf("setup:timeout")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := g.form(sctx, r); err != nil {
				r.failed = err.Error()
				g.errorf("setup:%s", errKind(err))
				g.log.Warn("room did not form", "room", r.idx, "err", err)
				return
			}
			g.roomsUp.Add(1)
		}()
	}
	wg.Wait()
	scancel()
	defer g.stopMembers()
	rep.SetupTook = ms(time.Since(setupStart))
	rep.RoomsUp = int(g.roomsUp.Load())
	if rep.RoomsUp == 0 {
		return rep, errors.New("load: no room formed")
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}

	// Send, with chaos beside.
	phase.Store("load")
	g.window.take()
	sendStart := time.Now()
	phaseStart.Store(sendStart.UnixNano())
	stop := make(chan struct{})
	var senders sync.WaitGroup
	seed := rand.Uint64()
	for _, r := range g.rooms {
		if r.failed != "" {
			continue
		}
		for _, m := range r.members {
			senders.Add(1)
			rnd := rand.New(rand.NewPCG(seed, uint64(r.idx*MaxMembers+m.idx)))
			go func() {
				defer senders.Done()
				m.send(stop, rnd)
			}()
		}
	}
	chaosFin := make(chan struct{})
	go func() {
		defer close(chaosFin)
		g.chaosLoop(ctx, stop, sendStart)
	}()
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	close(stop)
	senders.Wait()
	rep.SendFor = ms(time.Since(sendStart))
	<-chaosFin

	// Wait for every acknowledgement and delivery.
	phase.Store("settle")
	settleStart := time.Now()
	phaseStart.Store(settleStart.UnixNano())
	err = g.settle(ctx, cfg.Settle)
	rep.Settled = err == nil
	rep.SettleTook = ms(time.Since(settleStart))
	g.account(rep)
	return rep, nil
}

// settle waits, for at most bound, until settled. The bound holds even if
// a check never returns (Session.Stats of a session whose goroutine is
// stuck): the check runs on a goroutine of its own, left to end with the
// session.
func (g *gen) settle(ctx context.Context, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- waitUntil(ctx, bound, g.settled) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("load: not settled within %v: a session does not answer", bound)
	}
}

// settled reports whether every sender's messages are acknowledged and
// every receiver holds all of them.
func (g *gen) settled() bool {
	for _, r := range g.rooms {
		if r.failed != "" {
			continue
		}
		for _, m := range r.members {
			if st := m.sess.Load().Stats(); st.Unacked > 0 {
				return false
			}
			for _, o := range r.members {
				if o != m && uint64(m.check.Count(o.name)) < o.sent.Load() {
					return false
				}
			}
		}
	}
	return true
}

// account fills in the report's counts.
func (g *gen) account(rep *Report) {
	now := time.Now()
	stats := g.allStats(statsBound)
	for _, r := range g.rooms {
		if r.failed != "" {
			continue
		}
		if d, open := r.openOutage(now); open {
			g.outage.add(d)
			g.noteOutage(r, d)
			g.errorf("room_still_broken")
		}
		for _, m := range r.members {
			n := m.sent.Load()
			rep.Sent += n
			rep.Expected += n * uint64(len(r.members)-1)
			if st, ok := stats[m]; !ok {
				g.errorf("session_stuck")
			} else if st.Sent != n {
				g.errorf("sent_mismatch")
			}
			for _, o := range r.members {
				if o != m {
					m.check.Expect(o.name, o.sent.Load())
				}
			}
			cr := m.check.Report()
			rep.Delivered += uint64(cr.Received)
			rep.Duplicated += uint64(cr.Duplicates)
			rep.OutOfOrder += uint64(cr.OutOfOrder)
			for _, n := range cr.Missing {
				rep.Lost += uint64(n)
			}
		}
	}
	rep.MissedReported = g.missed.Load()
	rep.Silences = g.silences.Load()
	rep.Latency = g.lat.dist()
	rep.Handoff = g.handoff.dist()
	rep.Outage = g.outage.dist()
	g.mu.Lock()
	defer g.mu.Unlock()
	rep.Moves = clone(g.moves)
	rep.OutageRooms = len(g.hitRooms)
	if g.worst > 0 {
		rep.WorstRoom = fmt.Sprintf("%s (%v)", g.worstRoom, fmtDur(g.worst))
	}
	rep.CentralDown = append([]Millis(nil), g.centralDown...)
	rep.CentralStop = append([]Millis(nil), g.centralStop...)
	rep.ChaosDone = clone(g.chaosDone)
	rep.Errors = clone(g.errs)
}

// statsBound is how long the final count waits for the sessions' Stats.
const statsBound = 5 * time.Second

// allStats asks every formed room's members for their session's Stats at
// once and returns those that answered within bound; a session whose
// goroutine is stuck is left out, and its asker ends with the session.
func (g *gen) allStats(bound time.Duration) map[*member]client.Stats {
	type answer struct {
		m  *member
		st client.Stats
	}
	var members []*member
	for _, r := range g.rooms {
		if r.failed == "" {
			members = append(members, r.members...)
		}
	}
	asked := len(members)
	ch := make(chan answer, asked) // an answer after bound never blocks
	for _, m := range members {
		go func() { ch <- answer{m, m.sess.Load().Stats()} }()
	}
	out := make(map[*member]client.Stats, asked)
	t := time.NewTimer(bound)
	defer t.Stop()
	for range asked {
		select {
		case a := <-ch:
			out[a.m] = a.st
		case <-t.C:
			return out
		}
	}
	return out
}

func clone(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// stopMembers stops every client, a few dozen at a time.
func (g *gen) stopMembers() {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, r := range g.rooms {
		for _, m := range r.members {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				m.stop()
			}()
		}
	}
	wg.Wait()
}

// progressLoop prints one line a second.
func (g *gen) progressLoop(stop <-chan struct{}, phase *atomic.Value, since *atomic.Int64) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastSent, lastDel uint64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		el := time.Since(time.Unix(0, since.Load())).Truncate(time.Second)
		sent, del := g.sentTotal.Load(), g.delivered.Load()
		w := g.window.take()
		var open time.Duration
		broken := 0
		if phase.Load() != "setup" {
			now := time.Now()
			for _, r := range g.rooms {
				if d, ok := r.openOutage(now); ok {
					broken++
					open = max(open, d)
				}
			}
		}
		g.mu.Lock()
		worst := g.worst
		g.mu.Unlock()
		g.progress("%-6s %5s  rooms %d/%d  sent %d (%d/s)  delivered %d/s  p50 %s p99 %s  moves %d  broken now %d  without server: max %s, open %s  errors %d",
			phase.Load(), el, g.roomsUp.Load(), g.cfg.Rooms, sent, sent-lastSent, del-lastDel,
			fmtDur(w.quantile(0.5)), fmtDur(w.quantile(0.99)), g.movesSoFar(), broken, fmtDur(worst), fmtDur(open), g.errCount())
		lastSent, lastDel = sent, del
	}
}

// chaosf prints a chaos line stamped with the wall clock, to match the
// logs of Central and the servers.
func (g *gen) chaosf(format string, a ...any) {
	g.progress("chaos %s  "+format, append([]any{time.Now().UTC().Format("15:04:05.000")}, a...)...)
}

// chaosLoop carries out the schedule until stop, one action at a time.
func (g *gen) chaosLoop(ctx context.Context, stop <-chan struct{}, start time.Time) {
	if len(g.cfg.Chaos) == 0 {
		return
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	last := time.Duration(-1)
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Since(start)
		for _, k := range due(g.cfg.Chaos, last, now) {
			select {
			case <-stop:
				return
			default:
			}
			if err := g.act(ctx, k); err != nil {
				g.errorf("chaos_%s", k)
				g.log.Warn("chaos action failed", "kind", k, "err", err)
				g.chaosf("%s failed: %v", k, err)
			}
		}
		last = now
	}
}

// act performs one chaos action and waits until the cluster is whole
// again (the victim restarted, the new Central has every server).
func (g *gen) act(ctx context.Context, k ChaosKind) error {
	mark := func(id string) {
		g.mu.Lock()
		g.chaosLog[id] = append(g.chaosLog[id], chaosMark{kind: k, at: time.Now()})
		g.mu.Unlock()
	}
	done := func() {
		g.mu.Lock()
		g.chaosDone[string(k)]++
		g.mu.Unlock()
	}
	switch k {
	case ChaosKill:
		id, err := g.cl.victim(ctx)
		if err != nil {
			return err
		}
		g.chaosf("SIGKILL %s", id)
		mark(id)
		return g.cl.kill(ctx, id, done)
	case ChaosDrain:
		id, err := g.cl.victim(ctx)
		if err != nil {
			return err
		}
		g.chaosf("SIGTERM (drain) %s", id)
		mark(id)
		done()
		return g.cl.drain(ctx, id)
	case ChaosAdd:
		if len(g.cl.Running()) >= g.cfg.MaxServers {
			return nil
		}
		id, err := g.cl.addServer(ctx)
		if err == nil {
			done()
			g.chaosf("started %s", id)
		}
		return err
	case ChaosCentral:
		g.chaosf("restarting Central")
		g.mu.Lock()
		g.centralAt = time.Now()
		g.mu.Unlock()
		stopped, down, err := g.cl.restartCentral(ctx)
		g.mu.Lock()
		g.centralDown = append(g.centralDown, ms(down))
		g.centralStop = append(g.centralStop, ms(stopped))
		g.mu.Unlock()
		if err == nil {
			done()
			g.chaosf("Central back after %v (the old one exited in %v)", fmtDur(down), fmtDur(stopped))
		}
		return err
	}
	return fmt.Errorf("unknown chaos kind %q", k)
}
