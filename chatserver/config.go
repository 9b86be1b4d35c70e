package chatserver

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"nearchat/pkg/bounds"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// Listen is the plaintext TCP address to serve on; port 0 picks a free
	// port. It may be empty when TLS is on: then only TLS is served.
	Listen string
	// TLS, when set, serves TLS 1.3 on TLSListen as well (or only).
	TLS       *tls.Config
	TLSListen string
	// ID names the server to clients and to Central. Empty means "chat-"
	// followed by the bound port.
	ID string
	// Loops is the number of gnet event loops; 0 means one per CPU.
	Loops int
	// MaxFrame is the largest inbound frame accepted (at most wire.MaxFrame).
	MaxFrame int
	// MaxConns bounds open connections, TLS handshakes included: one more
	// evicts the oldest that has not joined a room, or is told
	// server_full and closed when there is none.
	MaxConns int
	// MaxConnsPerSource bounds the connections of one IP address (0: no
	// bound), as MaxConns bounds them all, the address's own oldest giving
	// way. Past the descriptor budget (RLIMIT_NOFILE minus a reserve) a
	// connection is refused.
	MaxConnsPerSource int
	// HelloTimeout closes a connection that has not said Hello this long
	// after it opened; FrameTimeout one that started a frame and has not
	// finished it. (IdleTimeout, below, closes one that said Hello and then
	// nothing.)
	HelloTimeout time.Duration
	FrameTimeout time.Duration
	// MaxRooms bounds rooms on this server.
	MaxRooms int
	// MaxMembers bounds the members of one room.
	MaxMembers int
	// MaxOutbound is the number of unsent bytes after which a member is
	// cut off as a slow consumer. It should exceed HighWater plus the
	// SendWindow (client.Config) of every member that sends at once.
	MaxOutbound int
	// HighWater is the backlog (unsent bytes, plus fan-out queued for the
	// member on its event loop) past which a member is behind: while one
	// is, its room's senders get no Acks, which stops them after their
	// SendWindow. 0 means MaxOutbound/4.
	HighWater int
	// SlowTimeout bounds how long a member may stay behind (and so hold its
	// room's senders) before it is cut off as a slow consumer.
	SlowTimeout time.Duration
	// IdleTimeout closes a connection that said Hello and then sent nothing
	// (not even a Ping) for this long, in a room or not; its room, if any,
	// sees it leave. Clients ping every third of their
	// own idle timeout (15 s by default). 0 disables it.
	IdleTimeout time.Duration
	// HistoryBudget and OutboundBudget cap the bytes held in all rooms'
	// histories and in all members' unsent backlogs (with the deliveries
	// held for them). Past either, new rooms are refused (server_full),
	// and past the outbound budget new members too, while those already
	// in keep working, and histories stop growing. 0 means an eighth of
	// the machine's memory each.
	HistoryBudget  int64
	OutboundBudget int64
	// SendRate and SendBurst bound the Chat frames taken from one member
	// (per second, and at once); past them its input is left unread until
	// its rate allows more, which slows a session's sender through its
	// SendWindow. One that sends 256 KiB more meanwhile is cut off
	// (rate_limited). The default is a safety net against floods, above
	// what one loopback sender reaches in the benchmarks; the Ack credit
	// is what paces senders. (It was 100,000 until a faster machine's one
	// sender reached that: bin/compare's room of two then measured the
	// limit, 100,000 a second after the burst, not the server.)
	SendRate  float64
	SendBurst int
	// History is how many recent messages each room keeps for members that
	// reconnect or move here. A joiner is replayed the newest of them that
	// fit in a quarter of MaxOutbound (1 MiB by default: 256 frames
	// of up to 4 KiB), and asks the senders for anything older. 0 keeps none: a Join asking for history
	// (Since or Move) gets no replay, and its Joined says so (Truncated
	// when Since is below Seq, Oldest Seq+1); the members then ask the
	// senders for what they missed (Resend), out of the senders' windows.
	History int
	// ResendRate and ResendBurst bound the Resend asks forwarded for one
	// member (per second, and at once); asks beyond them are dropped, and
	// the asker asks again later on its own timer.
	ResendRate  float64
	ResendBurst int
	// TicketKey is Central's Ed25519 public key. When set, Join needs a
	// ticket signed by Central for exactly that room, user and epoch (or a
	// later epoch than the room has here), not yet expired.
	TicketKey ed25519.PublicKey
	// Central is the address (host:port or URL) of Central's REST API.
	// Empty runs the server standalone.
	Central string
	// Secret is the cluster secret presented to Central.
	Secret string
	// TokenFile, when set, keeps the server token Central issues at
	// registration, so a restarted server presents it and takes its id
	// back at once. Central gives a live server's id to nobody without its
	// token: a restarted server without one waits until Central has
	// declared its old instance down (OfflineAfter). The file must hold
	// a token or nothing, or not be there yet (Validate).
	TokenFile string
	// CentralTLS, when set, reaches Central over https with this client
	// configuration (its certificate, if any, can stand for the secret).
	CentralTLS *tls.Config
	// Advertise is the address clients should dial, as told to Central;
	// empty means the bound address.
	Advertise string
	// Heartbeat is the interval between heartbeats to Central; 0 takes the
	// interval Central suggests at registration.
	Heartbeat time.Duration
	// Metrics turns on the counters behind Server.Metrics and Collector
	// (frames, bytes, fan-out latency, busy time, history); off, the event
	// loops record nothing beyond the connection count.
	Metrics bool
	// ShutdownGrace bounds how long Close waits for goodbye frames to go out.
	ShutdownGrace time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger

	// holdDelay is how long a streaming member's deliveries may be held
	// to be written together (fanout.go); 0 means the default, holdDelay.
	// Tests set it.
	holdDelay time.Duration
	// pace, if set, is the pause after a round to a big shard in place of
	// the round's own duration (fanout.go, paceShard). Tests set it.
	pace time.Duration
}

