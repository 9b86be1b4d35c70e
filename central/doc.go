// Package central is nearchat's Central: the registry of clients and chat
// servers, server liveness, the clients' latency vectors, matchmaking, server
// selection and the relocation loop, and the pushes that tell clients where
// their rooms live. API.md in this directory documents the REST API and the
// control protocol.
//
// # Two ports
//
// The REST API (net/http, JSON under /v1/) is for registration and for
// everything that is a plain request/answer: clients register a name and get
// a session token, report latency vectors, look each other up; chat servers
// register, heartbeat their load and rooms, drain, deregister. The control
// port (gnet, frames of package wire) carries what Central must push: every
// client holds one control connection, authenticated by its Hello token, over
// which chat requests, their status streams and room assignments flow.
//
// # State
//
// The records (users, servers, rooms, for two minutes the outcomes of
// keyed chat requests, and for a ticket's lifetime the leaves and room
// removals of the revocation log) live in a store.Store; New loads what
// the store already holds, and every change is written through. Next to the records
// Central keeps what is derived or tied to a connection: control sessions,
// pending requests (a client sends its own again, by key, to whichever
// Central it reaches next), unacknowledged pushes, and one latency matrix
// per room laid out in server order (selection.Matrix), rebuilt lazily when a
// member reports a new vector or the server list changes. One mutex guards
// all of it. Its holders never do I/O: frames leave through gnet's
// AsyncWrite, echo checks run on their own goroutines.
//
// A member whose control connection drops is waited for: its pushes
// until it is back, its chat requests (and new ones to it) for
// ReconnectGrace, after which they fail; a client connects again at once,
// through another replica when the one relaying it died.
//
// # Relocation
//
// A scan re-evaluates every room with selection.Policy.DecideMatrix every
// ScanInterval and right after any liveness change (a server registers, comes
// back, is found down, drains or deregisters). The rooms are cut into chunks
// decided in parallel on every CPU (decisions only read shared state); moves
// are then applied one by one: the epoch goes up and an Assign is pushed to
// every member. A latency-vector update re-evaluates that member's rooms at
// once rather than waiting for the scan, so a server a client has just
// measured is used promptly (the anti-flap margins and dwell still apply).
// When a room moves is decided by the rule stated in package selection.
//
// Placement is level-triggered: Central holds each room's desired
// placement (server, epoch); members report what they hold (Holding, after
// every Welcome and every few seconds) and servers what they host (a page
// of rooms per heartbeat); every difference is answered with the placement,
// however it arose. There is one push per (member, room), repeated every
// AssignRetry until acknowledged, replaced by a newer placement, and given
// up only after AssignGiveUp of being offered to a connected member (the
// next report revives it). Rooms Central adopted (after a restart) move to
// epochs of at least the Unix time in ms, so epochs never repeat.
//
// Events first, the scan as a safety net: a server that registers, drains
// or goes down is announced to every connected client (ServerEvent), which
// probes a new server at once; a latency report re-evaluates that member's
// rooms at once; a new room waits up to SettleWait for every member to
// have measured every open server (not one a member's report since it
// registered left out: the member could not reach it), and no dwell holds
// a room never moved: its placement rested on its members' first probe
// rounds, or missed a server that came up after. A room no open server can host yet because a
// member has measured none of them (a first probe round late on a loaded
// machine) waits for the reports up to RequestTimeout instead of failing.
// Moves need a gain beyond the margins and beyond the measured spreads
// (selection.Policy).
//
// # Liveness
//
// A server silent for OfflineAfter is marked down. The fast path: a member
// that lost its room's server sends Unreachable; Central dials the server
// itself (Hello, one Ping, ProbeTimeout scaled by measured RTTs) and, if
// that fails and the evidence is corroborated (a late heartbeat, or a
// second member's report), marks it down and relocates its rooms at once.
// A report that the connection merely fell silent (Unreachable.Silent, the
// member's liveness ping unanswered) weighs less: it corroborates only a
// check that could not even connect, since on a starved machine every
// member of a live server's rooms falls silent at once. Whether the check
// connected is the kernel's answer (connect, then poll(2) in a blocking
// call, asked once more at the deadline), not the late wake-up of a
// starved Central's goroutine.
//
// A Store that keeps liveness itself (store.Liveness: etcdstore holds one
// lease per server, TTL OfflineAfter, refreshed at every registration and
// heartbeat) carries it across a change of leader: New takes each
// server's last sign of life from the store, and a server the store has
// none of within OfflineAfter (its lease lapsed, say while no Central
// led) is checked at once and marked down if the check fails, the lapse
// being the missed heartbeats. A server whose silence reaches OfflineAfter
// by the store's account alone is treated the same way; one that answers
// gets OfflineAfter from then to heartbeat. With such a store a heartbeat
// writes no record, only a lease refresh.
// Reports are kept once per (member, room). A member that reports a
// placement older than Central's is simply sent the current one.
//
// # Bounds
//
// A control client that leaves MaxOutbound unread is cut off. Rooms with
// no member connected and no server report for RoomTTL expire; users past
// SessionGrace in no room are forgotten.
//
// # Restart
//
// A Central on etcd (etcdstore) finds its records there when it starts
// again, or a follower replica does when it wins the election; what follows
// covers what its last write batch lost, and the in-memory store.
//
// # Replicas
//
// A Central is the single writer of its state, and stays so with several
// replicas on etcd: only the elected leader builds a Central. The other
// replicas (cmd/central) bind the same two ports and relay every
// connection, byte for byte, to the leader's (package central/relay), so
// a client or chat server may use any replica, and pushes reach a member
// through the replica that holds its connection. Forwarding bytes rather
// than state keeps the guarantees stated here (one placement and rising
// epochs per room, one owner of each pending request and push, the fence
// on every etcd write) exactly as they are proven for one process, with
// nothing on a follower to keep consistent; the price is a hop on control
// traffic and a leader that does all the deciding. A new leader counts
// each server's silence from its etcd lease (Liveness above), so a server
// that died while no one led is found at once. The leader publishes
// its addresses (etcdstore.Store.Proclaim) only once it serves, so a relay
// never points into another relay.
// Central's in-memory store dies with it, but nothing else needs to: chat
// servers keep serving; their heartbeats get unknown_server, they register
// again and report their rooms, which Central adopts with their epochs and
// members (where it signs tickets, only those whose report carries its
// signature on the placement); clients register again with their old tokens (accepted when the
// name is free; a placeholder's name only with that member's token, which
// Central checks by its HMAC) and reconnect, stating what they hold. The
// room goes on with its id and epoch. A room whose server died meanwhile is
// known from its members' reports and placed afresh once servers had
// OfflineAfter to come back.
//
// # Files
//
// state.go holds the records and their adoption from reports, relocate.go
// the scan, the pushes and the reports, requests.go chat requests, rest.go
// the HTTP API, control.go the control port.
//
// # Core and ports
//
// The core (state, requests, relocation: newCore builds it, with no
// listener) knows a control connection only as a conn, and hands every
// frame for it to control.go (sendLocked, writeLocked, fatalLocked), the
// only code that writes frames: it applies the outbound bounds and calls
// the connection's link, which on the event loops is the gnet.Conn
// (AsyncWrite, never blocking, under the mutex). Frames come in the other
// way: the read loop decodes them and calls handle. New puts the core
// behind its two ports; core_test.go drives it without sockets, through
// the REST handler in memory, handle, and a recorder as the link.
//
// # Observing
//
// Collector gives Prometheus Central's counters (requests by outcome, moves
// by reason, time on a bad server before a move, scans, latency reports,
// REST requests by route) and gauges read under the lock at scrape time;
// Snapshot copies the picture (servers, clients' RTTs, rooms, the last 256
// moves) for the dashboard (package central/dashboard). Both live in
// observe.go; recording is a counter increment where the event happens.
//
// # Concurrency
//
// Central's exported methods are safe for concurrent use. gnet callbacks take
// the mutex for short, bounded work only; the longest hold is a relocation
// scan (about ten milliseconds for 100,000 rooms on two cores).
package central
