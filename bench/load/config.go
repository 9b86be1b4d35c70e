package load

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"nearchat/client"
	"nearchat/pkg/bounds"
)

// Arrivals names the distribution of a member's inter-message times.
type Arrivals string

const (
	// Exponential arrivals make each member a Poisson source: the usual
	// model of independent people typing.
	Exponential Arrivals = "exp"
	// Uniform arrivals draw each gap within ±50% of the mean.
	Uniform Arrivals = "uniform"
)

// Limits every run stays within, whatever the flags say.
const (
	MaxRooms    = 20_000
	MaxMembers  = 16
	MaxRate     = 1000 // messages per second per member
	MaxDuration = 24 * time.Hour
	MaxServers  = 64
	MaxSize     = 4096
)

// Config describes one load run. Start from DefaultConfig.
type Config struct {
	// Rooms rooms of Members members each.
	Rooms, Members int
	// Rate is each member's mean messages per second; Arrivals their
	// spacing; Size the bytes of text per message (at least enough for the
	// sender's name and number).
	Rate     float64
	Arrivals Arrivals
	Size     int
	// Duration is how long members send once every room is up.
	Duration time.Duration
	// SetupTimeout bounds forming every room; Settle bounds the wait for
	// acknowledgements and in-flight deliveries after sending stops.
	SetupTimeout time.Duration
	Settle       time.Duration
	// SetupConcurrency is how many rooms are formed at once.
	SetupConcurrency int

	// Central and Control, when both set, are an existing Central's REST
	// and control addresses; empty starts a Central process (Bin/central).
	Central, Control string
	// Servers is how many chat servers to start (children of
	// Bin/chatserver). With an existing Central, 0 uses only the servers
	// it already has.
	Servers int
	// MaxServers bounds the servers this run may have started at once
	// (the "add" chaos action stops there).
	MaxServers int
	// Bin is the directory holding central and chatserver.
	Bin string
	// Secret is the cluster secret; empty makes one up for a Central of
	// our own (an existing Central needs its own).
	Secret string
	// Heartbeat is the chat servers' heartbeat interval, OfflineAfter when
	// our own Central gives a silent server up.
	Heartbeat, OfflineAfter time.Duration
	// ProbeEvery is each member's RTT probe and latency report interval.
	ProbeEvery time.Duration
	// Liveness is each member's chat-connection liveness check
	// (client.SessionConfig.Liveness; 0 turns it off).
	Liveness time.Duration
	// MinGain is our own Central's absolute anti-flap margin. Every
	// server here sits on one loopback, so a "better server" is only
	// measurement noise, which under load exceeds the production default
	// of 5 ms; the default keeps the moves this run counts to the ones
	// chaos causes.
	MinGain time.Duration

	// Chaos is the schedule of disruptive actions, relative to the start
	// of sending (see ParseChaos).
	Chaos []Action

	// LogDir receives the logs of Central, the chat servers and this run;
	// empty makes a temporary directory, removed after a clean run unless
	// KeepLogs.
	LogDir   string
	KeepLogs bool
	// Progress, if set, receives one line per second while the run goes.
	Progress io.Writer
	// Logger receives the run's own log; nil discards it.
	Logger *slog.Logger
}

// DefaultConfig returns 50 rooms of 3 members at 1 message/s for 30 s on
// three chat servers, without chaos.
func DefaultConfig() Config {
	return Config{
		Rooms:            50,
		Members:          3,
		Rate:             1,
		Arrivals:         Exponential,
		Size:             64,
		Duration:         30 * time.Second,
		SetupTimeout:     2 * time.Minute,
		Settle:           20 * time.Second,
		SetupConcurrency: 32,
		Servers:          3,
		MaxServers:       8,
		Bin:              "bin",
		Heartbeat:        250 * time.Millisecond,
		OfflineAfter:     2 * time.Second,
		ProbeEvery:       5 * time.Second,
		Liveness:         client.DefaultSessionConfig().Liveness,
		MinGain:          50 * time.Millisecond,
	}
}

