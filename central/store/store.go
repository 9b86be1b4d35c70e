// Package store holds Central's records (clients, chat servers, rooms,
// leaves and room removals) behind the Store interface: Memory here, the
// default, and etcdstore.Store, which keeps them in etcd for restarts and
// replicas, without touching the matchmaking code.
//
// Records go in and out by value: a Store never hands out memory that the
// caller could change behind its back, and a caller may keep what it got.
// Every Store implementation must be safe for concurrent use.
package store

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"nearchat/pkg/selection"
)

// ErrNotFound is returned by the Delete methods for a record that does not
// exist.
var ErrNotFound = errors.New("store: not found")

// User is a registered client.
type User struct {
	Name  string
	Token string
	// Latency is the client's last reported vector: server ID -> sample.
	Latency    map[string]selection.Sample
	Registered time.Time
}

// Server is a registered chat server.
type Server struct {
	ID       string
	Addr     string
	MaxRooms int // 0 = no limit
	MaxConns int // 0 = no limit
	Conns    int // from the last heartbeat
	Rooms    int // from the last heartbeat
	Down     bool
	Draining bool
	// Token is the bearer token issued at registration: kept in the store
	// so that a restarted or standby Central still knows the server.
	Token string
	// Registered is when the server last registered; LastSeen is its last
	// registration or heartbeat.
	Registered time.Time
	LastSeen   time.Time
}

// Room is a conversation and the server it lives on.
type Room struct {
	ID       string
	Server   string
	Epoch    uint64
	Members  []string
	Created  time.Time
	LastMove time.Time
	// Adopted means Central learnt the room from a server's heartbeat
	// rather than creating it, which happens after a Central restart.
	Adopted bool
}

// Request is the outcome of a chat request made with a key
// (proto.Request.Key), kept for a while after it ended, so that a client
// that sends the request again (it lost its connection, or its Central
// failed over before the final status reached it) gets that outcome, and
// the room it made, rather than a second request.
type Request struct {
	ID       string // proto.RequestID(From, key)
	From     string
	To       []string // the invitees, sorted (nil in records of older versions)
	Code     uint8    // the final proto.StatusCode
	Detail   string
	Room     string
	Finished time.Time
}

// Revocation is a member's leave of a room (User set) or a room's removal
// (User empty), kept until every ticket issued before it has expired, so
// that a Central that restarts or takes over the leadership still refuses
// those tickets (central's revocation log).
type Revocation struct {
	Room   string
	User   string
	Before int64 // Unix nanoseconds: tickets issued up to then are void
	Until  int64 // Unix seconds: the last of those tickets has expired
}

// RevocationID is the key of the Revocation of room and user: a later
// leave of the same member replaces the record.
func RevocationID(room, user string) string { return room + "/" + user }

// ID returns RevocationID(r.Room, r.User).
func (r Revocation) ID() string { return RevocationID(r.Room, r.User) }

// Store is the record keeper. Put creates or replaces a record; the list
// methods return records sorted by key.
type Store interface {
	User(name string) (User, bool)
	PutUser(u User) error
	DeleteUser(name string) error
	Users() ([]User, error)

	Server(id string) (Server, bool)
	PutServer(s Server) error
	DeleteServer(id string) error
	Servers() ([]Server, error)

	Room(id string) (Room, bool)
	PutRoom(r Room) error
	DeleteRoom(id string) error
	Rooms() ([]Room, error)

	PutRequest(q Request) error
	DeleteRequest(id string) error
	Requests() ([]Request, error)

	PutRevocation(r Revocation) error
	DeleteRevocation(id string) error
	Revocations() ([]Revocation, error)

	// Counts returns the number of users, servers and rooms.
	Counts() (users, servers, rooms int)
}

// Liveness is what a Store offers that keeps chat-server liveness itself,
// beyond the process that runs Central: etcdstore.Store holds one etcd
// lease per server, so that a Central taking over knows how long ago each
// server was last heard of. Central uses it when its Store implements it;
// Memory does not (liveness is then Central's own clock alone).
type Liveness interface {
	// Heard records a sign of life of server id (its registration or a
	// heartbeat) that lasts ttl. It does no I/O.
	Heard(id string, ttl time.Duration)
	// Forget drops server id's liveness (it deregistered).
	Forget(id string)
	// HeardAgo reports how long ago server id was last heard of, by the
	// store's account when it was opened or won the leadership; false
	// when no sign of life of it is live (the last one is older than its
	// ttl, or there was none).
	HeardAgo(id string) (time.Duration, bool)
}

