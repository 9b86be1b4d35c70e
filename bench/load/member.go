package load

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nearchat/client"
	"nearchat/pkg/proto"
)

// room is one synthetic room: its members and its outage bookkeeping.
type room struct {
	idx     int
	lead    string // member 0's name, the only one whose invitation is accepted
	members []*member
	failed  string // why it did not form; empty when it did

	mu        sync.Mutex
	id        string
	broken    map[int]brk // members whose connection broke or fell silent and who have not joined again
	downSince time.Time   // the earliest break of the members in broken
	hit       bool
}

// brk is one member's broken connection: when, and whether it only fell
// silent (client.ErrSilent: a ping unanswered past the liveness deadline).
type brk struct {
	at     time.Time
	silent bool
}

// member is one synthetic user: a whole client.Client.
type member struct {
	r    *room
	idx  int
	name string
	g    *gen

	cl     *client.Client
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	runErr error

	statuses chan client.Status // member 0 only: final statuses of its requests
	ready    chan struct{}      // closed when the room's session exists
	sess     atomic.Pointer[client.Session]
	evDone   chan struct{} // closed when events returned

	check *client.Checker
	sent  atomic.Uint64
}

// markBroken notes that member i's connection broke (silent: only fell
// silent) at now.
func (r *room) markBroken(i int, now time.Time, silent bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.broken[i]; ok {
		b.silent = b.silent && silent // a break outweighs a silence
		r.broken[i] = b
		return
	}
	if len(r.broken) == 0 {
		r.downSince = now
	}
	r.broken[i] = brk{at: now, silent: silent}
}

// markResumed ends member i's silence: its server answered again and
// nothing moved, so the silence was no time without a server (on a
// starved machine it is the liveness check's false alarm). It reports
// whether i was silent; a member whose connection broke is left to
// markJoined.
func (r *room) markResumed(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.broken[i]
	if !ok || !b.silent {
		return false
	}
	delete(r.broken, i)
	r.downSince = time.Time{}
	for _, o := range r.broken {
		if r.downSince.IsZero() || o.at.Before(r.downSince) {
			r.downSince = o.at
		}
	}
	return true
}

// markJoined ends member i's outage; when it was the last broken member
// it returns the room's outage.
func (r *room) markJoined(i int, now time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.broken[i]; !ok {
		return 0, false
	}
	delete(r.broken, i)
	if len(r.broken) > 0 {
		return 0, false
	}
	r.hit = true
	return now.Sub(r.downSince), true
}

// openOutage returns how long the room has been broken, if it is.
func (r *room) openOutage(now time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.broken) == 0 {
		return 0, false
	}
	return now.Sub(r.downSince), true
}

func (r *room) roomID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.id
}

// memberName is unique per run, room and member, and at most 32 bytes.
func (g *gen) memberName(r *room, i int) string { return fmt.Sprintf("u-%s-%d-%d", g.run, r.idx, i) }

// newMember creates and runs a member's client.
func (g *gen) newMember(r *room, i int) (*member, error) {
	m := &member{
		r: r, idx: i, g: g,
		name:   fmt.Sprintf("u-%s-%d-%d", g.run, r.idx, i),
		done:   make(chan struct{}),
		ready:  make(chan struct{}),
		evDone: make(chan struct{}),
		check:  client.NewChecker(),
	}
	if i == 0 {
		m.statuses = make(chan client.Status, 8)
	}
	opts := client.DefaultConfig()
	opts.Central, opts.Control, opts.User = g.cl.rest, g.cl.control, m.name
	opts.Agent = "chatload/1"
	opts.ProbeEvery = g.cfg.ProbeEvery
	opts.Session.Liveness = g.cfg.Liveness
	opts.Probe.Samples = 3
	opts.Probe.Concurrency = 2
	if g.noKeep {
		opts.Probe.Keep = 0
	}
	opts.BackoffMin, opts.BackoffMax = 50*time.Millisecond, time.Second
	opts.Logger = g.clientLog
	cl, err := client.New(opts)
	if err != nil {
		return nil, err
	}
	m.cl = cl
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		m.runErr = cl.Run(ctx)
	}()
	go m.events(ctx)
	return m, nil
}

// events handles the client's events, the room's included, until it stops.
func (m *member) events(ctx context.Context) {
	defer close(m.evDone)
	for {
		var ev client.Event
		select {
		case <-ctx.Done():
			return
		case ev = <-m.cl.Events():
		}
		m.handle(ev, time.Now())
	}
}

