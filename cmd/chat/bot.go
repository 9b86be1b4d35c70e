package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"nearchat/client"
	"nearchat/pkg/proto"
	"nearchat/pkg/rtt"
)

// botOut writes one JSON object per line; safe for concurrent use.
type botOut struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *botOut) emit(ev string, fields map[string]any) {
	if fields == nil {
		fields = map[string]any{}
	}
	fields["ev"] = ev
	fields["t"] = time.Now().UTC().Format(time.RFC3339Nano)
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(fields)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// bot is one headless user: it requests or accepts a chat, sends at a
// steady rate, and checks that what it receives is complete and in order.
type bot struct {
	f   *flags
	out *botOut
	c   *client.Client
	log *slog.Logger

	check *client.Checker
	// inc tells this process's messages from an earlier run's under the
	// same name (a restart with -token numbers from 1 again); it ends
	// every message text.
	inc  string
	mu   sync.Mutex
	last map[string]uint64 // highest number seen or announced per sender
	recv map[string]int
	sess *client.Session
}

func runBot(ctx context.Context, f *flags, stdout io.Writer) int {
	out := &botOut{enc: json.NewEncoder(stdout)}
	log, closeLog, err := newLogger(f, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		return 2
	}
	defer closeLog()
	c, err := newClient(f, log, func(res map[string]rtt.Result) {
		m := map[string]float64{}
		for id, r := range res {
			if r.Err == nil && r.Count > 0 {
				m[id] = ms(r.Median)
			}
		}
		out.emit("probe", map[string]any{"rtt_ms": m})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		return 2
	}
	b := &bot{f: f, out: out, c: c, log: log, check: client.NewChecker(), last: map[string]uint64{}, recv: map[string]int{},
		inc: strconv.FormatUint(rand.Uint64()&0xffffffff, 36)}
	return b.run(ctx)
}

func (b *bot) run(ctx context.Context) int {
	f := b.f
	// The client outlives ctx so the last messages can still be
	// acknowledged after the stop signal.
	life, kill := context.WithCancel(context.Background())
	defer kill()
	runErr := make(chan error, 1)
	go func() { runErr <- b.c.Run(life) }()

	stop := ctx
	if f.duration > 0 {
		var cancel context.CancelFunc
		stop, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	select {
	case <-b.c.Reported():
		b.out.emit("ready", map[string]any{"user": f.name, "token": b.c.Token(), "inc": b.inc})
	case err := <-runErr:
		b.out.emit("error", map[string]any{"err": err.Error(), "fatal": true})
		return 1
	case <-stop.Done():
		b.out.emit("error", map[string]any{"err": "stopped before the first latency report", "fatal": true})
		return 1
	}

	var peers []string
	if f.peers != "" {
		peers = strings.Split(f.peers, ",")
	}
	// The first request waits for the control connection (Connected).
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	connected := false
	sendDone := make(chan struct{})
	var sending sync.WaitGroup
	var sess *client.Session
	var ask asking
	// SIGUSR1 stops taking the client's events, as a user or application
	// that stops reading does; SIGUSR1 again resumes. The client then stops
	// reading its connections once its event buffers are full.
	stall := make(chan os.Signal, 1)
	signal.Notify(stall, syscall.SIGUSR1)
	defer signal.Stop(stall)
	events := b.c.Events()
loop:
	for {
		select {
		case <-stall:
			if events == nil {
				events = b.c.Events()
			} else {
				events = nil
			}
			b.out.emit("stalled", map[string]any{"on": events == nil})
		case <-stop.Done():
			break loop
		case err := <-runErr:
			b.out.emit("error", map[string]any{"err": err.Error(), "fatal": true})
			return 1
		case <-retry.C:
			if sess == nil {
				if err := b.c.Request(peers...); err != nil {
					b.out.emit("error", map[string]any{"err": err.Error()})
					retry.Reset(time.Second)
				}
			}
		case <-sendDone:
			break loop
		case ev := <-events:
			if b.roomEvent(ev) {
				continue
			}
			switch ev := ev.(type) {
			case client.Status:
				b.out.emit("status", map[string]any{"req": ev.Req, "code": ev.Code.String(), "detail": ev.Detail, "room": ev.Room})
				if !ev.Code.Final() || ev.Code == proto.ReqAccepted || sess != nil || len(peers) == 0 {
					continue
				}
				wait, why := ask.next(ev.Code)
				if why != "" {
					b.out.emit("error", map[string]any{"err": why, "fatal": true})
					return b.finish(stop, nil, &sending, kill)
				}
				retry.Reset(wait)
			case client.Incoming:
				b.out.emit("incoming", map[string]any{"req": ev.Req, "from": ev.From, "members": ev.Members})
				if f.accept && sess == nil {
					if err := b.c.Answer(ev.Req, true); err != nil {
						b.out.emit("error", map[string]any{"err": err.Error()})
					}
				} else {
					_ = b.c.Answer(ev.Req, false)
				}
			case client.RoomReady:
				if sess != nil {
					continue // a bot keeps to one room
				}
				sess = ev.Session
				b.mu.Lock()
				b.sess = sess
				b.mu.Unlock()
				b.out.emit("joined", map[string]any{"room": ev.Room, "server": ev.Assign.Server.ID, "epoch": ev.Assign.Epoch,
					"rtt_ms": ms(ev.Assign.RTT), "members": ev.Assign.Members})
				sending.Add(1)
				go func() {
					defer sending.Done()
					if b.send(stop, sess) {
						close(sendDone)
					}
				}()
			case client.RoomClosed:
				b.out.emit("closed", map[string]any{"room": ev.Room, "reason": ev.Reason})
			case client.Connected:
				b.out.emit("control", map[string]any{"up": true, "central": ev.Central})
				if !connected && len(peers) > 0 {
					retry.Reset(0)
				}
				connected = true
			case client.Disconnected:
				msg := ""
				if ev.Err != nil {
					msg = ev.Err.Error()
				}
				b.out.emit("control", map[string]any{"up": false, "err": msg})
			case client.Error:
				b.out.emit("error", map[string]any{"err": ev.Err.Error()})
			}
		}
	}
	return b.finish(stop, sess, &sending, kill)
}

// asking decides what a bot does after its chat request ended without a
// room: ask again after a pause that doubles on each decline or timeout (a
// person can say no), give up at once on a request that can never succeed,
// and after a few tries on a user who is not there.
type asking struct {
	declined, missing int
}

// maxMissing is how many times a bot asks for a user Central does not know
// before it gives up: the peer may be starting at the same moment.
const maxMissing = 5

func (a *asking) next(code proto.StatusCode) (wait time.Duration, giveUp string) {
	switch code {
	case proto.ReqInvalid:
		return 0, "the chat request is invalid (" + code.String() + "); not asking again"
	case proto.UserNotFound:
		a.missing++
		if a.missing >= maxMissing {
			return 0, fmt.Sprintf("the peer is not registered with Central after %d tries; giving up", a.missing)
		}
		return time.Second, ""
	case proto.ReqDeclined, proto.ReqTimeout:
		a.declined++
		return min(time.Second<<a.declined, time.Minute), ""
	}
	return time.Second, ""
}

// roomEvent handles an event of the bot's room; it reports whether ev was
// one.
func (b *bot) roomEvent(ev client.Event) bool {
	switch ev := ev.(type) {
	case client.Message:
		ok := b.check.Observe(ev.From, ev.Num)
		b.mu.Lock()
		b.recv[ev.From]++
		b.last[ev.From] = max(b.last[ev.From], ev.Num)
		b.mu.Unlock()
		if !ok {
			b.out.emit("error", map[string]any{"err": fmt.Sprintf("message %d of %s duplicated or out of order", ev.Num, ev.From)})
		}
		if !b.f.quiet {
			b.out.emit("received", map[string]any{"from": ev.From, "num": ev.Num, "latency_ms": ms(ev.Latency), "server": ev.Server,
				"inc": incOf(ev.Text)})
		}
	case client.Presence:
		b.mu.Lock()
		if ev.User != b.f.name {
			b.last[ev.User] = max(b.last[ev.User], ev.LastSent)
		}
		b.mu.Unlock()
		if !ev.Here {
			b.out.emit("left", map[string]any{"user": ev.User, "server": ev.Server})
		}
	case client.Moved:
		a := ev.Assign
		b.out.emit("moved", map[string]any{"room": ev.Room, "from": ev.From.ID, "to": ev.To.ID, "epoch": ev.Epoch,
			"reason": a.Reason, "took_ms": ms(ev.Took), "prev_rtt_ms": ms(a.PrevRTT), "rtt_ms": ms(a.RTT)})
	case client.Missed:
		b.out.emit("missed", map[string]any{"from": ev.From, "first": ev.First, "last": ev.Last, "reason": ev.Reason})
	case client.Broken:
		b.out.emit("broken", map[string]any{"server": ev.Server.ID, "epoch": ev.Epoch, "err": fmt.Sprint(ev.Err), "silent": errors.Is(ev.Err, client.ErrSilent)})
	case client.Resumed:
		b.out.emit("resumed", map[string]any{"server": ev.Server.ID, "epoch": ev.Epoch, "after_ms": ms(ev.After)})
	case client.Drained:
	case client.Error:
		if ev.Room == "" {
			return false
		}
		b.out.emit("error", map[string]any{"err": ev.Err.Error()})
	default:
		return false
	}
	return true
}

// drain handles the room's events for d, or until done reports true.
func (b *bot) drain(d time.Duration, done func() bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for done == nil || !done() {
		select {
		case ev := <-b.c.Events():
			b.roomEvent(ev)
		case <-tick.C:
		case <-deadline.C:
			return
		}
	}
}

// send sends at the configured rate until stop or -count; it reports
// whether it ended because the count was reached.
func (b *bot) send(stop context.Context, sess *client.Session) bool {
	f := b.f
	t := time.NewTicker(time.Duration(float64(time.Second) / f.rate))
	defer t.Stop()
	for n := 1; f.count == 0 || n <= f.count; {
		select {
		case <-stop.Done():
			return false
		case <-t.C:
		}
		text := fmt.Sprintf("%s #%d %s", f.name, n, b.inc)
		if len(text) < f.size {
			text += strings.Repeat(".", f.size-len(text))
		}
		num, err := sess.Send(text)
		switch {
		case errors.Is(err, client.ErrBackpressure):
			continue // the room cannot keep up; try again on the next tick
		case err != nil:
			b.out.emit("error", map[string]any{"err": err.Error()})
			return false
		}
		if f.verbose {
			b.out.emit("sent", map[string]any{"num": num, "inc": b.inc})
		}
		n++
	}
	return true
}

// finish stops sending, lets the last messages be acknowledged and the
// peers' in-flight ones arrive, and prints the delivery report.
func (b *bot) finish(stop context.Context, sess *client.Session, sending *sync.WaitGroup, kill context.CancelFunc) int {
	if sess == nil {
		b.out.emit("report", map[string]any{"user": b.f.name, "sent": 0, "ok": false, "err": "never joined a room"})
		b.quit(kill)
		return 1
	}
	sending.Wait()
	b.drain(3*time.Second, func() bool { return sess.Stats().Unacked == 0 })
	b.drain(500*time.Millisecond, nil) // what peers sent just before their own stop
	st := sess.Stats()
	b.mu.Lock()
	for u, n := range b.last {
		b.check.Expect(u, n)
	}
	recv := make(map[string]int, len(b.recv))
	for u, n := range b.recv {
		recv[u] = n
	}
	b.mu.Unlock()
	rep := b.check.Report()
	lost := 0
	for _, n := range rep.Missing {
		lost += n
	}
	ok := rep.OK() && st.Unacked == 0
	b.out.emit("report", map[string]any{
		"user": b.f.name, "sent": st.Sent, "unacked": st.Unacked, "received": recv,
		"lost": lost, "duplicated": rep.Duplicates, "reordered": rep.OutOfOrder,
		"resent": st.Resent, "server": st.Server.ID, "epoch": st.Epoch, "ok": ok,
	})
	_ = b.c.Leave(sess.Room())
	b.quit(kill)
	if !ok {
		return 1
	}
	return 0
}

// quit waits for Central to confirm the bot's leaves (the client still
// runs, its events drained meanwhile), stops the client with kill and
// deregisters, within quitBound; what Central did not confirm is said
// in an "unconfirmed" event (what: "leave" with the rooms, or
// "deregister") and in the log.
func (b *bot) quit(kill context.CancelFunc) {
	drained := make(chan struct{})
	stopDrain := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-b.c.Events():
			case <-stopDrain:
				return
			}
		}
	}()
	rooms, leaveErr, deregErr := confirmQuit(context.Background(), time.Now(), b.c, func() {
		close(stopDrain)
		<-drained
		kill()
	})
	if leaveErr != nil {
		b.out.emit("unconfirmed", map[string]any{"what": "leave", "rooms": rooms, "err": leaveErr.Error()})
		b.log.Warn("Central did not confirm that we left; it may still list us", "rooms", rooms, "err", leaveErr)
	}
	if deregErr != nil {
		b.out.emit("unconfirmed", map[string]any{"what": "deregister", "err": deregErr.Error()})
		b.log.Warn("Central did not confirm the deregistration; the name stays taken until its grace period ends", "err", deregErr)
	}
}

// incOf reads the sender's incarnation from a bot's message text,
// "name #n inc" and any padding dots.
func incOf(text string) string {
	f := strings.Fields(text)
	if len(f) < 3 {
		return ""
	}
	return strings.TrimRight(f[2], ".")
}
