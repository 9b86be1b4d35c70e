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
			_, _ = os.Stdout.WriteString(escReset + escShowCur + escMainScr)
			_ = term.Restore(inFd, saved)
		})
	}
	defer restore()
	_, _ = os.Stdout.WriteString(escAltScreen)
	t := &tui{f: f, log: log, restore: restore}
	size := func() (int, int, error) { return term.GetSize(outFd) }
	var code int
	guarded(restore, func() { code = t.run(ctx, os.Stdin, os.Stdout, w, h, size) })
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
	polling   bool // an acknowledgement poll is under way
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
	t.shutdown(workerDone)
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

// shutdown leaves the open rooms, stops the client and waits, boundedly,
// for it: a stuck network write must not keep the user from their shell.
func (t *tui) shutdown(workerDone chan struct{}) {
	close(t.done)
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
	wait(workerDone, 2*time.Second)
	if t.stopRun != nil {
		t.stopRun()
		wait(t.runDone, 3*time.Second)
		// Give the name back at once rather than after Central's grace
		// period: this session is over. The client has stopped, so it
		// cannot register the name again behind our back.
		deregister(t.c)
	}
	fw := make(chan struct{})
	go func() { t.forwarded.Wait(); close(fw) }()
	wait(fw, time.Second)
}

// deregister tells Central the user is gone, so the name is free at once;
// a Central that cannot be reached frees it after its grace period anyway.
func deregister(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if tok := c.Token(); tok != "" {
		_ = c.API().DeregisterClient(ctx, c.User(), tok)
	}
}
