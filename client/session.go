package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"nearchat/pkg/proto"
	"nearchat/pkg/rtt"
	"nearchat/pkg/wire"
)

// SessionConfig tunes a Session. Start from DefaultSessionConfig.
type SessionConfig struct {
	// Dialer opens chat-server connections; nil means a plain net.Dialer.
	Dialer rtt.Dialer
	// Agent is announced in Hello.
	Agent string
	// Window is how many acknowledged messages are kept to answer Resend.
	Window int
	// MaxUnacked bounds unacknowledged messages; Send fails beyond it.
	MaxUnacked int
	// SendWindow bounds the bytes of messages written to the server and
	// not yet acknowledged. Later messages wait in the session (Send still
	// succeeds) and go out as Acks return. The server withholds Acks while
	// a member of the room is behind, so this is how a slow member slows
	// the senders before any buffer overflows.
	SendWindow int
	// HoldBack is how long a gap in a sender's numbers may wait before the
	// sender is asked to send again.
	HoldBack time.Duration
	// GapTimeout is how long a gap may wait before it is given up and
	// reported as Missed.
	GapTimeout time.Duration
	// MaxHeld bounds the messages held back behind one sender's gap.
	MaxHeld int
	// DrainTimeout bounds how long the old connection stays open after a
	// move.
	DrainTimeout time.Duration
	// HandshakeTimeout bounds the connect to a chat server, and then the
	// wait for its Welcome (Hello and Join go out together).
	HandshakeTimeout time.Duration
	// IdleTimeout: a connection silent this long is considered dead; the
	// session pings every third of it. 0 disables both.
	IdleTimeout time.Duration
	// Liveness is the fast check of the room's current connection: when
	// it has been silent for max(Liveness/3, 2*RTT) the session pings, and
	// when that ping goes unanswered (no frame at all) for
	// max(Liveness, 4*RTT, 2*(RTT+4*RTTVAR)) the connection is reported
	// Broken, RTT and RTTVAR being this connection's own smoothed Ping/Pong
	// round trip and deviation (as TCP keeps them). The report says the
	// connection is silent, not broken, and Central weighs it less (on a
	// starved machine every member of a room goes silent at once); a
	// check that runs late looks again before judging. A server that
	// speaks protocol version 6 is asked (proto.Beat) to write something
	// whenever the connection has been quiet for max(Liveness/2, 2*RTT);
	// silence for that plus max(5/6 Liveness, 4*RTT, 2*(RTT+4*RTTVAR))
	// then means what the unanswered ping did, found as soon, and the
	// session pings only when the RTT has had no sample for 500 ms (the
	// Acks of its messages time it too). 0 leaves only IdleTimeout.
	Liveness time.Duration
	// RTTHint, if set, gives the RTT and spread measured to a server by
	// other means (the Client's prober): a new connection's liveness
	// deadline starts from them rather than from its handshake alone.
	RTTHint func(server string) (rtt, spread time.Duration, ok bool)
	// EventBuffer is the number of undelivered events past which the
	// session stops reading from the server until the user catches up.
	// The Events channel itself holds fewer (at most eventChan); the rest
	// wait in the session.
	EventBuffer int
	// OnBroken, if set, is called on the session goroutine when the room's
	// connection breaks (as the Broken event is emitted), and once more
	// when a connection that fell silent (err wraps ErrSilent) then breaks
	// for good. It must not block; the controller uses it to tell Central
	// at once.
	OnBroken func(server proto.ServerRef, epoch uint64, err error)
	// Logger; nil discards.
	Logger *slog.Logger

	// beforeRead, if set, runs before each read of a connection's reader
	// goroutine. Tests set it to hold the reader, as a starved process
	// would be held.
	beforeRead func()
}

// DefaultSessionConfig returns the defaults used by the terminal client and bot.
func DefaultSessionConfig() SessionConfig {
	return SessionConfig{
		Agent:            "chat/1",
		Window:           1024,
		MaxUnacked:       8192,
		SendWindow:       64 << 10,
		HoldBack:         300 * time.Millisecond,
		GapTimeout:       10 * time.Second,
		MaxHeld:          4096,
		DrainTimeout:     3 * time.Second,
		HandshakeTimeout: 5 * time.Second,
		IdleTimeout:      15 * time.Second,
		Liveness:         300 * time.Millisecond,
		EventBuffer:      1024,
	}
}

