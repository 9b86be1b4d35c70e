// Package chatserver is nearchat's chat server: rooms, broadcast and the TCP
// echo that clients use to measure their round-trip time, on gnet event loops.
//
// # Data plane
//
// Every connection belongs to one gnet event loop, and everything about a
// connection (its inbound parsing, its writes, its membership of a room's
// per-loop shard) happens on that loop. A room is split into shards, one per
// event loop that has members in it. A chat message arriving on loop K is
// encoded once into a pooled, reference-counted frame buffer; under the room's
// lock it gets the next room sequence number and one fan-out item is queued on
// each loop that has members, in sequence order. Each loop drains its queue in
// a single task and writes the same bytes to each of its members with
// Conn.Write. So the work per recipient is one write call: no encoding, no
// allocation, no cross-goroutine hop per member, and every member sees the
// room's messages in the order of their sequence numbers.
//
// gnet's own task queues do not promise FIFO order under load (low-priority
// tasks can overflow into the urgent queue), so fan-out order is kept by our
// per-loop queues and gnet only carries the "drain now" wake-up. A push onto
// the queue of the loop the caller runs on needs no wake-up: the callback
// drains it before it returns, so the messages of one read reach each member
// in one write. The sender's Acks for them leave in one write too, or, while
// the sender streams, are held up to 2 ms to leave with its next ones (or
// ahead of the next bytes going to it, in the same write): a write of Acks
// per read was a third of the system calls in a room of two. Likewise a
// member's deliveries, while one was written to it less than 250 µs ago,
// are held and leave together once that is over (at most 64 frames or
// 16 KiB at a time): the first callback to end after it writes them, or
// the loop's timer if the room went quiet. A lone message goes out at
// once; any other write to the member, a fatal error included, takes what
// is held along, ahead of it (a slow consumer's cut-off drops it with the
// rest of its backlog, in which it counts). In a room of two that cut the
// writes per delivery by a third (bench/RESULTS.md). In a big room a
// round of fan-out is itself long (a write to each member), so after a
// round to a shard of 64 members or more the loop waits as long as the
// round took (at most 10 ms) before it drains that room's queue again,
// and what the senders sent meanwhile leaves in one fuller round
// (fanout.go, paceShard); the loop's other rooms are served meanwhile
// (drainBeside). Chat, Deliver and Ack go through hand-written encoders
// (pkg/proto's scan.go), not the reflecting msgpack codec.
//
// The loops are gnet's with one change, kept in third_party/gnet
// (NEARCHAT.md there): a loop with nothing to do parks in Go's netpoller,
// as a goroutine reading a net.Conn does, instead of blocking in
// epoll_wait while it holds its P.
//
// # Joins and leaves
//
// A join or leave is not a fan-out item of its own: each shard of the
// room keeps a batch of the presence changes its members have yet to see
// (presence.go), encoded once. The first change after a quiet spell queues
// the batch at once; while a batch went out less than the shard's gap ago
// (10 ms, doubling up to a second while a burst lasts), the next one
// gathers changes until a timer queues it, or until it holds 800. When
// the loop reaches the batch it writes it to each member as one Presences
// frame (a Presence frame for a lone change, the frames one by one to a
// member that speaks version 2), so a room of M members forming costs
// each member a handful of frames however the connections reach the
// loops, not one per join. Any other item queued for the shard (a
// message, a resend, a goodbye) queues the open batch ahead of it, so the
// changes keep their place among the messages. A member that joined after
// part of a batch, or that the batch names, gets its own selection of it.
//
// # TLS
//
// TLS 1.3 is served on the event loops too (tls.go, tlsrecord.go). A
// bounded pool of goroutines runs each handshake with crypto/tls, off the
// loops, holding a slot only while the server works (a connection waiting
// on its client, for its ClientHello or its answer, waits outside the
// pool); the connection is then enrolled on a loop with a record layer
// built from the handshake's application traffic secrets, and the tls.Conn
// is dropped. On the loop, OnTraffic opens whole records in the loop's
// scratch buffers and parses the frames they complete; writes are sealed
// into gnet's outbound buffer. No goroutine and no relay belong to an
// established TLS member, which costs a few kilobytes (two AEADs, two IVs
// and sequence numbers) beyond a plaintext one, and meets the same limits
// and slow-consumer rule.
//
// # Flow control and slow consumers
//
// A member's backlog is its connection's unsent bytes plus the fan-out
// queued for it on its event loop and not yet written, so a loop lagging
// behind the sender's counts as the reader being behind. After each write
// to a member its loop looks at the member's backlog, and a sender's loop
// looks at what it queues for another loop. Past Config.HighWater the
// member is behind: while any member of a room is behind, the Acks of the
// room's senders are held (in order, in the room) and sent once every
// member has drained below half of HighWater.
// Clients write at most their SendWindow of unacknowledged bytes, so held
// Acks stop the senders: the room slows to its slowest reader instead of
// the reader's backlog growing. A member behind for longer than
// Config.SlowTimeout, or whose backlog passes Config.MaxOutbound all the
// same, gets an Error frame (slow_consumer) and is disconnected; it rejoins
// and recovers or is told what it missed. If it rejoins the same room
// within 10 minutes it holds the room no more: it is never behind, and is
// cut off at MaxOutbound. Nothing ever blocks on a
// member's socket. A member sending Chat frames past Config.SendRate has
// its input left unread until its rate allows more, which slows a
// session's sender the same way. flow.go has all of this. A connection that said Hello
// and then sends nothing for Config.IdleTimeout is closed (timeout) by the
// guard's sweep (guard.go), which flowLoop runs; its room sees it leave.
//
// # History
//
// Each room keeps its last Config.History frames. A member that joins with
// Since > 0 (a reconnect to the same server) is sent the frames after Since,
// or told that the history no longer reaches back that far; one that joins
// with Move set and Since 0 (the room moving here) is sent the whole
// history: what was sent here before it arrived. A replay is at most a
// quarter of Config.MaxOutbound, the newest frames (Joined.Oldest says
// where it starts), so that it never cuts its joiner off by itself. A resend to one member
// (Chat.To) is handed to that member only, without a room sequence number
// and outside the history, and acknowledged to its sender (Ack.Seq 0,
// version 4) under the same flow control as its live messages.
//
// # Memory budgets
//
// The bytes in all rooms' histories and in all members' unsent backlogs
// (with the deliveries held for them) are counted. Past
// Config.HistoryBudget or Config.OutboundBudget, a Join that would add a
// room is refused (server_full), and past the outbound budget one that
// would add a member too; members already in keep working, a member comes
// back to a room still held here past the history budget, and histories
// stop growing. The heartbeat tells Central a budget is reached, for
// ten seconds after it last was, and Central counts the server full.
//
// # Concurrency
//
// Server's exported methods are safe for concurrent use. Room state is
// guarded by the room's mutex; the room map by the server's; a shard's member
// list is touched only on its own event loop.
//
// Lock order: Server.mu before room.mu before loop.mu (leave and goodbye
// take the first two; fan-out pushes onto a loop's queue under room.mu).
// Server.loopsMu is taken with neither Server.mu nor room.mu held, and only
// loop.mu is taken under it. loop.mu is a leaf.
//
// # Metrics
//
// With Config.Metrics on, each event loop counts frames and bytes in and
// out, fan-out latency (enqueue to write, in fixed buckets), slow-consumer
// cut-offs and its busy time in atomics only that loop writes; Metrics sums
// them and Collector exposes them to Prometheus at scrape time. Nothing is
// allocated or locked per message for it; off, nothing is recorded.
//
// # Files
//
// server.go has the lifecycle and the queries; engine.go the gnet callbacks
// and the frame loop; conn.go a connection (member) and one handler per
// frame type; room.go rooms, joins, history and broadcast; fanout.go the
// per-loop queues, shared frames and the reaper; presence.go the batches
// of joins and leaves; flow.go flow control,
// liveness and the memory budgets; agent.go the agent that
// keeps the server registered with Central, and Drain; config.go the
// Config; metrics.go and collector.go the counters and their Prometheus
// collector; tls.go the TLS accept loop, handshakes and on-loop reading;
// tlsrecord.go the TLS 1.3 record layer.
package chatserver