// Validate reports the first setting out of range as a *bounds.Error
// naming the bin/chatload flag that sets it, the value and the range, on
// one line. Run calls it; bin/chatload calls it first and exits 2.
// It only reads c: safe for concurrent use.
func (c *Config) Validate() error {
	var arrivals, offline, servers, liveness, ext, chaos error
	if c.Arrivals != Exponential && c.Arrivals != Uniform {
		arrivals = bounds.Fail("arrivals", string(c.Arrivals), fmt.Sprintf("%s or %s", Exponential, Uniform))
	}
	if c.OfflineAfter < c.Heartbeat {
		offline = bounds.Fail("offline-after", c.OfflineAfter, "at least -heartbeat ("+bounds.Duration(c.Heartbeat)+")")
	}
	if c.Liveness != 0 && (c.Liveness < client.MinLiveness || c.Liveness > client.MaxLiveness) {
		liveness = bounds.Fail("liveness", c.Liveness, fmt.Sprintf("0 (off) or %s to %s", bounds.Duration(client.MinLiveness), bounds.Duration(client.MaxLiveness)))
	}
	external := c.Central != "" || c.Control != ""
	if external {
		switch {
		case c.Central == "":
			ext = bounds.Fail("central", c.Central, "Central's REST address, with -control")
		case c.Control == "":
			ext = bounds.Fail("control", c.Control, "Central's control address, with -central")
		case loopbackOnly(c.Central) != nil:
			ext = bounds.Fail("central", c.Central, "a loopback host:port (the load generator talks only to loopback)")
		case loopbackOnly(c.Control) != nil:
			ext = bounds.Fail("control", c.Control, "a loopback host:port (the load generator talks only to loopback)")
		case c.Servers > 0 && c.Secret == "":
			ext = bounds.Fail("secret", "", "Central's cluster secret, to start chat servers for an existing Central (or -servers 0)")
		}
	} else if c.Servers < 1 {
		servers = bounds.Fail("servers", c.Servers, "at least 1 for a Central of our own")
	}
	for _, a := range c.Chaos {
		if a.Kind == ChaosCentral && external && chaos == nil {
			chaos = bounds.Fail("chaos", a.String(), "no central= action: Central can be restarted only when this process runs it")
		}
		if (a.Kind == ChaosKill || a.Kind == ChaosDrain) && c.Servers < 2 && chaos == nil {
			chaos = bounds.Fail("chaos", a.String(), "at least two chat servers started by this run (-servers)")
		}
	}
	return bounds.First(
		bounds.Range("rooms", c.Rooms, 1, MaxRooms),
		bounds.Range("members", c.Members, 2, MaxMembers),
		bounds.Range("rate", c.Rate, 0.001, MaxRate),
		arrivals,
		bounds.Range("size", c.Size, 0, MaxSize),
		bounds.Range("duration", c.Duration, time.Millisecond, MaxDuration),
		bounds.Range("setup-timeout", c.SetupTimeout, time.Millisecond, time.Hour),
		bounds.Range("settle", c.Settle, time.Millisecond, time.Hour),
		bounds.Range("setup-concurrency", c.SetupConcurrency, 1, 1024),
		bounds.Range("max-servers", c.MaxServers, 1, MaxServers),
		bounds.Range("servers", c.Servers, 0, c.MaxServers),
		servers,
		bounds.Range("heartbeat", c.Heartbeat, 10*time.Millisecond, time.Hour),
		bounds.Range("offline-after", c.OfflineAfter, time.Millisecond, time.Hour),
		offline,
		bounds.Range("probe-every", c.ProbeEvery, client.MinProbeEvery, time.Hour),
		liveness,
		bounds.Range("min-gain", c.MinGain, 0, time.Hour),
		ext,
		chaos,
	)
}

// loopbackOnly refuses an address whose host is not a loopback address.
func loopbackOnly(addr string) error {
	a := strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://")
	a = strings.TrimSuffix(a, "/")
	host, _, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q: the load generator talks only to loopback addresses", addr)
	}
	return nil
}

// ChaosKind is one kind of disruptive action.
type ChaosKind string

const (
	// ChaosKill sends SIGKILL to the chat server hosting the most rooms,
	// then starts it again (same name and address) once Central has marked
	// it down and moved its rooms away.
	ChaosKill ChaosKind = "kill"
	// ChaosDrain sends SIGTERM to the chat server hosting the most rooms:
	// it asks Central to move its rooms away and exits when empty; it is
	// then started again.
	ChaosDrain ChaosKind = "drain"
	// ChaosAdd starts one more chat server (up to MaxServers).
	ChaosAdd ChaosKind = "add"
	// ChaosCentral closes Central and starts a new one on the same ports.
	ChaosCentral ChaosKind = "central"
)

var chaosKinds = []ChaosKind{ChaosKill, ChaosDrain, ChaosAdd, ChaosCentral}

// Action is one entry of a chaos schedule: Kind once at At, or, when Every
// is set, at Every, 2×Every, ... while the load runs.
type Action struct {
	Kind  ChaosKind
	At    time.Duration
	Every time.Duration
}

// String renders a the way ParseChaos reads it. Safe for concurrent use.
func (a Action) String() string {
	if a.Every > 0 {
		return fmt.Sprintf("%s=%v", a.Kind, a.Every)
	}
	return fmt.Sprintf("%s=@%v", a.Kind, a.At)
}

// ParseChaos reads a schedule such as "kill=10s,central=@65s": comma-
// separated kind=WHEN entries, where kind is kill, drain, add or central,
// and WHEN is a duration D (every D, first at D) or @T (once, T after
// sending starts). A kind may appear several times. Empty means no chaos.
// Safe for concurrent use.
func ParseChaos(spec string) ([]Action, error) {
	var out []Action
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		kind, when, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("chaos %q: want kind=WHEN", part)
		}
		k := ChaosKind(strings.TrimSpace(kind))
		if !slices.Contains(chaosKinds, k) {
			return nil, fmt.Errorf("chaos %q: unknown kind %q (want kill, drain, add or central)", part, kind)
		}
		when = strings.TrimSpace(when)
		once := strings.HasPrefix(when, "@")
		d, err := time.ParseDuration(strings.TrimPrefix(when, "@"))
		if err != nil {
			return nil, fmt.Errorf("chaos %q: %w", part, err)
		}
		if once && d < 0 || !once && d < 100*time.Millisecond {
			return nil, fmt.Errorf("chaos %q: a period must be at least 100ms, a time not negative", part)
		}
		a := Action{Kind: k}
		if once {
			a.At = d
		} else {
			a.Every = d
		}
		out = append(out, a)
	}
	return out, nil
}

// ChaosString renders a schedule the way ParseChaos reads it. Safe for
// concurrent use.
func ChaosString(as []Action) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// due lists the actions of the schedule that fall in (from, to]; start
// with from = -1 so that an action at @0 is due.
func due(sched []Action, from, to time.Duration) []ChaosKind {
	var out []ChaosKind
	for _, a := range sched {
		if a.Every > 0 {
			for k := from/a.Every + 1; k*a.Every <= to; k++ {
				out = append(out, a.Kind)
			}
		} else if a.At > from && a.At <= to {
			out = append(out, a.Kind)
		}
	}
	return out
}