func (c *SessionConfig) validate() error {
	var errs []error
	for _, v := range []struct {
		name string
		v    int
	}{{"window", c.Window}, {"max unacked", c.MaxUnacked}, {"send window", c.SendWindow}, {"max held", c.MaxHeld}, {"event buffer", c.EventBuffer}} {
		if v.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: must be positive", v.name, v.v))
		}
	}
	for _, v := range []struct {
		name string
		v    time.Duration
	}{{"hold back", c.HoldBack}, {"gap timeout", c.GapTimeout}, {"drain timeout", c.DrainTimeout}, {"handshake timeout", c.HandshakeTimeout}} {
		if v.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", v.name, v.v))
		}
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle timeout %v: must not be negative", c.IdleTimeout))
	}
	if c.Liveness != 0 && (c.Liveness < MinLiveness || c.Liveness > MaxLiveness) {
		errs = append(errs, fmt.Errorf("Liveness %v: want 0 (off) or %v to %v", c.Liveness, MinLiveness, MaxLiveness))
	}
	if c.GapTimeout < c.HoldBack {
		errs = append(errs, fmt.Errorf("gap timeout %v shorter than hold back %v", c.GapTimeout, c.HoldBack))
	}
	if len(errs) > 0 {
		return fmt.Errorf("client: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

var (
	// ErrClosed is returned by a Session's methods after Close.
	ErrClosed = errors.New("client: session closed")
	// ErrBackpressure is returned by Send when MaxUnacked messages await
	// acknowledgement.
	ErrBackpressure = errors.New("client: too many unacknowledged messages")
	// ErrSilent is the Broken error of a connection that left a ping
	// unanswered past the liveness deadline (SessionConfig.Liveness).
	ErrSilent = errors.New("client: the server left a ping unanswered past the liveness deadline")
)

// Stats is a snapshot of a Session's counters.
type Stats struct {
	Server     proto.ServerRef
	Epoch      uint64
	Connected  bool   // joined on a live connection
	Sent       uint64 // last message number handed out
	Unacked    int
	Received   int // messages delivered as events
	Duplicates int // messages dropped as duplicates
	Resent     int // messages sent again (after a move or on Resend)
	Suppressed int // Resend asks not answered: an answer to the same ask was just sent, or the asker had its share (shareLeft)
	Held       int // messages waiting behind a gap
	Missed     int // messages reported as missed
}

// Session is one user's membership of one room, across servers.
type Session struct {
	cfg        SessionConfig
	room, user string
	log        *slog.Logger

	calls  chan func()
	frames chan inbound
	events chan Event
	quit   chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup

	moveMu    sync.Mutex
	closeOnce sync.Once

	// Owned by the loop goroutine.
	cur, old, pending *link
	epoch             uint64
	inc               uint64 // this session's incarnation, see proto.Join
	out               *outbox
	in                *inbox
	sentUpTo          uint64            // highest number ever written to a connection
	inflight          int               // bytes of the messages up to sentUpTo not acknowledged
	since             map[string]uint64 // last room seq seen, by server address
	drainUntil        time.Time
	movedAt           time.Time // when the current drain began
	nextPing          time.Time
	nextLive          time.Time // next liveness check of cur
	moveWait          chan error
	answered          map[string]answer        // last Resend answered, by asker
	shares            map[string]*rate.Limiter // messages resent, by asker (shareLeft)
	queue             []Event                  // events not yet taken from the channel
	paused            bool                     // not reading frames: the user has EventBuffer events to take
	wakeups           int                      // loop iterations, for tests that check it idles
	armedAt           time.Time                // when the loop's timer fires (zero: stopped or fired)
	stats             Stats
}

// answer records a Resend answered: the asker was sent every kept message
// of inc after after up to upTo, at time at.
type answer struct {
	inc, after, upTo uint64
	at               time.Time
}

// answering is a Resend being answered on a link: by is sent our messages
// next..upTo (upTo was the last written when it asked; later ones reach it
// live), as the SendWindow allows.
type answering struct {
	by                string
	after, next, upTo uint64
}

type inbound struct {
	l   *link
	m   wire.Message
	err error
}

// Open joins room as user on server (epoch and ticket as Central assigned
// them) and returns the running Session. ctx bounds the join only.
func Open(ctx context.Context, cfg SessionConfig, server proto.ServerRef, room, user string, epoch uint64, ticket []byte) (*Session, error) {
	if err := proto.CheckRoom(room); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := proto.CheckUser(user); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Session{
		cfg: cfg, room: room, user: user,
		log:    log.With("room", room, "user", user),
		calls:  make(chan func()),
		frames: make(chan inbound, framesChan),
		events: make(chan Event, min(cfg.EventBuffer-1, eventChan)),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		out:    newOutbox(cfg.Window),
		in:     newInbox(cfg.HoldBack, cfg.GapTimeout, cfg.MaxHeld),
		since:  make(map[string]uint64),
		// A later Session of the same user, in this process or after a
		// restart, numbers its messages in a larger incarnation.
		inc:      uint64(time.Now().UnixNano()),
		answered: make(map[string]answer),
		shares:   make(map[string]*rate.Limiter),
	}
	go s.run()
	if err := s.Move(ctx, server, epoch, ticket); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Room returns the room id. Safe for concurrent use.
func (s *Session) Room() string { return s.room }

// User returns the user name. Safe for concurrent use.
func (s *Session) User() string { return s.user }

// Events returns the channel of events; it is closed by Close. Safe for
// concurrent use.
func (s *Session) Events() <-chan Event { return s.events }

// call runs fn on the loop and waits for it.
func (s *Session) call(fn func()) error {
	ran := make(chan struct{})
	select {
	case s.calls <- func() { fn(); close(ran) }:
	case <-s.done:
		return ErrClosed
	}
	<-ran
	return nil
}

// Send numbers text as this member's next message and sends it, or holds
// it until the session is connected (after a break, or while a move is
// joining). It returns the message number. Safe for concurrent use.
func (s *Session) Send(text string) (uint64, error) {
	if len(text) > proto.MaxText {
		return 0, fmt.Errorf("client: message of %d bytes, limit %d", len(text), proto.MaxText)
	}
	var num uint64
	var err error
	if e := s.call(func() {
		if s.out.pending() >= s.cfg.MaxUnacked {
			err = ErrBackpressure
			return
		}
		num = s.out.add(text, time.Now().UnixNano()).Num
		s.flush()
	}); e != nil {
		return 0, e
	}
	return num, err
}

// Stats returns the session's counters. Safe for concurrent use.
func (s *Session) Stats() Stats {
	var st Stats
	if s.call(func() {
		st = s.stats
		if s.cur != nil {
			st.Server = s.cur.server
			st.Connected = s.cur.joined && !s.cur.dead && !s.cur.suspect
		}
		st.Epoch = s.epoch
		st.Sent = s.out.last
		st.Unacked = s.out.pending()
		st.Held = s.in.held()
	}) != nil {
		return Stats{}
	}
	return st
}

// Move relocates the session to server for epoch, make-before-break (see
// the package doc). It returns once the new server has answered Joined;
// the old connection drains in the background. A Move for an older epoch,
// or for the current server and epoch while connected, does nothing. On
// failure the session stays where it was. Safe for concurrent use; calls
// are serialized.
func (s *Session) Move(ctx context.Context, server proto.ServerRef, epoch uint64, ticket []byte) error {
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	var skip bool
	if err := s.call(func() {
		// A suspect connection is joined again, make-before-break: Central
		// answered our report by confirming the placement.
		live := s.cur != nil && !s.cur.dead && !s.cur.suspect
		skip = epoch < s.epoch || (epoch == s.epoch && live && s.cur.server == server)
	}); err != nil {
		return err
	}
	if skip {
		return nil
	}
	l, err := dialLink(ctx, s, server)
	if err != nil {
		return fmt.Errorf("client: join %s: %w", server.ID, err)
	}
	ticket = append([]byte(nil), ticket...)
	wait := make(chan error, 1)
	if err := s.call(func() {
		l.epoch = epoch
		if s.pending != nil {
			s.pending.close(false)
		}
		s.pending, s.moveWait = l, wait
		l.start()
		l.open(&proto.Join{Room: s.room, User: s.user, Ticket: ticket, Epoch: epoch, LastSent: s.out.last, Since: s.since[server.Addr], Inc: s.inc, Move: s.cur != nil})
		s.armPing(time.Now())
	}); err != nil {
		l.conn.Close()
		return err
	}
	select {
	case err := <-wait:
		if err != nil {
			return fmt.Errorf("client: join %s: %w", server.ID, err)
		}
		return nil
	case <-ctx.Done():
		_ = s.call(func() {
			if s.pending == l {
				s.abandonPending(ctx.Err())
			}
		})
		if err := <-wait; err != nil {
			return fmt.Errorf("client: join %s: %w", server.ID, err)
		}
		return nil
	}
}

// Close leaves the room (Leave on every open connection) and stops the
// session; the Events channel is closed once everything has stopped. Safe
// for concurrent use; idempotent.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.done
		s.wg.Wait()
		close(s.events)
	})
	return nil
}

