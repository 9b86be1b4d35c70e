// Command chat is nearchat's client: a raw-mode terminal UI by default, and
// a headless bot with -bot.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"nearchat/client"
	"nearchat/pkg/bounds"
	"nearchat/pkg/delaynet"
	"nearchat/pkg/proto"
	"nearchat/pkg/rtt"
)

// flags holds everything both modes share, plus the bot's own settings.
type flags struct {
	name, central, control string
	token                  string
	emulate                string
	logFile                string
	ca                     string
	tls                    *tls.Config // loaded from ca by preflight
	verbose                bool
	probeEvery             time.Duration
	liveness               time.Duration

	bot      bool
	peers    string
	accept   bool
	rate     float64
	count    int
	duration time.Duration
	size     int
	quiet    bool
}

func parseFlags(args []string, out io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, `usage: chat [flags]            terminal client (arrow keys, Enter)
       chat -bot [flags]       headless bot, one JSON line per event

flags:
`)
		fs.PrintDefaults()
	}
	def := client.DefaultConfig()
	fs.StringVar(&f.name, "name", "", "user `name` (the terminal client asks when empty; required with -bot)")
	fs.StringVar(&f.central, "central", envOr("NEARCHAT_CENTRAL", def.Central), "Central's REST `address`, or several Central replicas' comma-separated; $NEARCHAT_CENTRAL when set")
	fs.StringVar(&f.control, "control", "", "Central's control port `address`, or one per replica comma-separated (default: learned from Central, the same port on each replica's host)")
	fs.StringVar(&f.token, "token", os.Getenv("NEARCHAT_TOKEN"), "session `token` from an earlier run, to get the same identity back (default $NEARCHAT_TOKEN)")
	fs.StringVar(&f.emulate, "emulate-rtt", "", "emulate round-trip times to chat servers, e.g. `serv1=40ms,serv3=60ms` (delay added in both directions, for demos on one machine)")
	fs.StringVar(&f.logFile, "log", "", "write the client's log to this `file` (default: discard in the terminal UI, stderr for the bot)")
	fs.StringVar(&f.ca, "ca", os.Getenv("NEARCHAT_CA"), "CA `file`: talk TLS 1.3 to Central and the chat servers, trusting only this CA (default $NEARCHAT_CA)")
	fs.BoolVar(&f.verbose, "v", false, "debug logging")
	fs.DurationVar(&f.probeEvery, "probe-every", def.ProbeEvery, "interval between RTT probe rounds over the live chat servers, 50ms to 1h")
	fs.DurationVar(&f.liveness, "liveness", def.Session.Liveness, "fast check of the room's connection: report it broken when a ping goes unanswered this long (scaled up by the path's RTT and jitter), 10ms to 1m (0: off, only the 15 s idle timeout)")
	fs.BoolVar(&f.bot, "bot", false, "run headless: request or accept a chat, send messages, print JSON events")
	fs.StringVar(&f.peers, "peer", "", "bot: `users` to request a chat with (comma-separated)")
	fs.BoolVar(&f.accept, "accept", false, "bot: accept every incoming chat request")
	fs.Float64Var(&f.rate, "rate", 5, "bot: messages per second (`rate`), 0.001 to 10000")
	fs.IntVar(&f.count, "count", 0, "bot: messages to send, at least 0 (0: until -duration or a signal)")
	fs.DurationVar(&f.duration, "duration", 0, "bot: stop after this long, 0 to 8760h (0: no limit)")
	fs.IntVar(&f.size, "size", 0, "bot: pad messages to this many `bytes`, 0 to 4096")
	fs.BoolVar(&f.quiet, "quiet", false, "bot: do not print a line per received message")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := checkSession(f.probeEvery, f.liveness); err != nil {
		return nil, err
	}
	if err := bounds.First(checkCentral(f.central), checkControlAddr(f.control), checkToken(f.token)); err != nil {
		return nil, err
	}
	if !f.bot {
		var botOnly []string
		fs.Visit(func(fl *flag.Flag) {
			switch fl.Name {
			case "peer", "accept", "rate", "count", "duration", "size", "quiet":
				botOnly = append(botOnly, "-"+fl.Name)
			}
		})
		if len(botOnly) > 0 {
			verb := "work"
			if len(botOnly) == 1 {
				verb = "works"
			}
			return nil, fmt.Errorf("%s only %s with -bot; the terminal client asks whom to chat with", strings.Join(botOnly, ", "), verb)
		}
	}
	if f.bot {
		switch {
		case f.name == "":
			return nil, errors.New("-bot needs -name")
		case f.peers == "" && !f.accept:
			return nil, errors.New("-bot needs -peer or -accept")
		}
		if err := bounds.First(
			bounds.Range("rate", f.rate, 0.001, 10000),
			bounds.AtLeast("count", f.count, 0),
			bounds.Range("duration", f.duration, 0, 365*24*time.Hour),
			// A message over MaxText is refused by the server.
			bounds.Range("size", f.size, 0, proto.MaxText),
		); err != nil {
			return nil, err
		}
		if err := proto.CheckUser(f.name); err != nil {
			return nil, fmt.Errorf("-name: %s", nameProblem(f.name))
		}
		for _, p := range strings.Split(f.peers, ",") {
			switch {
			case f.peers == "":
			case p == f.name:
				return nil, fmt.Errorf("-peer %s: that is the bot itself (-name %s); name another user", p, f.name)
			case proto.CheckUser(p) != nil:
				return nil, fmt.Errorf("-peer: %s", nameProblem(p))
			}
		}
	}
	return f, nil
}

