package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"

	"nearchat/client"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/rtt"
)

// runTerminal runs the interactive client on the terminal: raw mode, the
// alternate screen, and the model/view loop. It restores the terminal on
// every way out, a panic included.
func runTerminal(ctx context.Context, f *flags) int {
	inFd, outFd := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	if !term.IsTerminal(inFd) || !term.IsTerminal(outFd) {
		fmt.Fprintln(os.Stderr, "chat: the terminal client needs a terminal on stdin and stdout; use -bot to run without one")
		return 2
	}
	// Logs would scribble over the screen: they go to -log FILE or nowhere.
	log, closeLog, err := newLogger(f, io.Discard)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		return 2
	}
	defer closeLog()
	w, h, err := term.GetSize(outFd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat: terminal size:", err)
		return 1
	}
	saved, err := term.MakeRaw(inFd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat: raw mode:", err)
		return 1
	}
	var once sync.Once
	restore := func() {
		once.Do(func() {
			_, _ = os.Stdout.WriteString(escPasteOff + escReset + escShowCur + escMainScr)
			_ = term.Restore(inFd, saved)
		})
	}
	defer restore()
	// Bracketed paste, so that a line break in pasted text is told from
	// the Enter key (keyDecoder).
	_, _ = os.Stdout.WriteString(escAltScreen + escPasteOn)
	t := &tui{f: f, log: log, restore: restore}
	size := func() (int, int, error) { return term.GetSize(outFd) }
	var code int
	guarded(restore, func() { code = t.run(ctx, os.Stdin, os.Stdout, w, h, size) })
	restore()
	for _, l := range t.farewell {
		fmt.Fprintln(os.Stderr, "chat:", l)
	}
	return code
}

// guarded runs fn; if fn panics, the terminal is restored before the panic
// goes on, so the trace prints on a usable terminal.
func guarded(restore func(), fn func()) {
	defer func() {
		if r := recover(); r != nil {
			restore()
			panic(r)
		}
	}()
	fn()
}

// tui is the runtime around the model: it owns the terminal output, the
// client library and the rooms' sessions. Everything but post and the
// goroutines it starts runs on the loop goroutine.
type tui struct {
	f       *flags
	log     *slog.Logger
	restore func()

	msgs chan any      // keys and events for the loop
	done chan struct{} // closed when the loop has ended
	jobs chan func()   // blocking calls, run in order by one worker

	c         *client.Client
	stopRun   context.CancelFunc
	runDone   chan struct{}
	sessions  map[string]*client.Session
	forwarded sync.WaitGroup
	polling   bool     // an acknowledgement poll is under way
	farewell  []string // printed once the terminal is restored
}

// pollAcks asks the open chat's session, off the loop, how far the server
// has acknowledged this user's messages, while any line shows as pending.
func (t *tui) pollAcks(m *model) {
	r := m.chat
	if t.polling || r == nil || !r.pending() {
		return
	}
	sess := t.sessions[r.id]
	if sess == nil {
		return
	}
	t.polling = true
	room := r.id
	t.spawn(&t.forwarded, func() {
		st := sess.Stats()
		t.post(ackedMsg{room: room, num: st.Sent - uint64(st.Unacked)})
	})
}

// post hands msg to the loop; after the loop ended it drops msg.
func (t *tui) post(msg any) {
	select {
	case t.msgs <- msg:
	case <-t.done:
	}
}

// spawn starts fn on a goroutine that restores the terminal if fn panics.
func (t *tui) spawn(wg *sync.WaitGroup, fn func()) {
	if wg != nil {
		wg.Add(1)
	}
	go func() {
		if wg != nil {
			defer wg.Done()
		}
		guarded(t.restore, fn)
	}()
}

func (t *tui) run(ctx context.Context, in io.Reader, out io.Writer, w, h int, size func() (int, int, error)) int {
	t.msgs = make(chan any, 1024)
	t.done = make(chan struct{})
	t.jobs = make(chan func(), 256)
	t.sessions = map[string]*client.Session{}
	workerDone := make(chan struct{})
	t.spawn(nil, func() {
		defer close(workerDone)
		for job := range t.jobs {
			job()
		}
	})
	// The reader cannot be stopped while it waits in Read; it ends with the
	// process, which exits right after run returns.
	t.spawn(nil, func() {
		readKeys(in, func(k key) { t.post(k) }, func(err error) { t.post(inputClosedMsg{err: err}) }, t.done)
	})
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)

	m, cmds := newModel(t.f.name, w, h)
	m.tls = t.f.tls != nil
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	p := &painter{w: out}
	full := t.exec(ctx, m, cmds)
	for !m.quit {
		if err := p.paint(m.view(), full); err != nil {
			t.log.Error("drawing", "err", err)
			break
		}
		full = false
		select {
		case <-ctx.Done():
			m.quit = true
		case now := <-tick.C:
			m.update(tickMsg{now: now})
			t.pollAcks(m)
		case <-winch:
			if w, h, err := size(); err == nil {
				m.update(resizeMsg{w: w, h: h})
			}
			full = true
		case msg := <-t.msgs:
			full = t.handle(ctx, m, msg) || full
			// Take whatever else is waiting before drawing once.
		drain:
			for range 256 {
				select {
				case msg := <-t.msgs:
					full = t.handle(ctx, m, msg) || full
				default:
					break drain
				}
			}
		}
	}
	t.shutdown(workerDone, m, p)
	return 0
}

