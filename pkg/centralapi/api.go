// Package centralapi is the contract of Central's REST API: the JSON bodies
// of every route under /v1/ and a small client for them, used by chat servers
// (Register, Heartbeat, Drain, Deregister) and by the client library
// (RegisterClient, LookupClient, DeregisterClient, PutLatency, Servers,
// Rooms). The routes themselves are documented in central/API.md.
//
// Every error response has the body {"code": "...", "message": "..."}; the
// client turns it into an *Error, so callers can branch on Code with
// errors.As or with the helpers IsUnknownServer and IsNameTaken.
package centralapi

import (
	"errors"
	"fmt"
	"time"
)

// Error codes carried in the "code" field of an error body.
const (
	CodeBadRequest       = "bad_request"            // malformed JSON, invalid name, bad field value
	CodeTooLarge         = "too_large"              // body over the size limit (64 KiB)
	CodeUnauthorized     = "unauthorized"           // missing or wrong session token or cluster secret
	CodeNotFound         = "not_found"              // unknown path
	CodeUnknownClient    = "unknown_client"         // no such registered client
	CodeUnknownServer    = "unknown_server"         // no such registered server: register again
	CodeNameTaken        = "name_taken"             // a live session holds the user name
	CodeMethodNotAllowed = "method_not_allowed"     // wrong method; the Allow header lists the right ones
	CodeMediaType        = "unsupported_media_type" // a body whose Content-Type is not JSON
	CodeBadVersion       = "http_version"           // HTTP/2 (prior knowledge): use HTTP/1.1
	CodeRateLimited      = "rate_limited"           // too many registrations; try again shortly
	CodeServerTaken      = "server_taken"           // the server id belongs to another live server
	CodeFull             = "full"                   // Central holds its maximum of users (-max-users); try again later
	CodeInternal         = "internal"               // Central's own fault
	CodeUnavailable      = "unavailable"            // the change is not stored yet (etcd unreachable): send it again
	CodeTimeout          = "timeout"                // the request's body did not arrive whole in time (408)
)

// Error is an error response from Central.
type Error struct {
	Status  int    `json:"-"` // HTTP status code
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("central: %s (%d): %s", e.Code, e.Status, e.Message)
}

func hasCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsUnknownServer reports whether err says Central does not know the server,
// which after a Central restart means: register again.
func IsUnknownServer(err error) bool { return hasCode(err, CodeUnknownServer) }

// IsNameTaken reports whether err says a live session holds the user name.
func IsNameTaken(err error) bool { return hasCode(err, CodeNameTaken) }

// IsUnknownClient reports whether err says Central does not know the user,
// which after a Central restart means: register again.
func IsUnknownClient(err error) bool { return hasCode(err, CodeUnknownClient) }

// IsUnauthorized reports whether err is a refused token or secret.
func IsUnauthorized(err error) bool { return hasCode(err, CodeUnauthorized) }

// IsBadRequest reports whether err says the request itself is wrong (a
// malformed body, an invalid name or field): sent again, it fails again.
func IsBadRequest(err error) bool { return hasCode(err, CodeBadRequest) }

// IsRateLimited reports whether err says Central refused the request as
// one too many for now: the same request succeeds once the rate allows.
func IsRateLimited(err error) bool { return hasCode(err, CodeRateLimited) }

// IsServerTaken reports whether err says another live server holds the id.
func IsServerTaken(err error) bool { return hasCode(err, CodeServerTaken) }

// RegisterClientRequest is the body of POST /v1/clients. Token is optional:
// a client that registered before sends its token to get the same identity
// back, also from a Central that restarted in between.
type RegisterClientRequest struct {
	Name  string `json:"name"`
	Token string `json:"token,omitempty"`
}

// Session is the answer to POST /v1/clients. Token authenticates the
// client's REST mutations (Authorization: Bearer) and its control
// connection (Hello.Token).
type Session struct {
	Name  string `json:"name"`
	Token string `json:"token"`
}

// ClientInfo is the answer to GET /v1/clients/{name}.
type ClientInfo struct {
	Name string `json:"name"`
	// Online is true while the client holds a control connection.
	Online bool     `json:"online"`
	Rooms  []string `json:"rooms"`
}