func (s *Session) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.wakeups++
		s.arm(timer)
		// Events wait in s.queue and leave through this select, so a user
		// who calls Send from the goroutine that reads Events can never
		// deadlock with the loop; a long queue pauses reading instead.
		var out chan<- Event
		var head Event
		if len(s.queue) > 0 {
			out, head = s.events, s.queue[0]
		}
		frames := s.frames
		if s.behind() {
			frames = nil
			s.paused = true
		} else if s.paused {
			// Reading again: what arrived meanwhile waits in the socket,
			// so the gaps' clocks start afresh.
			s.paused = false
			s.in.restart(time.Now())
		}
		select {
		case <-s.quit:
			s.shutdown()
			return
		case out <- head:
			s.queue[0] = nil
			s.queue = s.queue[1:]
		case fn := <-s.calls:
			fn()
		case in := <-frames:
			s.handle(in)
		case <-timer.C:
			s.armedAt = time.Time{}
			s.tick(time.Now())
		}
	}
}

// quiet reports whether gaps must wait: the old server may still deliver
// them, we cannot ask anyone (no live connection, or a join pending), or
// we do not read (the user is behind on events), so an answer may wait
// unread in the socket. A gap is never given up, nor asked for again,
// while we could not have recovered it.
func (s *Session) quiet() bool {
	return s.paused || s.old != nil || s.pending != nil || s.cur == nil || !s.cur.joined || s.cur.dead || s.cur.suspect
}