// handle passes one message to the model and carries out its commands; it
// reports whether the screen must be redrawn from scratch.
func (t *tui) handle(ctx context.Context, m *model, msg any) bool {
	switch msg := msg.(type) {
	case ackedMsg:
		t.polling = false
	case registeredMsg:
		if msg.err == nil {
			t.start(msg.c)
		}
	case client.RoomReady:
		t.sessions[msg.Room] = msg.Session
	}
	return t.exec(ctx, m, m.update(msg))
}

func (t *tui) exec(ctx context.Context, m *model, cmds []cmd) (full bool) {
	for _, c := range cmds {
		switch c := c.(type) {
		case cmdRedraw:
			full = true
		case cmdRegister:
			t.jobs <- func() { t.register(ctx, c.name) }
		case cmdRequest:
			cl := t.c
			t.jobs <- func() {
				if err := cl.Request(c.to...); err != nil {
					t.post(failedMsg{cmd: c, err: err})
				}
			}
		case cmdAnswer:
			cl := t.c
			t.jobs <- func() {
				if err := cl.Answer(c.req, c.accept); err != nil {
					t.post(failedMsg{cmd: c, err: err})
				}
			}
		case cmdSend:
			sess := t.sessions[c.room]
			if sess == nil {
				m.update(failedMsg{cmd: c, err: fmt.Errorf("not in room %s", c.room)})
				continue
			}
			t.jobs <- func() {
				num, err := sess.Send(c.text)
				if err != nil {
					t.post(failedMsg{cmd: c, err: err})
					return
				}
				t.post(sentMsg{room: c.room, id: c.id, num: num})
			}
		case cmdLeave:
			delete(t.sessions, c.room)
			cl := t.c
			t.jobs <- func() {
				if err := cl.Leave(c.room); err != nil {
					t.post(failedMsg{cmd: c, err: err})
				}
			}
		case cmdOnline:
			cl := t.c
			t.jobs <- func() {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				l, err := cl.API().OnlineClients(ctx)
				if err != nil {
					t.post(onlineMsg{err: err.Error()})
					return
				}
				t.post(onlineMsg{names: l.Clients, more: l.More})
			}
		case cmdQuit:
		}
	}
	return full
}

// register builds a client for name and registers it; it runs on the
// worker, and the loop starts the client when it learns the outcome.
func (t *tui) register(ctx context.Context, name string) {
	f := *t.f
	f.name = name
	c, err := newClient(&f, t.log, func(res map[string]rtt.Result) {
		m := make(map[string]time.Duration, len(res))
		for id, r := range res {
			if r.Err == nil && r.Count > 0 {
				m[id] = r.Median
			}
		}
		// The prober must not wait for the screen: a round lost is
		// replaced by the next.
		select {
		case t.msgs <- probeMsg{rtt: m}:
		default:
		}
	})
	msg := registeredMsg{name: name}
	if err == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = c.Register(rctx)
		var ae *centralapi.Error
		switch {
		case err == nil:
			msg.token = c.Token()
		case centralapi.IsNameTaken(err):
			info, lerr := c.API().LookupClient(rctx, name)
			msg.online = lerr != nil || info.Online
		case !errors.As(err, &ae):
			err = explainCentral(t.f.central, t.f.tls != nil, err)
		}
		cancel()
	}
	msg.err, msg.c = err, c
	t.post(msg)
}

// start runs the registered client and forwards its events to the loop.
func (t *tui) start(c *client.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	t.c, t.stopRun, t.runDone = c, cancel, make(chan struct{})
	done := t.runDone
	t.spawn(nil, func() {
		defer close(done)
		err := c.Run(ctx)
		if ctx.Err() == nil {
			t.post(stoppedMsg{err: err})
		}
	})
	t.spawn(&t.forwarded, func() {
		for {
			select {
			case ev := <-c.Events():
				t.post(ev)
			case <-ctx.Done():
				return
			}
		}
	})
	t.spawn(&t.forwarded, func() {
		select {
		case <-c.Reported():
			t.post(reportedMsg{})
		case <-ctx.Done():
		}
	})
}

// leavingSlow is how long quitting waits for Central before it says so on
// the screen.
const leavingSlow = 500 * time.Millisecond