// Flusher is what a Store offers that writes behind: Flush returns once
// every write made before the call is durable, or with an error when that
// cannot be said within ctx (etcdstore.Store: when etcd lost quorum, or the
// leadership is lost). Central, when its Store implements it, answers the
// rare changes it promises are kept for good (a leave confirmed by a Pong,
// a DELETE /v1/clients) only after a Flush; Memory does not (its writes
// are done when the call returns).
type Flusher interface {
	Flush(ctx context.Context) error
}

// Memory is a Store in process memory, guarded by one RWMutex. The zero
// value is not usable; call NewMemory.
type Memory struct {
	mu      sync.RWMutex
	users   map[string]User
	servers map[string]Server
	rooms   map[string]Room
	reqs    map[string]Request
	revs    map[string]Revocation
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{users: map[string]User{}, servers: map[string]Server{}, rooms: map[string]Room{}, reqs: map[string]Request{}, revs: map[string]Revocation{}}
}

func cloneUser(u User) User {
	u.Latency = maps.Clone(u.Latency)
	return u
}

func cloneRoom(r Room) Room {
	r.Members = slices.Clone(r.Members)
	return r
}

// User is safe for concurrent use.
func (m *Memory) User(name string) (User, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u, ok := m.users[name]
	return cloneUser(u), ok
}

// PutUser is safe for concurrent use.
func (m *Memory) PutUser(u User) error {
	u = cloneUser(u)
	m.mu.Lock()
	m.users[u.Name] = u
	m.mu.Unlock()
	return nil
}

// DeleteUser is safe for concurrent use.
func (m *Memory) DeleteUser(name string) error { return del(&m.mu, m.users, name) }

// Users is safe for concurrent use.
func (m *Memory) Users() ([]User, error) { return list(&m.mu, m.users, cloneUser), nil }

// Server is safe for concurrent use.
func (m *Memory) Server(id string) (Server, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, ok := m.servers[id]
	return s, ok
}

// PutServer is safe for concurrent use.
func (m *Memory) PutServer(s Server) error {
	m.mu.Lock()
	m.servers[s.ID] = s
	m.mu.Unlock()
	return nil
}

// DeleteServer is safe for concurrent use.
func (m *Memory) DeleteServer(id string) error { return del(&m.mu, m.servers, id) }

// Servers is safe for concurrent use.
func (m *Memory) Servers() ([]Server, error) {
	return list(&m.mu, m.servers, func(s Server) Server { return s }), nil
}

// Room is safe for concurrent use.
func (m *Memory) Room(id string) (Room, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r, ok := m.rooms[id]
	return cloneRoom(r), ok
}

// PutRoom is safe for concurrent use.
func (m *Memory) PutRoom(r Room) error {
	r = cloneRoom(r)
	m.mu.Lock()
	m.rooms[r.ID] = r
	m.mu.Unlock()
	return nil
}

// DeleteRoom is safe for concurrent use.
func (m *Memory) DeleteRoom(id string) error { return del(&m.mu, m.rooms, id) }

// Rooms is safe for concurrent use.
func (m *Memory) Rooms() ([]Room, error) { return list(&m.mu, m.rooms, cloneRoom), nil }

// PutRequest is safe for concurrent use.
func (m *Memory) PutRequest(q Request) error {
	m.mu.Lock()
	m.reqs[q.ID] = q
	m.mu.Unlock()
	return nil
}

// DeleteRequest is safe for concurrent use.
func (m *Memory) DeleteRequest(id string) error { return del(&m.mu, m.reqs, id) }

// Requests is safe for concurrent use.
func (m *Memory) Requests() ([]Request, error) {
	return list(&m.mu, m.reqs, func(q Request) Request { return q }), nil
}

// PutRevocation is safe for concurrent use.
func (m *Memory) PutRevocation(r Revocation) error {
	m.mu.Lock()
	m.revs[r.ID()] = r
	m.mu.Unlock()
	return nil
}

// DeleteRevocation is safe for concurrent use.
func (m *Memory) DeleteRevocation(id string) error { return del(&m.mu, m.revs, id) }

// Revocations is safe for concurrent use.
func (m *Memory) Revocations() ([]Revocation, error) {
	return list(&m.mu, m.revs, func(r Revocation) Revocation { return r }), nil
}

// Counts is safe for concurrent use.
func (m *Memory) Counts() (users, servers, rooms int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.users), len(m.servers), len(m.rooms)
}

func del[V any](mu *sync.RWMutex, m map[string]V, key string) error {
	mu.Lock()
	defer mu.Unlock()
	if _, ok := m[key]; !ok {
		return ErrNotFound
	}
	delete(m, key)
	return nil
}

func list[V any](mu *sync.RWMutex, m map[string]V, clone func(V) V) []V {
	mu.RLock()
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, strings.Compare)
	out := make([]V, len(keys))
	for i, k := range keys {
		out[i] = clone(m[k])
	}
	mu.RUnlock()
	return out
}