// DefaultConfig returns the configuration of bin/chatserver without flags.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:3002",
		MaxFrame:          wire.MaxFrame,
		MaxConns:          100_000,
		MaxConnsPerSource: 2048,
		HelloTimeout:      5 * time.Second,
		FrameTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxRooms:          50_000,
		MaxMembers:        10_000,
		MaxOutbound:       4 << 20,
		SlowTimeout:       60 * time.Second,
		SendRate:          1_000_000,
		SendBurst:         100_000,
		History:           256,
		ResendRate:        4,
		ResendBurst:       8,
		ShutdownGrace:     time.Second,
		Metrics:           true,
	}
}

// Limits Validate holds the settings to, beyond those stated in place.
const (
	// MaxLoops bounds Loops: past a thousand event loops each costs a
	// goroutine and an epoll instance and buys no parallelism.
	MaxLoops = 1024
	// MinOutbound is the least MaxOutbound: a member must be able to hold
	// one frame of the largest size.
	MinOutbound = 64 << 10
	// MaxTimeout bounds every timeout and interval setting: a day is past
	// any sensible value, and far from where time arithmetic overflows.
	MaxTimeout = 24 * time.Hour
	// MinHeartbeat is the shortest Heartbeat other than 0 (Central's).
	MinHeartbeat = 10 * time.Millisecond
	// MaxHistory bounds History (messages kept per room).
	MaxHistory = 1 << 20
)