// arm points timer at the next deadline the loop has. A timer already set
// to fire no later is left alone: the loop runs once per frame, and
// resetting a timer to the deadline it has (or moving it later) costs the
// runtime's timer heap a fix-up each time, most of the idle loop's CPU
// with thousands of sessions in one process. Firing early is harmless:
// tick does only what is due and arms the timer again.
func (s *Session) arm(timer *time.Timer) {
	var next time.Time
	if !s.quiet() {
		next = s.in.next()
	}
	for _, t := range []time.Time{s.drainUntil, s.nextPing, s.nextLive} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		if !s.armedAt.IsZero() {
			timer.Stop()
			s.armedAt = time.Time{}
		}
		return
	}
	if !s.armedAt.IsZero() && !next.Before(s.armedAt) {
		return
	}
	s.armedAt = next
	timer.Reset(max(time.Until(next), 0))
}

func (s *Session) armPing(now time.Time) {
	if s.cfg.IdleTimeout > 0 && s.nextPing.IsZero() {
		s.nextPing = now.Add(s.cfg.IdleTimeout / 3)
	}
}

func (s *Session) shutdown() {
	for _, l := range []*link{s.cur, s.old, s.pending} {
		if l != nil && !l.dead {
			l.close(true)
		}
	}
	if s.moveWait != nil {
		s.moveWait <- ErrClosed
		s.moveWait = nil
	}
}

// emit queues ev for the user.
func (s *Session) emit(ev Event) { s.queue = append(s.queue, ev) }

// behind reports whether the user has EventBuffer events or more still to
// take, in the channel and queued behind it. The channel holds fewer than
// EventBuffer, so the session is behind only with events in its queue,
// and the loop, offering the next of them, wakes as the user takes one.
// Loop only.
func (s *Session) behind() bool { return len(s.queue)+len(s.events) >= s.cfg.EventBuffer }

// Channel capacities. The session's own queue holds its events past
// eventChan (up to EventBuffer, see behind), and a reader that finds
// framesChan frames waiting blocks until the loop takes one. Both
// channels were as deep as EventBuffer (1,024) and 256: in chatload's
// process of 3,000 members their empty slots, which the garbage collector
// scans, were 62 MB of a 195 MB heap, and a collection marked for 0.66 s
// (0.27-0.29 s without them), its assists stalling the members.
const (
	eventChan  = 64
	framesChan = 64
)

// sendLink is where new messages go now, or nil to hold them.
func (s *Session) sendLink() *link {
	if s.pending != nil || s.cur == nil || !s.cur.joined || s.cur.dead {
		return nil
	}
	return s.cur
}

func (s *Session) handle(in inbound) {
	if in.err == nil {
		now := time.Now()
		answered := in.l.pingAt.After(in.l.heardAt)
		in.l.heard(now, in.m)
		switch {
		case in.l != s.cur:
		case in.l.suspect:
			in.l.suspect = false
			s.log.Info("room server answers again", "server", in.l.server.ID)
			s.emit(Resumed{Server: in.l.server, Epoch: in.l.epoch, After: now.Sub(in.l.silentAt)})
			s.checkLive(now)
		case answered:
			// The next ping is due one ping interval after this answer,
			// not at the deadline of the ping it answers: left there, a
			// path going dark was found up to a deadline later.
			s.checkLive(now)
		}
	}
	switch l := in.l; l {
	case s.pending:
		s.handlePending(l, in)
	case s.cur, s.old:
		s.handleMember(l, in)
	}
}

func (s *Session) handlePending(l *link, in inbound) {
	if in.err != nil {
		s.abandonPending(in.err)
		return
	}
	if !l.welcomed {
		if err := l.welcome(in.m, l.heardAt); err != nil {
			s.abandonPending(err)
		}
		return
	}
	switch m := in.m.(type) {
	case *proto.Joined:
		s.switchTo(l, m)
	case *proto.Error:
		s.abandonPending(m)
	}
}

// abandonPending gives up the join in progress and lets held messages go
// out on the current connection.
func (s *Session) abandonPending(err error) {
	l := s.pending
	s.pending = nil
	l.dead = true
	l.close(false)
	if s.moveWait != nil {
		s.moveWait <- err
		s.moveWait = nil
	}
	s.flush()
}

// wireSize is what a message counts against SendWindow.
func wireSize(c *proto.Chat) int { return len(c.Text) + 64 }

// flush writes what waits, as far as SendWindow allows: first the Resend
// answers of the current and the old connection (pump), then the messages
// not yet written, to the connection new messages go to. New messages
// wait while that connection still has an answer to write, so an asker
// gets the messages it lacks before any newer ones it would have to hold
// behind the gap (bounded by its MaxHeld).
func (s *Session) flush() {
	var keep uint64
	for _, l := range []*link{s.cur, s.old} {
		if l == nil {
			continue
		}
		s.pump(l)
		for _, j := range l.answers {
			if keep == 0 || j.next < keep {
				keep = j.next
			}
		}
	}
	// What an answer has still to write is kept past the window: it was
	// kept when asked for, and an answer paced by Acks may outlast it.
	s.out.hold(keep)
	l := s.sendLink()
	if l == nil || len(l.answers) > 0 {
		return
	}
	for s.sentUpTo < s.out.last && s.inflight+l.rinflight < s.cfg.SendWindow {
		c := s.out.get(s.sentUpTo + 1)
		l.send(c)
		l.timeAck(c.Num)
		s.sentUpTo = c.Num
		s.inflight += wireSize(c)
	}
}

