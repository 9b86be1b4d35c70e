package central

import (
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/bounds"
	"nearchat/pkg/selection"
)

// Config is Central's configuration. Start from DefaultConfig.
type Config struct {
	// RESTListen and ControlListen are host:port; port 0 picks a free port.
	RESTListen    string
	ControlListen string

	// HeartbeatInterval is what chat servers are told to heartbeat at;
	// a server silent for OfflineAfter is marked down.
	HeartbeatInterval time.Duration
	OfflineAfter      time.Duration
	// ScanInterval is the period of the relocation scan, which also runs
	// on every liveness change.
	ScanInterval time.Duration
	// RequestTimeout ends a chat request nobody answered with REQ_TIMEOUT;
	// AwaitingEvery is the period of AWAITING_REQ while it waits.
	RequestTimeout time.Duration
	AwaitingEvery  time.Duration
	// AssignRetry is how often an unacknowledged Assign is sent again;
	// AssignGiveUp is how long Central keeps trying (also across the
	// member's reconnects) before it logs and drops the push.
	AssignRetry  time.Duration
	AssignGiveUp time.Duration
	// SessionGrace is how long a registered name stays reserved for its
	// token while no control connection is open, and how long a room whose
	// members all left its chat server keeps its place there
	// (serverRec.full).
	SessionGrace time.Duration
	// ReconnectGrace is how long a chat request waits for a member whose
	// control connection dropped (a Central replica relaying it died, a
	// network blip) to connect again before it fails with USER_NOT_FOUND;
	// a new request to such a user waits too. 0 fails at once.
	ReconnectGrace time.Duration
	// ProbeTimeout bounds Central's own echo check of a server reported
	// unreachable (longer for a distant server: see the package doc). It
	// is on the path of every move off a server whose link went dark, so
	// it is short; a failed check alone never marks a server down.
	ProbeTimeout time.Duration
	// SettleWait is how long a new room's placement waits, once everyone
	// accepted, for every member to have measured every open server; past
	// it the room is placed provisionally, or, while no open server is
	// measured by every member, waits for their reports up to
	// RequestTimeout.
	SettleWait time.Duration
	// MaxOutbound bounds the bytes queued for one control connection that
	// its client has not read; past a quarter of it the connection's input
	// is left unread (and cut off if that lasts), past it the client is
	// cut off.
	MaxOutbound int
	// ControlIdle closes a control connection that said Hello and then
	// sent nothing for this long (clients state their rooms and ping every
	// few seconds); 0 keeps silent connections open.
	ControlIdle time.Duration
	// RoomTTL removes a room once none of its members has been connected,
	// and no server has reported it, for this long; a user whose session
	// has been gone for SessionGrace and who is in no room is forgotten.
	RoomTTL time.Duration
	// MaxMembers bounds the members of one chat request (requester
	// included).
	MaxMembers int

	Policy selection.Policy

	// ClusterSecret, when not empty, must accompany every chat server's
	// register, heartbeat, drain and deregister.
	ClusterSecret string

	// RequestRate and RequestBurst bound each user's chat requests (a token
	// bucket), so nobody can flood another user with requests;
	// RegisterRate and RegisterBurst bound registrations from each source
	// (an IPv4 address, an IPv6 /64), so one flooder spends its own
	// allowance and not everyone's.
	RequestRate   float64
	RequestBurst  int
	RegisterRate  float64
	RegisterBurst int

	// TLS, when set, serves the REST API and the control port over TLS 1.3
	// only. With ClientCAs and ClientAuth VerifyClientCertIfGiven, a chat
	// server presenting a certificate from that CA needs no cluster secret.
	TLS *tls.Config

	// ChatTLS, when set, is the client configuration for Central's own
	// echo check of chat servers that serve TLS.
	ChatTLS *tls.Config

	// TicketKey, when set, signs a ticket for every member in every
	// Assign; chat servers holding the public key admit only ticket holders.
	// TicketTTL is how long a ticket stays valid.
	TicketKey ed25519.PrivateKey
	TicketTTL time.Duration

	// MaxConns bounds the descriptors Central's connections may hold, on
	// the REST and control ports together (a TLS control connection holds
	// three); 0 means the process's descriptor limit minus a reserve, and
	// a larger value is lowered to that. MaxConnsPerSource bounds the
	// connections of one IP address on each port (0: no bound).
	// Past either a connection that has not shown who it is gives way to
	// the new one (pkg/connlimit), or the new one is refused at once.
	MaxConns          int
	MaxConnsPerSource int
	// MaxUsers bounds the users Central holds (0: no bound). Past it a
	// registration first makes room by forgetting the users longest
	// offline that are in no room and wait on no request (as SessionGrace
	// would, only sooner), and is refused when there are none.
	MaxUsers int
	// MaxPendingPerSource bounds the chat requests pending for one user
	// from users registered from one address (0: no bound): 32 accounts of
	// one attacker, each renewing its request as it timed out, kept every
	// other request to a user who answers by hand declined (abuse sweep,
	// 2026-12-03). Behind a NAT, or a follower replica (whose users the
	// leader sees registered from its address), raise it.
	MaxPendingPerSource int
	// MaxServers bounds the chat servers Central holds, down ones included
	// (0: no bound). Past it a registration of a new id makes Central
	// forget the server down longest, and is refused when none is down.
	MaxServers int

	// Multicore runs the control port on one gnet event loop per CPU.
	Multicore bool

	// Store holds the records; nil means a fresh store.NewMemory(). A
	// store that already holds records is loaded by New.
	Store store.Store
	// Clock returns the current time; nil means time.Now. Tests inject a
	// fake one to exercise liveness without waiting.
	Clock func() time.Time
	// Logger receives Central's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the paper's defaults on loopback addresses.
func DefaultConfig() Config {
	return Config{
		RESTListen:          "127.0.0.1:8080",
		ControlListen:       "127.0.0.1:8081",
		HeartbeatInterval:   3 * time.Second,
		OfflineAfter:        15 * time.Second,
		ScanInterval:        4 * time.Second,
		RequestTimeout:      30 * time.Second,
		AwaitingEvery:       2 * time.Second,
		AssignRetry:         time.Second,
		AssignGiveUp:        2 * time.Minute,
		SessionGrace:        time.Minute,
		ReconnectGrace:      5 * time.Second,
		ProbeTimeout:        250 * time.Millisecond,
		MaxMembers:          16,
		MaxOutbound:         1 << 20,
		ControlIdle:         30 * time.Second,
		SettleWait:          2 * time.Second,
		RoomTTL:             10 * time.Minute,
		TicketTTL:           10 * time.Minute,
		RequestRate:         1,
		RequestBurst:        10,
		RegisterRate:        200,
		RegisterBurst:       2000,
		MaxUsers:            250_000,
		MaxServers:          4096,
		MaxPendingPerSource: 4,
		Policy:              selection.DefaultPolicy(),
		Multicore:           true,
		MaxConnsPerSource:   2048,
	}
}

// Limits Validate holds the settings to, beyond those stated in place.
const (
	// MaxInterval bounds the periods and timeouts: past a day none of
	// them makes sense.
	MaxInterval = 24 * time.Hour
	// MaxTTL bounds the lifetimes (rooms, sessions, tickets, a server's
	// silence): thirty days.
	MaxTTL = 30 * 24 * time.Hour
	// MinInterval is the shortest heartbeat, scan, retry and AWAITING_REQ
	// period: shorter ones spin.
	MinInterval = 10 * time.Millisecond
	// MinOutbound is the least MaxOutbound: a control client must be able
	// to hold a few frames of the largest size.
	MinOutbound = 64 << 10
	// MaxMembersLimit bounds MaxMembers (a request's invitees travel in
	// one frame).
	MaxMembersLimit = 1024
)

// Validate reports the first setting out of its accepted range as a
// *bounds.Error naming the bin/central flag that sets it, the value and
// the range, without changing c. New calls it; bin/central calls it first
// so a bad flag exits 2 before anything starts.
// It only reads c: safe for concurrent use.
func (c *Config) Validate() error {
	var ticketTTL error
	if c.TicketKey != nil && c.TicketTTL <= c.AssignGiveUp {
		// A retried Assign could carry an expired ticket.
		ticketTTL = bounds.Fail("ticket-ttl", c.TicketTTL, "more than -assign-give-up ("+bounds.Duration(c.AssignGiveUp)+")")
	}
	return bounds.First(
		bounds.Addr("rest", c.RESTListen, false),
		bounds.Addr("control", c.ControlListen, false),
		bounds.Range("heartbeat", c.HeartbeatInterval, MinInterval, time.Hour),
		bounds.Range("offline-after", c.OfflineAfter, max(c.HeartbeatInterval, MinInterval), MaxTTL),
		bounds.Range("scan", c.ScanInterval, MinInterval, MaxInterval),
		bounds.Range("request-timeout", c.RequestTimeout, time.Millisecond, MaxInterval),
		bounds.Range("awaiting-every", c.AwaitingEvery, MinInterval, MaxInterval),
		bounds.Range("assign-retry", c.AssignRetry, MinInterval, MaxInterval),
		bounds.Range("assign-give-up", c.AssignGiveUp, time.Millisecond, MaxTTL),
		bounds.Range("session-grace", c.SessionGrace, time.Millisecond, MaxTTL),
		bounds.Range("reconnect-grace", c.ReconnectGrace, 0, MaxInterval),
		bounds.Range("probe-timeout", c.ProbeTimeout, time.Millisecond, time.Minute),
		bounds.Range("min-gain", c.Policy.MinGain, 0, time.Hour),
		// A room's worst RTT can drop by 100% at most: more, and no room
		// ever moves.
		bounds.Range("min-gain-pct", c.Policy.MinGainPct, 0, 100),
		bounds.Range("min-dwell", c.Policy.MinDwell, 0, MaxTTL),
		bounds.Range("spread-factor", c.Policy.SpreadFactor, 0, 100),
		bounds.Range("room-ttl", c.RoomTTL, time.Millisecond, MaxTTL),
		bounds.Range("control-idle", c.ControlIdle, 0, MaxInterval),
		bounds.AtLeast("max-outbound", c.MaxOutbound, MinOutbound),
		bounds.Range("max-members", c.MaxMembers, 2, MaxMembersLimit),
		bounds.Range("request-rate", c.RequestRate, 0.001, 1e6),
		bounds.Range("request-burst", c.RequestBurst, 1, 1_000_000),
		bounds.Range("register-rate", c.RegisterRate, 0.001, 1e6),
		bounds.Range("register-burst", c.RegisterBurst, 1, 1_000_000),
		bounds.AtLeast("max-conns", c.MaxConns, 0),
		bounds.AtLeast("max-conns-per-source", c.MaxConnsPerSource, 0),
		bounds.AtLeast("max-users", c.MaxUsers, 0),
		bounds.AtLeast("max-servers", c.MaxServers, 0),
		bounds.AtLeast("max-pending-per-source", c.MaxPendingPerSource, 0),
		bounds.Range("ticket-ttl", c.TicketTTL, time.Second, MaxTTL),
		ticketTTL,
	)
}

func (c *Config) validate() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.SettleWait <= 0 {
		return fmt.Errorf("SettleWait must be positive, got %v", c.SettleWait)
	}
	return nil
}