// checkSession holds -probe-every and -liveness to the client library's
// bounds, so a bad value is refused at startup naming the flag (client.New
// would name the field; 0 used to stand for the default probe interval).
func checkSession(probeEvery, liveness time.Duration) error {
	var live error
	if liveness != 0 && (liveness < client.MinLiveness || liveness > client.MaxLiveness) {
		live = bounds.Fail("liveness", liveness, fmt.Sprintf("0 (off) or %s to %s", bounds.Duration(client.MinLiveness), bounds.Duration(client.MaxLiveness)))
	}
	return bounds.First(bounds.Range("probe-every", probeEvery, client.MinProbeEvery, client.MaxProbeEvery), live)
}

// checkCentral refuses a -central that cannot be an address, before the
// client looks for Central there: each replica's host:port or http(s) URL.
// A malformed one used to come back from the first request as a URL
// parser's error, with status 1.
func checkCentral(v string) error {
	const want = "host:port or an http(s):// URL, comma-separated for replicas"
	for _, a := range strings.Split(v, ",") {
		raw := a
		if !strings.Contains(raw, "://") {
			raw = "http://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			return bounds.Fail("central", a, want)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return bounds.Fail("central", a, want)
			}
		}
	}
	return nil
}

// checkControlAddr refuses a -control that is not host:port, or a list of
// them: the client would otherwise dial it for ever.
func checkControlAddr(v string) error {
	if v == "" {
		return nil // learned from Central
	}
	for _, a := range strings.Split(v, ",") {
		if err := bounds.DialAddr("control", a, false); err != nil {
			return err
		}
	}
	return nil
}

// checkToken refuses a -token (or $NEARCHAT_TOKEN) that is not what Central
// issues, 64 hex digits, so a token cut short when copied is named at
// startup rather than refused by Central after the name was typed. The
// refusal describes the value instead of printing it: a token is a
// credential.
func checkToken(v string) error {
	if v == "" {
		return nil
	}
	const want = "64 hex digits, as the menu of an earlier run showed (from -token or $NEARCHAT_TOKEN)"
	if n := utf8.RuneCountInString(v); n != 64 {
		return &bounds.Error{Name: "token", Value: fmt.Sprintf("of %d characters", n), Want: want}
	}
	for i, r := range []rune(v) {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return &bounds.Error{Name: "token", Value: fmt.Sprintf("with %q (character %d) not a hex digit", r, i+1), Want: want}
		}
	}
	return nil
}

// parseEmulation reads "serv1=40ms,serv3=60ms" into server ID -> RTT.
func parseEmulation(s string) (map[string]time.Duration, error) {
	m := map[string]time.Duration{}
	if s == "" {
		return m, nil
	}
	for _, part := range strings.Split(s, ",") {
		id, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" {
			return nil, fmt.Errorf("-emulate-rtt: %q is not server=duration", part)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("-emulate-rtt: %q: want a duration such as 40ms", part)
		}
		m[id] = d
	}
	return m, nil
}

// newClient builds the client library with the flags' settings. With
// -emulate-rtt, connections to a server get half its RTT added each way;
// the server's address is looked up in the client's latest server list.
func newClient(f *flags, log *slog.Logger, onProbe func(map[string]rtt.Result)) (*client.Client, error) {
	rtts, err := parseEmulation(f.emulate)
	if err != nil {
		return nil, err
	}
	opts := client.DefaultConfig()
	opts.Central, opts.Control, opts.User, opts.Token = f.central, f.control, f.name, f.token
	opts.Logger = log
	opts.OnProbe = onProbe
	opts.Session.Liveness = f.liveness
	opts.ProbeEvery = f.probeEvery
	var c *client.Client
	if len(rtts) > 0 {
		opts.Dialer = &delaynet.Dialer{Delay: func(addr string) time.Duration {
			for _, s := range c.Servers() {
				if s.Addr == addr {
					return rtts[s.ID] / 2
				}
			}
			return 0
		}}
	}
	if f.bot {
		opts.Agent = "bot/1"
	}
	opts.TLS = f.tls
	c, err = client.New(opts)
	return c, err
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newLogger(f *flags, fallback io.Writer) (*slog.Logger, func(), error) {
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	w, done := fallback, func() {}
	if f.logFile != "" {
		file, err := os.OpenFile(f.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, err
		}
		w, done = file, func() { file.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), done, nil
}

func main() {
	f, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(2)
	}
	// SIGHUP is how a closed terminal window ends the client: it quits as
	// on SIGTERM, leaving its rooms and giving its name back, where the
	// default action killed it and left it listed until Central's grace
	// period ran out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if _, err := parseEmulation(f.emulate); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(2)
	}
	if err := preflight(ctx, f); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
	if f.bot {
		os.Exit(runBot(ctx, f, os.Stdout))
	}
	os.Exit(runTerminal(ctx, f))
}

// nameProblem says, for a person, why name is not a valid user name:
// counted in characters (not bytes), the offending character shown as
// typed, 1-based.
func nameProblem(name string) string {
	if name == "" {
		return "type a user name"
	}
	if n := utf8.RuneCountInString(name); n > proto.MaxUser {
		return fmt.Sprintf("%q has %d characters; a user name has at most %d", name, n, proto.MaxUser)
	}
	i := 0
	for _, r := range name {
		i++
		ok := r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		if !ok {
			what := fmt.Sprintf("%q", r)
			if r == ' ' {
				what = "a space"
			}
			return fmt.Sprintf("%q: %s (character %d) is not allowed; a user name uses only ASCII letters (a-z, A-Z), digits, '.', '_' and '-'", name, what, i)
		}
	}
	return ""
}