// ClientList is the answer to GET /v1/clients: the names of the users
// online now, sorted, at most 500 (More says there are others).
type ClientList struct {
	Clients []string `json:"clients"`
	More    bool     `json:"more,omitempty"`
}

// Sample is one server's RTT as a client measured it.
type Sample struct {
	MedianUS int64 `json:"median_us"`
	SpreadUS int64 `json:"spread_us"`
	Count    int   `json:"count"`
}

// Median returns MedianUS as a Duration.
func (s Sample) Median() time.Duration { return time.Duration(s.MedianUS) * time.Microsecond }

// Spread returns SpreadUS as a Duration.
func (s Sample) Spread() time.Duration { return time.Duration(s.SpreadUS) * time.Microsecond }

// SampleOf builds a Sample from durations.
func SampleOf(median, spread time.Duration, count int) Sample {
	return Sample{MedianUS: median.Microseconds(), SpreadUS: spread.Microseconds(), Count: count}
}

// LatencyVector is the body of PUT /v1/clients/{name}/latency: it replaces
// the client's whole vector, server ID -> sample.
type LatencyVector struct {
	Servers map[string]Sample `json:"servers"`
}

// RegisterServerRequest is the body of POST /v1/servers.
type RegisterServerRequest struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`                // host:port clients dial
	Secret   string `json:"secret,omitempty"`    // the cluster secret, if not sent as a bearer token
	MaxRooms int    `json:"max_rooms,omitempty"` // 0 = no limit
	MaxConns int    `json:"max_conns,omitempty"` // 0 = no limit
	// Token is the server token of an earlier registration of this id,
	// if the server has one: with it, the id is taken back from anywhere.
	Token string `json:"token,omitempty"`
}

// RegisterServerResponse tells a chat server how often to heartbeat, and
// gives it its server token: heartbeats, drain and deregister of this id
// must carry it (Authorization: Bearer), so a server speaks for itself only.
type RegisterServerResponse struct {
	ID                  string `json:"id"`
	Token               string `json:"token"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	OfflineAfterMS      int64  `json:"offline_after_ms"`
}

// HeartbeatInterval returns HeartbeatIntervalMS as a Duration.
func (r RegisterServerResponse) HeartbeatInterval() time.Duration {
	return time.Duration(r.HeartbeatIntervalMS) * time.Millisecond
}

// RoomReport is one room a chat server hosts, as its heartbeat reports it.
type RoomReport struct {
	ID      string   `json:"id"`
	Epoch   uint64   `json:"epoch"`
	Members []string `json:"members"` // users connected to the room now
	// Ticket is the ticket (base64 in JSON) of a member that joined at
	// Epoch: Central's signature on the room's placement on this server
	// at that epoch. Where Central signs tickets, it adopts a room it does
	// not know, or a newer placement than its own, only with this proof.
	Ticket []byte `json:"ticket,omitempty"`
}

// HeartbeatRequest is the body of POST /v1/servers/{id}/heartbeat.
// Rooms is one page of the server's rooms (the changed ones first, the
// rest in turn), so a heartbeat stays small however many rooms a server
// hosts; Total is how many it hosts (0 from an older server means
// len(Rooms)).
// HeartbeatPage bounds the rooms one heartbeat reports: 2,000 rooms of 16
// members stay near 0.5 MB, far inside Central's body limit, whatever
// MaxRooms is. A server hosting more reports them in turn, each at least
// once every Total/HeartbeatPage beats (rounded up), and Central waits
// that long before it takes a room missing from the reports for gone.
const HeartbeatPage = 2000

type HeartbeatRequest struct {
	Conns int          `json:"conns"`
	Total int          `json:"total,omitempty"`
	Rooms []RoomReport `json:"rooms"`
	// Admits: a connection from a new address would be admitted now,
	// although Conns is at MaxConns: the server makes room by evicting
	// one that never joined, or a member of an address holding more than
	// its fair share. Central then still places rooms there. False from
	// an older server.
	Admits bool `json:"admits,omitempty"`
	// Budget, when set, says why the server refuses every new room now:
	// a memory budget of its own (history or outbound bytes) is reached.
	// Central then counts it full. Empty from an older server.
	Budget string `json:"budget,omitempty"`
	// RevokeLog and RevokeSeq say how much of Central's revocation log the
	// server holds: the log's id and the last sequence number applied.
	RevokeLog string `json:"revoke_log,omitempty"`
	RevokeSeq uint64 `json:"revoke_seq,omitempty"`
}