// switchTo makes the freshly joined l the room's connection.
func (s *Session) switchTo(l *link, j *proto.Joined) {
	now := time.Now()
	prev := s.cur
	l.joined = true
	l.members = make(map[string]uint64, len(j.Members))
	var names []string
	for _, m := range j.Members {
		if m.User == s.user {
			continue
		}
		names = append(names, m.User)
		l.members[m.User] = m.LastSent
		ready, gaps := s.in.announce(m.User, m.Inc, m.LastSent, now)
		s.hand(ready, gaps, l, now)
	}
	s.cur, s.pending, s.epoch = l, nil, l.epoch
	s.checkLive(now)
	if s.old != nil {
		s.old.close(true)
		s.old = nil
	}
	s.drainUntil = time.Time{}
	if prev != nil {
		if prev.dead {
			prev.close(false)
		} else {
			s.old = prev
			s.movedAt = now
			s.drainUntil = now.Add(s.cfg.DrainTimeout)
		}
	}
	// What the old server did not acknowledge goes again (it already
	// counts against the window): the new server is owed it before
	// anything newer.
	for _, m := range s.out.unacked() {
		if m.Num > s.sentUpTo {
			break
		}
		s.stats.Resent++
		l.send(&m)
	}
	s.flush()
	ev := Moved{To: l.server, Epoch: l.epoch, Took: now.Sub(l.started), Members: names}
	if prev != nil {
		ev.From = prev.server
	}
	s.log.Debug("joined", "server", l.server.ID, "epoch", l.epoch, "took", ev.Took, "members", names)
	if s.moveWait != nil {
		s.moveWait <- nil
		s.moveWait = nil
	}
	s.emit(ev)
	if s.old != nil {
		s.checkDrain(now)
	} else {
		s.askLagging(now)
	}
}

// presence applies one member's join or leave reported on l.
func (s *Session) presence(l *link, m *proto.Presence, now time.Time) {
	if m.User == s.user {
		return
	}
	if m.Here {
		if _, known := l.members[m.User]; !known && len(l.members) >= maxPeers {
			return // see maxPeers: no more members are learnt, nor told
		}
		l.members[m.User] = m.LastSent
		ready, gaps := s.in.announce(m.User, m.Inc, m.LastSent, now)
		s.hand(ready, gaps, l, now)
		if l == s.cur && s.old == nil && s.in.cursor(m.User) < m.LastSent {
			// That member alone: asking every lagging one at each
			// announcement made N announced members cost N^2/2 Resends
			// (abuse probe, 2026-12-03: 20,000 made-up members, 2.3 GB
			// written in 15 s).
			s.askLaggingOf(m.User, now)
		}
	} else {
		if _, known := l.members[m.User]; !known {
			// A user that joined and left between two of the server's
			// presence batches comes as its leave alone (a batch keeps
			// one change per user): not ours to report.
			return
		}
		delete(l.members, m.User)
		s.dropAnswers(l, m.User)
	}
	if l == s.cur {
		s.emit(Presence{User: m.User, Here: m.Here, LastSent: m.LastSent, Server: l.serverID})
	}
	if s.old != nil {
		s.checkDrain(now)
	}
}

func (s *Session) handleMember(l *link, in inbound) {
	now := time.Now()
	if in.err != nil {
		s.linkDown(l, in.err)
		return
	}
	switch m := in.m.(type) {
	case *proto.Deliver:
		if m.Seq > l.lastSeq {
			l.lastSeq = m.Seq
			s.since[l.server.Addr] = m.Seq
		}
		if m.From == s.user {
			return
		}
		ready, gaps, dup := s.in.accept(*m, now)
		if dup {
			s.stats.Duplicates++
		}
		s.hand(ready, gaps, l, now)
		if l == s.old {
			s.checkDrain(now)
		}
	case *proto.Ack:
		if m.Seq == 0 {
			// A resend handed to its asker: the Acks come back in the
			// order the resends went out.
			if len(l.racks) > 0 {
				l.rinflight -= l.racks[0]
				l.racks = l.racks[1:]
			}
			s.flush()
			return
		}
		l.acked(m.Num, now)
		if c := s.out.ack(m.Num); c != nil && m.Num <= s.sentUpTo {
			s.inflight = max(s.inflight-wireSize(c), 0)
			s.flush()
		}
	case *proto.Presence:
		s.presence(l, m, now)
	case *proto.Presences:
		for i := range m.Changes {
			s.presence(l, &m.Changes[i], now)
		}
	case *proto.Resend:
		s.answerResend(l, m, now)
	case *proto.Missed:
		if m.To != s.user {
			return
		}
		ready, gaps := s.in.missed(m.From, m.Inc, m.First, m.Last, now)
		s.hand(ready, gaps, l, now)
	case *proto.Error:
		if m.Fatal {
			s.linkDown(l, m)
			return
		}
		if m.Code == proto.CodeNotFound {
			// A Resend for a member not on this server (the gap timer
			// asks again later), or our answer to one that left.
			s.log.Debug("server", "err", m)
			s.dropAnswers(l, m.Ref)
			return
		}
		s.emit(Error{Err: fmt.Errorf("server %s: %w", l.server.ID, m)})
	}
}