// shutdown leaves the open rooms, waits for Central to confirm the leaves,
// stops the client and deregisters (confirmQuit), within quitBound: a
// leave Central never took in kept the user listed in the room for good
// (rel7 sweep, 2026-12-03, R7-1). Past a moment the bottom bar says what
// it waits for, and Ctrl-C quits at once. What Central did not confirm is
// logged, and printed once the terminal is restored (farewell).
func (t *tui) shutdown(workerDone chan struct{}, m *model, p *painter) {
	for room := range t.sessions {
		cl := t.c
		t.jobs <- func() { _ = cl.Leave(room) }
	}
	close(t.jobs)
	wait := func(ch <-chan struct{}, d time.Duration) {
		select {
		case <-ch:
		case <-time.After(d):
		}
	}
	start := time.Now()
	wait(workerDone, 2*time.Second)
	if t.stopRun != nil {
		quit, giveUp := context.WithCancel(context.Background())
		defer giveUp()
		type outcome struct {
			rooms              []string
			leaveErr, deregErr error
		}
		done := make(chan outcome, 1)
		c, stopRun, runDone := t.c, t.stopRun, t.runDone
		go func() {
			rooms, leaveErr, deregErr := confirmQuit(quit, start, c, func() {
				stopRun()
				wait(runDone, 3*time.Second)
			})
			done <- outcome{rooms, leaveErr, deregErr}
		}()
		slow := time.NewTimer(leavingSlow)
		defer slow.Stop()
		var out outcome
	waiting:
		for {
			select {
			case out = <-done:
				break waiting
			case <-slow.C:
				m.leaving = "leaving: waiting for Central to confirm… (Ctrl-C: quit now)"
				_ = p.paint(m.view(), false)
			case msg := <-t.msgs: // the client's events and keys: only Ctrl-C counts now
				if k, ok := msg.(key); ok && k == ctrlKey('c') {
					giveUp()
					m.leaving = "quitting…"
					_ = p.paint(m.view(), false)
				}
			}
		}
		for _, room := range out.rooms {
			t.farewell = append(t.farewell, fmt.Sprintf("Central did not confirm that you left %s; it may still list you", clipName(room)))
		}
		if out.leaveErr != nil {
			t.log.Warn("Central did not confirm that we left; it may still list us", "rooms", out.rooms, "err", out.leaveErr)
		}
		if out.deregErr != nil {
			t.farewell = append(t.farewell, fmt.Sprintf("Central did not confirm that you quit (%s); your name stays taken until Central's grace period ends", clipDetail(out.deregErr.Error())))
			t.log.Warn("Central did not confirm the deregistration", "err", out.deregErr)
		}
	}
	close(t.done)
	fw := make(chan struct{})
	go func() { t.forwarded.Wait(); close(fw) }()
	wait(fw, time.Second)
}

// quitBound bounds how long quitting waits for Central to confirm the
// leaves and the deregistration: the leader's lease (2 s by default) and a
// failover to another replica fit in it.
const quitBound = 10 * time.Second

// deregister tells Central the user is gone, so the name is free at once
// and the user out of its rooms. It tries again, across Central's
// addresses (each failed call moves the API client to the next), until
// Central answers 204 or for good (the client unknown, the token refused:
// with -store etcd such an answer, like the 204, means stored), or ctx
// ends: one attempt was lost while the leader was frozen or failing over
// (rel7 sweep, 2026-12-03, R7-1), and a Central that cannot store it yet
// answers 503. It returns the last error when ctx ended first.
func deregister(ctx context.Context, c *client.Client) error {
	tok := c.Token()
	if tok == "" {
		return nil
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.API().DeregisterClient(actx, c.User(), tok)
		cancel()
		if err == nil || centralapi.IsUnknownClient(err) || centralapi.IsUnauthorized(err) || centralapi.IsBadRequest(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond): // a pause between attempts, not synchronisation
		}
	}
}

// until returns parent bounded by deadline, or by d from now if that is
// later: the deregistration gets a few seconds of its own even when the
// wait for the leaves took the whole bound.
func until(parent context.Context, deadline time.Time, d time.Duration) (context.Context, context.CancelFunc) {
	if soon := time.Now().Add(d); soon.After(deadline) {
		deadline = soon
	}
	return context.WithDeadline(parent, deadline)
}

// confirmQuit waits, within quitBound from start and while quit lasts,
// for Central to confirm the leaves of c (which must still run), then
// calls stop (which stops c) and deregisters. It returns what Central did
// not confirm: the rooms whose leave it did not, and the deregistration's
// error if that failed.
func confirmQuit(quit context.Context, start time.Time, c *client.Client, stop func()) (rooms []string, leaveErr, deregErr error) {
	ctx, cancel := context.WithDeadline(quit, start.Add(quitBound))
	leaveErr = c.LeavesConfirmed(ctx)
	cancel()
	var ue *client.UnconfirmedError
	if errors.As(leaveErr, &ue) {
		rooms = ue.Rooms
	}
	// Stopped, the client cannot register the name again behind our back.
	stop()
	ctx, cancel = until(quit, start.Add(quitBound), 5*time.Second)
	deregErr = deregister(ctx, c)
	cancel()
	return rooms, leaveErr, deregErr
}