// Revocation withdraws room tickets before they expire. A chat server
// refuses a Join whose ticket is for Room and, when User is set, for User,
// and whose epoch is below Epoch (the room moved on: the ticket names a
// placement that is no more) or that was issued at or before Before (its
// holder left the room). A member admitted with a ticket issued at or
// before Before is dropped as well; one admitted at an older epoch is
// not, as its link to the old placement must drain (make-before-break).
// Until is when every ticket it covers has expired anyway (Unix seconds),
// so a server can forget it then.
type Revocation struct {
	Room   string `json:"room"`
	User   string `json:"user,omitempty"`
	Epoch  uint64 `json:"epoch,omitempty"`
	Before int64  `json:"before,omitempty"` // Unix nanoseconds, on Central's clock
	Until  int64  `json:"until"`
}

// HeartbeatResponse answers a heartbeat.
type HeartbeatResponse struct {
	HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
	// Draining echoes Central's view, so a server drained by an operator
	// through the API learns it.
	Draining bool `json:"draining"`
	// AddrError, when set, says why the server's advertised address
	// failed Central's check (ServerInfo.AddrError), for its log.
	AddrError string `json:"addr_error,omitempty"`
	// Revocations follow the server's RevokeSeq in Central's log RevokeLog,
	// up to RevokeSeq here; a server whose log id differs starts over
	// from the first entry. Empty when Central signs no tickets.
	Revocations []Revocation `json:"revocations,omitempty"`
	RevokeLog   string       `json:"revoke_log,omitempty"`
	RevokeSeq   uint64       `json:"revoke_seq,omitempty"`
}

// ServerInfo describes a chat server in GET /v1/servers.
type ServerInfo struct {
	ID       string    `json:"id"`
	Addr     string    `json:"addr"`
	Up       bool      `json:"up"`
	Draining bool      `json:"draining"`
	Full     bool      `json:"full"`
	Conns    int       `json:"conns"`
	Rooms    int       `json:"rooms"` // rooms Central has placed there
	MaxRooms int       `json:"max_rooms"`
	MaxConns int       `json:"max_conns"`
	LastSeen time.Time `json:"last_seen"`
	// AddrError, when set, says why Central's check of Addr failed (a
	// Hello answered by this server, and one Ping): clients are unlikely
	// to reach the server there either. Checked at registration, and
	// again every 30 s while it fails.
	AddrError string `json:"addr_error,omitempty"`
}

// ServerList is the answer to GET /v1/servers.
type ServerList struct {
	Servers []ServerInfo `json:"servers"`
}

// RoomInfo describes a room in GET /v1/rooms.
type RoomInfo struct {
	ID       string    `json:"id"`
	Server   string    `json:"server"`
	Addr     string    `json:"addr"`
	Epoch    uint64    `json:"epoch"`
	Members  []string  `json:"members"`
	LastMove time.Time `json:"last_move"`
	Adopted  bool      `json:"adopted,omitempty"`
	// Waiting: Server is down or was deregistered, and no server the
	// members measured can take the room yet.
	Waiting bool `json:"waiting,omitempty"`
}

// RoomList is the answer to GET /v1/rooms: one page of rooms sorted by
// id. More says there are rooms after the last one; ask again with
// ?after= that room's id.
type RoomList struct {
	Rooms []RoomInfo `json:"rooms"`
	More  bool       `json:"more,omitempty"`
}

// RoomPage is the most rooms one GET /v1/rooms answers with, and its
// default ?limit=.
const RoomPage = 1000

// Health is the answer to GET /healthz.
type Health struct {
	Status  string `json:"status"`
	Clients int    `json:"clients"`
	Online  int    `json:"online"`
	Servers int    `json:"servers"`
	Up      int    `json:"up"`
	Rooms   int    `json:"rooms"`
	// ControlPort is the port of Central's control listener, on the same
	// host as the REST API: a client needs only Central's REST address.
	ControlPort int `json:"control_port,omitempty"`
	// REST is the bound REST address of the Central that answered: the
	// leader, also when asked through a follower replica, which relays.
	REST string `json:"rest,omitempty"`
}