// hand tells the user about the gaps given up, then delivers ready.
func (s *Session) hand(ready []proto.Deliver, gaps []gap, l *link, now time.Time) {
	for _, g := range gaps {
		s.stats.Missed += int(g.last - g.first + 1)
		s.emit(Missed{From: g.from, Inc: g.inc, First: g.first, Last: g.last, Reason: g.reason})
	}
	for _, d := range ready {
		at := time.Unix(0, d.At)
		s.stats.Received++
		s.emit(Message{From: d.From, Inc: d.Inc, Num: d.Num, Seq: d.Seq, At: at, Text: d.Text, Latency: now.Sub(at), Server: l.serverID})
	}
}

// linkDown handles the end of a connection we did not close.
func (s *Session) linkDown(l *link, err error) {
	if l.dead {
		return
	}
	l.dead = true
	l.close(false)
	switch l {
	case s.old:
		now := time.Now()
		s.old = nil
		s.drainUntil = time.Time{}
		s.emit(Drained{Server: l.server, After: now.Sub(s.movedAt), Err: err})
		s.askLagging(now)
	case s.cur:
		s.log.Info("connection to room server lost", "server", l.server.ID, "err", err)
		if l.suspect {
			// Reported Broken when it fell silent; tell the controller
			// the silence became a break (stronger evidence for Central),
			// with no second event.
			if s.cfg.OnBroken != nil {
				s.cfg.OnBroken(l.server, l.epoch, err)
			}
			return
		}
		if s.cfg.OnBroken != nil {
			s.cfg.OnBroken(l.server, l.epoch, err)
		}
		s.emit(Broken{Server: l.server, Epoch: l.epoch, Err: err})
	}
}

// checkDrain closes the old connection once nothing more can arrive on it.
func (s *Session) checkDrain(now time.Time) {
	o := s.old
	if o == nil {
		return
	}
	timedOut := !now.Before(s.drainUntil)
	if !timedOut {
		for u := range o.members {
			last, there := s.cur.members[u]
			if !there || s.in.cursor(u) < last {
				return
			}
		}
	}
	s.log.Debug("old connection drained", "server", o.server.ID, "timed_out", timedOut)
	o.close(true)
	s.old = nil
	s.drainUntil = time.Time{}
	s.emit(Drained{Server: o.server, After: now.Sub(s.movedAt), TimedOut: timedOut})
	s.askLagging(now)
}

// askLagging asks every sender known to be ahead of our cursor to send its
// tail again. Only called when no old connection can still deliver it.
func (s *Session) askLagging(now time.Time) { s.ask(s.in.lagging(now)) }

// askLaggingOf is askLagging for member u alone.
func (s *Session) askLaggingOf(u string, now time.Time) { s.ask(s.in.laggingOf(u, now)) }

// ask sends a Resend for each of asks, on the link we send on.
func (s *Session) ask(asks []ask) {
	l := s.sendLink()
	if l == nil && s.cur != nil && s.cur.joined && !s.cur.dead {
		l = s.cur
	}
	if l == nil {
		return
	}
	for _, a := range asks {
		l.send(&proto.Resend{Of: a.of, After: a.after, Inc: a.inc})
	}
}

// answerResend starts answering m on the connection it came in on: our
// messages after m.After go again to the asker alone, in byte-bounded
// steps paced by their Acks (pump), and Missed for any no longer kept.
// An ask for another incarnation than ours gets everything we keep. The
// same ask again while our answer is going out, or may still be on its
// way, is not answered twice.
func (s *Session) answerResend(l *link, m *proto.Resend, now time.Time) {
	if !l.joined || l.dead || m.By == "" {
		return
	}
	after := m.After
	if m.Inc != s.inc {
		after = 0
	}
	if a, ok := s.answered[m.By]; ok && a.inc == s.inc && after >= a.after && after < a.upTo && now.Sub(a.at) < 2*s.cfg.HoldBack {
		s.stats.Suppressed++
		return
	}
	j := &answering{by: m.By}
	for _, a := range l.answers {
		if a.by == m.By {
			if after >= a.after && after < a.upTo {
				s.stats.Suppressed++
				return
			}
			j = a // an ask for another range: answer that instead
		}
	}
	if !s.shareLeft(m.By, after, now) {
		s.stats.Suppressed++
		return
	}
	// Messages held for a pending move are not written yet: they go out
	// with it, to the asker too.
	j.after, j.next, j.upTo = after, after+1, s.sentUpTo
	if len(l.answers) == 0 || l.answers[len(l.answers)-1] != j {
		l.answers = slices.DeleteFunc(l.answers, func(a *answering) bool { return a == j })
		l.answers = append(l.answers, j)
	}
	s.flush()
}