// Validate reports the first setting out of its accepted range as a
// *bounds.Error naming the bin/chatserver flag that sets it, the value
// and the range, without changing c. New calls it; bin/chatserver calls it
// first so a bad flag exits 2 before anything starts.
// It only reads c: safe for concurrent use.
func (c *Config) Validate() error {
	var addrs error
	if c.TLS != nil {
		// bin/chatserver serves TLS on -listen and plaintext on
		// -plain-listen (none when empty).
		addrs = bounds.First(bounds.Addr("listen", c.TLSListen, false), bounds.Addr("plain-listen", c.Listen, true))
	} else {
		addrs = bounds.Addr("listen", c.Listen, false)
	}
	var id error
	if c.ID != "" && proto.CheckServer(c.ID) != nil {
		id = bounds.Fail("id", c.ID, fmt.Sprintf("1 to %d ASCII letters, digits, '.', '_' or '-', not %q (empty: chat-<port>)", proto.MaxServer, proto.CentralName))
	}
	var hw error
	if c.HighWater != 0 {
		// Below max-outbound, or a member would be cut off before it
		// counted as behind.
		hw = bounds.Range("high-water", c.HighWater, 1, c.MaxOutbound-1)
	}
	var tokenFile error
	if c.TokenFile != "" {
		if _, why := readTokenFile(c.TokenFile); why != "" {
			tokenFile = bounds.Fail("token-file", c.TokenFile, "a file that holds a server token, or nothing, or is not there yet in a directory that is (not: "+why+")")
		}
	}
	var heartbeat error
	if c.Heartbeat != 0 && (c.Heartbeat < MinHeartbeat || c.Heartbeat > time.Hour) {
		heartbeat = bounds.Fail("heartbeat", c.Heartbeat, "0 (Central's) or "+bounds.Duration(MinHeartbeat)+" to 1h")
	}
	return bounds.First(
		addrs,
		id,
		bounds.Range("loops", c.Loops, 0, MaxLoops),
		bounds.AtLeast("max-conns", c.MaxConns, 1),
		bounds.AtLeast("max-conns-per-source", c.MaxConnsPerSource, 0),
		bounds.Range("hello-timeout", c.HelloTimeout, time.Millisecond, MaxTimeout),
		bounds.Range("frame-timeout", c.FrameTimeout, time.Millisecond, MaxTimeout),
		bounds.AtLeast("max-rooms", c.MaxRooms, 1),
		bounds.AtLeast("max-members", c.MaxMembers, 1),
		bounds.AtLeast("max-outbound", c.MaxOutbound, MinOutbound),
		bounds.Range("history", c.History, 0, MaxHistory),
		hw,
		bounds.Range("slow-timeout", c.SlowTimeout, time.Millisecond, MaxTimeout),
		bounds.Range("idle-timeout", c.IdleTimeout, 0, MaxTimeout),
		bounds.Range("send-rate", c.SendRate, 1, 1e9),
		bounds.Range("resend-rate", c.ResendRate, 0.01, 1e6),
		bounds.AtLeast("history-budget", c.HistoryBudget, 0),
		bounds.AtLeast("outbound-budget", c.OutboundBudget, 0),
		advertise(c.Advertise),
		heartbeat,
		tokenFile,
		bounds.Range("shutdown-grace", c.ShutdownGrace, 0, MaxTimeout),
	)
}

// advertise checks the address told to Central: one to dial, no longer
// than Central takes (proto.MaxAddr), or empty for the listen address.
func advertise(v string) error {
	if len(v) > proto.MaxAddr {
		return bounds.Fail("advertise", v[:32]+"...", fmt.Sprintf("host:port of at most %d bytes (Central tells it to every client); this one has %d", proto.MaxAddr, len(v)))
	}
	return bounds.DialAddr("advertise", v, true)
}

// validate checks c and fills in the defaults its zero values stand for.
func (c *Config) validate() error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("chatserver: invalid config: %w", err)
	}
	var errs []error
	if c.holdDelay == 0 {
		c.holdDelay = holdDelay
	}
	if c.HighWater == 0 {
		c.HighWater = c.MaxOutbound / 4
	}
	if c.HistoryBudget == 0 {
		c.HistoryBudget = machineMemory() / 8
	}
	if c.OutboundBudget == 0 {
		c.OutboundBudget = machineMemory() / 8
	}
	if c.MaxFrame <= wire.HeaderSize || c.MaxFrame > wire.MaxFrame {
		errs = append(errs, fmt.Errorf("max frame %d: want %d..%d", c.MaxFrame, wire.HeaderSize+1, wire.MaxFrame))
	}
	if c.ResendBurst <= 0 || c.SendBurst <= 0 {
		errs = append(errs, fmt.Errorf("resend burst %d, send burst %d: must be positive", c.ResendBurst, c.SendBurst))
	}
	if len(errs) > 0 {
		return fmt.Errorf("chatserver: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// machineMemory returns the machine's memory in bytes (MemTotal from
// /proc/meminfo), or 8 GiB where that cannot be read.
func machineMemory() int64 {
	const fallback = 8 << 30
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return fallback
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb > 0 {
				return kb << 10
			}
		}
	}
	return fallback
}