// handle counts one of the client's events, received at now.
func (m *member) handle(ev client.Event, now time.Time) {
	switch ev := ev.(type) {
	case client.Incoming:
		accept := ev.From == m.r.lead
		if err := m.cl.Answer(ev.Req, accept); err != nil {
			m.g.errorf("answer")
		}
	case client.Status:
		if m.statuses != nil && ev.Code.Final() {
			select {
			case m.statuses <- ev:
			default:
			}
		}
	case client.RoomReady:
		if m.sess.Load() != nil {
			m.g.errorf("second_room")
			return
		}
		m.r.mu.Lock()
		m.r.id = ev.Room
		m.r.mu.Unlock()
		m.sess.Store(ev.Session)
		close(m.ready)
	case client.RoomClosed:
		m.g.errorf("room_closed")
	case client.Disconnected:
		m.g.disconnects.Add(1)
	case client.Message:
		m.check.Observe(ev.From, ev.Num)
		m.g.lat.add(ev.Latency)
		m.g.window.add(ev.Latency)
		m.g.delivered.Add(1)
	case client.Broken:
		silent := errors.Is(ev.Err, client.ErrSilent)
		m.g.log.Info("member lost its server", "room", m.r.roomID(), "user", m.name, "server", ev.Server.ID, "epoch", ev.Epoch, "silent", silent, "err", ev.Err)
		m.r.markBroken(m.idx, now, silent)
		if !silent {
			m.g.broken.Add(1)
		}
	case client.Resumed:
		// The silent server answered: the room is whole again
		// without a move, and was never without a server.
		if m.r.markResumed(m.idx) {
			m.g.silences.Add(1)
		}
	case client.Moved:
		m.g.relocated(m, ev)
		if d, ok := m.r.markJoined(m.idx, now); ok {
			m.g.outage.add(d)
			m.g.noteOutage(m.r, d)
			m.g.log.Info("room whole again", "room", m.r.roomID(), "without_server", d, "from", ev.From.ID, "to", ev.To.ID, "epoch", ev.Epoch, "join_took", ev.Took)
		}
	case client.Missed:
		m.g.missed.Add(ev.Last - ev.First + 1)
	case client.Drained:
		if ev.TimedOut {
			m.g.errorf("drain_timeout")
		}
	case client.Error:
		if ev.Room == "" {
			m.g.errorf("central_error:%s", errKind(ev.Err))
		} else {
			m.g.errorf("session_error:%s", errKind(ev.Err))
		}
	}
}

// errKind names an error for the errors-by-kind table.
func errKind(err error) string {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe.Code.String()
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > maxKind {
		s = s[:maxKind]
	}
	return s
}

// maxKind bounds an error kind: long enough for a reason whole (a
// placement failure's counts run to about 60 characters), short enough
// that a kind stays one line of the table.
const maxKind = 100

// form creates the room's members, waits for their latency reports, has
// member 0 invite the others and waits for every session.
func (g *gen) form(ctx context.Context, r *room) error {
	r.lead = g.memberName(r, 0)
	for i := range g.cfg.Members {
		m, err := g.newMember(r, i)
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		r.members = append(r.members, m)
	}
	for _, m := range r.members {
		select {
		case <-m.cl.Reported():
		case <-m.done:
			return fmt.Errorf("register: %w", m.runErr)
		case <-ctx.Done():
			return fmt.Errorf("latency report: %w", ctx.Err())
		}
	}
	lead := r.members[0]
	var others []string
	for _, m := range r.members[1:] {
		others = append(others, m.name)
	}
	var last string
	for try := range 5 {
		if try > 0 {
			select {
			case <-time.After(time.Duration(try) * 300 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := lead.cl.Request(others...); err != nil {
			last = "request: " + err.Error()
			continue
		}
		var st client.Status
		select {
		case st = <-lead.statuses:
		case <-time.After(25 * time.Second):
			return errors.New("no final status in 25s")
		case <-ctx.Done():
			return ctx.Err()
		}
		if st.Code == proto.ReqAccepted {
			last = ""
			break
		}
		last = fmt.Sprintf("%s %s", st.Code, st.Detail)
	}
	if last != "" {
		return errors.New(last)
	}
	for _, m := range r.members {
		select {
		case <-m.ready:
		case <-time.After(15 * time.Second):
			return fmt.Errorf("%s: no room session 15s after REQ_ACCEPTED", m.name)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// send runs one member's sending until stop, at the configured rate.
func (m *member) send(stop <-chan struct{}, rnd *rand.Rand) {
	s := m.sess.Load()
	cfg := m.g.cfg
	mean := float64(time.Second) / cfg.Rate
	pad := ""
	t := time.NewTimer(0)
	defer t.Stop()
	first := true
	for {
		var gap time.Duration
		switch {
		case cfg.Arrivals == Uniform:
			gap = time.Duration(mean * (0.5 + rnd.Float64()))
		default:
			gap = time.Duration(mean * rnd.ExpFloat64())
		}
		if first {
			// Start each member at a random phase so the rooms do not
			// send in lockstep.
			gap = time.Duration(mean * rnd.Float64())
			first = false
		}
		t.Reset(gap)
		select {
		case <-stop:
			return
		case <-t.C:
		}
		text := fmt.Sprintf("%s #%d ", m.name, m.sent.Load()+1)
		if len(text) < cfg.Size {
			if len(pad) < cfg.Size {
				pad = strings.Repeat("x", cfg.Size)
			}
			text += pad[:cfg.Size-len(text)]
		}
		if _, err := s.Send(text); err != nil {
			m.g.errorf("send:%s", errKind(err))
			continue
		}
		m.sent.Add(1)
		m.g.sentTotal.Add(1)
	}
}

// stop ends the member's client and waits for it.
func (m *member) stop() {
	m.cancel()
	<-m.done
	<-m.evDone
}