// pump writes the Resend answers of l, oldest ask first, while the
// SendWindow has room: resends count against it as our live messages do,
// and their Acks (Ack.Seq 0) come back as the server hands them to the
// asker, held while a member of the room is behind, so an answer of any
// length reaches a slow asker at its pace rather than past the server's
// outbound limit. Messages no longer kept are reported Missed when the
// answer reaches them.
func (s *Session) pump(l *link) {
	if !l.joined || l.dead {
		return
	}
	for len(l.answers) > 0 {
		j := l.answers[0]
		if j.next <= s.out.base && j.next <= j.upTo {
			last := min(s.out.base, j.upTo)
			l.send(&proto.Missed{To: j.by, From: s.user, First: j.next, Last: last, Inc: s.inc})
			j.next = last + 1
		}
		if j.next > j.upTo {
			s.remember(j)
			l.answers[0] = nil
			l.answers = l.answers[1:]
			continue
		}
		if s.inflight+l.rinflight >= s.cfg.SendWindow {
			return
		}
		c := *s.out.get(j.next)
		c.To = j.by
		l.send(&c)
		n := wireSize(&c)
		l.racks = append(l.racks, n)
		l.rinflight += n
		j.next++
		s.stats.Resent++
	}
}

// dropAnswers stops answering user on l: it left.
func (s *Session) dropAnswers(l *link, user string) {
	l.answers = slices.DeleteFunc(l.answers, func(a *answering) bool { return a.by == user })
	s.flush()
}

// remember records j answered in full, for suppressing repeats of its
// ask, forgetting askers whose suppression window has passed once
// maxAnswered are remembered.
func (s *Session) remember(j *answering) {
	now := time.Now()
	if len(s.answered) >= maxAnswered {
		for by, a := range s.answered {
			if now.Sub(a.at) >= 2*s.cfg.HoldBack {
				delete(s.answered, by)
			}
		}
	}
	if _, ok := s.answered[j.by]; ok || len(s.answered) < maxAnswered {
		s.answered[j.by] = answer{inc: s.inc, after: j.after, upTo: j.upTo, at: now}
	}
}

// maxAnswered bounds the askers remembered for suppressing repeat asks.
const maxAnswered = 1024

// shareLeft reports whether asker may be sent again the messages we keep
// after after, and takes them from its share: two Windows, refilled at
// two Windows per GapTimeout. An answer costs its length, at most half a
// Window: an answer runs from the asker's cursor to our last message, and
// after a move with many unacknowledged messages a real gap's answer is
// longer than a Window. An asker whose ask is refused asks again on its
// own timer (after 0.3, 0.9, 2.1, 4.5 and 9.3 s at the default HoldBack),
// and half a Window is back within a quarter of GapTimeout: in time
// before its gap is given up. Repeat suppression alone lasted 2*HoldBack:
// a member asking for everything every 0.7 s had another member send it
// its whole kept window each time, 49 MB for 100 asks of 5 KB (abuse
// sweep 2, 2026-12-05); one asker now gets about 200 messages a second
// at the defaults past its first two Windows.
func (s *Session) shareLeft(asker string, after uint64, now time.Time) bool {
	n := int(s.sentUpTo - min(max(after, s.out.base), s.sentUpTo))
	if n == 0 {
		return true // only Missed to say, or nothing
	}
	lim := s.shares[asker]
	if lim == nil {
		if len(s.shares) >= maxAnswered {
			for by, l := range s.shares {
				if l.TokensAt(now) >= float64(l.Burst()) {
					delete(s.shares, by) // a full share is a fresh one
				}
			}
		}
		if len(s.shares) >= maxAnswered {
			return true // too many askers to keep accounts of; the server bounds each one's asks
		}
		lim = rate.NewLimiter(rate.Limit(float64(2*s.cfg.Window)/s.cfg.GapTimeout.Seconds()), 2*s.cfg.Window)
		s.shares[asker] = lim
	}
	return lim.AllowN(now, max(1, min(n, s.cfg.Window/2)))
}

func (s *Session) tick(now time.Time) {
	asks, gaps, ready := s.in.tick(now, s.quiet())
	for _, a := range asks {
		s.cur.send(&proto.Resend{Of: a.of, After: a.after, Inc: a.inc})
	}
	if s.cur != nil {
		s.hand(ready, gaps, s.cur, now)
	}
	if s.old != nil {
		s.checkDrain(now)
	}
	if !s.nextLive.IsZero() && !now.Before(s.nextLive) {
		s.checkLive(now)
	}
	if !s.nextPing.IsZero() && !now.Before(s.nextPing) {
		s.nextPing = time.Time{}
		live := false
		for _, l := range []*link{s.cur, s.old, s.pending} {
			if l != nil && !l.dead {
				l.send(&proto.Ping{At: int64(now.UnixNano())})
				live = true
			}
		}
		if live {
			s.armPing(now)
		}
	}
}

