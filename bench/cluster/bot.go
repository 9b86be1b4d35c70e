package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Event is one JSON line a bot printed, in the order the harness read it
// across every bot.
type Event struct {
	Seq    int            // position in the Recorder, from 0
	Bot    string         // the bot's name
	Run    int            // which start of the bot process printed it, from 1
	At     time.Time      // when the harness read it
	Fields map[string]any // the JSON object; Fields["ev"] is its kind
}

// Kind is the event's "ev" field.
func (e Event) Kind() string { s, _ := e.Fields["ev"].(string); return s }

// Str returns a field as a string ("" when absent).
func (e Event) Str(k string) string {
	if v, ok := e.Fields[k]; ok && v != nil {
		return fmt.Sprint(v)
	}
	return ""
}

// Num returns a numeric field (0 when absent).
func (e Event) Num(k string) float64 { f, _ := e.Fields[k].(float64); return f }

// Recorder keeps every bot event. Nothing is discarded: waiting for one
// event never loses another. Safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{} // closed and replaced on every append
}

func newRecorder() *Recorder { return &Recorder{changed: make(chan struct{})} }

func (r *Recorder) add(bot string, run int, fields map[string]any) {
	r.mu.Lock()
	r.events = append(r.events, Event{Seq: len(r.events), Bot: bot, Run: run, At: time.Now(), Fields: fields})
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// All returns a copy of every event so far.
func (r *Recorder) All() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Len is the number of events so far; pass it to Await as from to wait
// only for what comes after.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// Await returns the first event at or after position from that matches,
// waiting up to timeout for it.
func (r *Recorder) Await(ctx context.Context, from int, timeout time.Duration, match func(Event) bool) (Event, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		for _, e := range r.events[min(from, len(r.events)):] {
			if match(e) {
				r.mu.Unlock()
				return e, nil
			}
		}
		from = len(r.events)
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return Event{}, fmt.Errorf("not seen within %v", timeout)
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Is matches events of kind whose fields equal the given key, value pairs
// (compared as fmt.Sprint strings).
func Is(kind string, kv ...string) func(Event) bool {
	return func(e Event) bool {
		if e.Kind() != kind {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if e.Str(kv[i]) != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// Bot is a headless client (chat -bot) process. Its JSON events go to the
// cluster's Recorder and, verbatim, to Dir/name.events.jsonl; its log to
// Dir/name.client.log; its stderr to Dir/name.log.
type Bot struct {
	*Proc
	c *Cluster

	mu    sync.Mutex
	token string
}

// BotOptions describes a bot.
type BotOptions struct {
	Name string
	// REST and Control are the addresses the bot dials for Central;
	// empty means Central's own.
	REST, Control string
	// Args are the bot's role and pace: -peer/-accept, -rate, ...
	Args []string
}

// StartBot starts a bot. It returns once the process runs.
func (c *Cluster) StartBot(o BotOptions) (*Bot, error) {
	rest, ctl := o.REST, o.Control
	if rest == "" {
		rest = c.REST
	}
	if ctl == "" {
		ctl = c.Control
	}
	args := []string{"-bot", "-name", o.Name, "-central", rest, "-control", ctl,
		"-log", filepath.Join(c.opts.Dir, o.Name+".client.log")}
	if c.opts.TLS {
		args = append(args, "-ca", c.certs.CA)
	}
	p, err := newProc(c.opts.Bin, c.opts.Dir, o.Name, "chat", append(args, o.Args...))
	if err != nil {
		return nil, err
	}
	b := &Bot{Proc: p, c: c}
	p.stdout = b.newStdout
	c.mu.Lock()
	if c.bots[o.Name] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("cluster: bot %s exists", o.Name)
	}
	c.bots[o.Name] = b
	c.mu.Unlock()
	return b, p.start()
}

// Bot returns the bot name, or nil.
func (c *Cluster) Bot(name string) *Bot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bots[name]
}

// Bots lists every bot.
func (c *Cluster) Bots() []*Bot {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Bot, 0, len(c.bots))
	for _, b := range c.bots {
		out = append(out, b)
	}
	return out
}

// Token is the session token from the bot's last "ready" event.
func (b *Bot) Token() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.token
}

// Restart starts a stopped bot again with its session token, so it gets
// its identity (and its rooms) back.
func (b *Bot) Restart() error {
	tok := b.Token()
	if tok == "" {
		return fmt.Errorf("cluster: bot %s never printed its token", b.Name)
	}
	b.Proc.mu.Lock()
	b.Proc.args = append(withoutFlag(b.Proc.args, "-token"), "-token", tok)
	b.Proc.mu.Unlock()
	return b.start()
}

// Start starts a stopped bot again as it was first started, without a
// token: for one that exited before it registered.
func (b *Bot) Start() error { return b.start() }

// StopClean ends the bot with SIGTERM (it prints its report) and waits.
func (b *Bot) StopClean(grace time.Duration) error { return b.Stop(syscall.SIGTERM, grace) }

func withoutFlag(args []string, flag string) []string {
	out := args[:0:0]
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// newStdout is the bot's stdout for one run: lines to the events file and
// the Recorder.
func (b *Bot) newStdout() io.WriteCloser {
	f, err := os.OpenFile(filepath.Join(b.c.opts.Dir, b.Name+".events.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		f = nil
	}
	return &lineSink{b: b, run: b.starts + 1, file: f}
}

// lineSink splits a bot's stdout into lines.
type lineSink struct {
	b    *Bot
	run  int
	file *os.File
	buf  []byte
}

func (s *lineSink) Write(p []byte) (int, error) {
	if s.file != nil {
		_, _ = s.file.Write(p)
	}
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		var m map[string]any
		if json.Unmarshal(s.buf[:i], &m) == nil {
			if m["ev"] == "ready" {
				if tok, ok := m["token"].(string); ok {
					s.b.mu.Lock()
					s.b.token = tok
					s.b.mu.Unlock()
				}
			}
			s.b.c.Events.add(s.b.Name, s.run, m)
		}
		s.buf = s.buf[i+1:]
	}
	return len(p), nil
}

func (s *lineSink) Close() error {
	if s.file != nil {
		return s.file.Close()
	}
	return nil
}