// checkLive runs the fast liveness check of the current connection (see
// SessionConfig.Liveness) and sets when it runs next: a ping once the connection
// has been silent for the ping interval, a break once that ping has gone
// unanswered for the deadline. Any frame answers, so a busy room's traffic
// stands in for pings.
func (s *Session) checkLive(now time.Time) {
	scheduled := s.nextLive
	s.nextLive = time.Time{}
	l := s.cur
	if s.cfg.Liveness <= 0 || l == nil || !l.joined || l.dead || l.suspect {
		return
	}
	if len(s.frames) > 0 || s.behind() {
		// Frames wait for us (or we stopped reading for a slow user): the
		// connection is not what is silent.
		l.heardAt = now
	}
	if l.beats {
		beat, grace := s.beatTimes(l)
		late := !scheduled.IsZero() && now.Sub(scheduled) > max(grace/4, lateSlack)
		l.askBeats(beat + l.late)
		s.checkBeats(l, now, l.limit(beat, grace), late)
		return
	}
	every, deadline := s.liveTimes(l)
	late := !scheduled.IsZero() && now.Sub(scheduled) > max(deadline/4, lateSlack)
	if l.pingAt.After(l.heardAt) {
		if late || (now.Sub(l.pingAt) >= deadline && unread(l.conn)) {
			// This check ran late, or the answer waits in the socket,
			// unread: the process was starved. Judge again shortly, once
			// the reader has had its turn.
			s.nextLive = now.Add(deadline / 4)
			return
		}
		if now.Sub(l.pingAt) >= deadline {
			s.fellSilent(l, fmt.Errorf("%w (%v, RTT %v)", ErrSilent, now.Sub(l.pingAt).Round(time.Millisecond), l.rtt.Round(time.Microsecond)))
			return
		}
		s.nextLive = l.pingAt.Add(deadline)
		return
	}
	if now.Sub(l.heardAt) < every {
		s.nextLive = l.heardAt.Add(every)
		return
	}
	l.send(&proto.Ping{At: now.UnixNano()})
	l.pingAt = now
	s.nextLive = now.Add(deadline)
}

// checkBeats is checkLive for a connection the server beats on
// (proto.Beat): silent for limit (link.limit) it is taken for dead. A Ping
// still goes out when the RTT has gone beatPing without a sample (a Pong,
// or the Ack of a message timed on its way: link.timeAck), so the
// deadline follows a path that slows.
func (s *Session) checkBeats(l *link, now time.Time, limit time.Duration, late bool) {
	if silent := now.Sub(l.heardAt); silent >= limit {
		if late || unread(l.conn) {
			// As in checkLive: the beats may wait unread.
			s.nextLive = now.Add(limit / 8)
			return
		}
		s.fellSilent(l, fmt.Errorf("%w (%v, RTT %v)", ErrSilent, silent.Round(time.Millisecond), l.rtt.Round(time.Microsecond)))
		return
	}
	if now.Sub(l.sampled) >= beatPing && now.Sub(l.pingAt) >= beatPing {
		l.send(&proto.Ping{At: now.UnixNano()})
		l.pingAt = now
	}
	s.nextLive = l.heardAt.Add(limit)
	last := l.pingAt
	if l.sampled.After(last) {
		last = l.sampled
	}
	if next := last.Add(beatPing); next.Before(s.nextLive) {
		s.nextLive = next
	}
}

// beatPing is how long a connection with beats goes without an RTT sample
// before it is pinged for one. The RTT only sets floors under the silence
// deadline; between samples the beats' own lateness (link.heard) follows a
// path that slows. It was 500 ms: in chatload at 1 message a second a
// member then pinged about once a second beside its Acks' samples, and
// 800 x 3 ran at p99 136-259 ms with 1,190-2,938 false silences (resumed)
// against 25-47 ms and none at 2 s, the process using 18-22% less CPU.
const beatPing = 2 * time.Second

// fellSilent reports the current connection Broken (ErrSilent) without
// closing it: the server may only be stalled. Anything that arrives on it
// makes it live again (Resumed); a Move, even to the same server and epoch, joins
// anew make-before-break; IdleTimeout closes it for good. Loop only.
func (s *Session) fellSilent(l *link, err error) {
	l.suspect, l.silentAt = true, time.Now()
	s.log.Info("room server silent", "server", l.server.ID, "err", err)
	if s.cfg.OnBroken != nil {
		s.cfg.OnBroken(l.server, l.epoch, err)
	}
	s.emit(Broken{Server: l.server, Epoch: l.epoch, Err: err})
}

// lateSlack is how late past its time a liveness check may run before it
// counts as run by a starved process (see checkLive).
const lateSlack = 100 * time.Millisecond

// liveTimes returns l's ping interval and liveness deadline: the deadline
// is at least four RTTs and twice TCP's retransmission timeout (RTT plus
// four deviations), so a jittery, loaded path is not taken for a dead one.
func (s *Session) liveTimes(l *link) (every, deadline time.Duration) {
	return max(s.cfg.Liveness/3, 2*l.rtt), max(s.cfg.Liveness, 4*l.rtt, 2*(l.rtt+4*l.rttvar))
}

// beatTimes returns, for a connection the server beats on, the beat
// interval to ask for and the grace past a due beat before silence: half
// of Liveness and five sixths of it, so silence is found as soon as an
// unanswered ping finds it (Liveness/3 + Liveness) with fewer frames than
// a ping interval of Liveness/3 took (in a room of three chatting once a
// second each, about 5 beats a second against 9). The grace keeps the
// deadline's floors of four RTTs and twice the retransmission timeout.
func (s *Session) beatTimes(l *link) (beat, grace time.Duration) {
	live := s.cfg.Liveness
	return max(live/2, 2*l.rtt), max(live-live/6, 4*l.rtt, 2*(l.rtt+4*l.rttvar))
}
