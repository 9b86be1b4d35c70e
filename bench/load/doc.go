// Package load drives synthetic rooms through a nearchat cluster and counts
// every message: the library behind bin/chatload and the soak.
//
// # What runs
//
// Run either starts its own cluster through bench/cluster (Central, with
// short intervals, and chat servers as child processes of bin/central and
// bin/chatserver, so that a SIGKILL is a real one) or joins an existing
// Central given by its REST
// and control addresses. It then forms Rooms rooms of Members members. Every
// member is a full client.Client (its own registration, control connection,
// RTT prober and room session), many of them in this one process: member 0
// asks the others in one multi-member request and they accept. Once every
// room is up, each member sends at Rate messages per second with random
// inter-arrival times for Duration.
//
// # Chaos
//
// While the load runs, a schedule (see ParseChaos) kills chat servers with
// SIGKILL, drains them with SIGTERM, starts new ones and restarts Central.
// Only servers this run started can be killed or drained, and Central
// can be restarted only when this run started it. Actions never overlap:
// a killed server is started again (same name and address) once Central has
// marked it down and moved its rooms away, as a supervisor that waits for
// the cluster to give up on a crashed process would; a restart of Central
// waits until every running server has registered with the new one.
//
// # Accounting
//
// Each member feeds what it receives to a client.Checker. When sending
// stops, Run waits (bounded by Settle) until every sender's messages are
// acknowledged and every receiver holds every message of every other
// member, then compares: lost, duplicated and out-of-order messages must all
// be zero. The time a room spends without a working server runs, per room,
// from the first member's Broken event to the moment every broken member
// has joined again (its next Moved event); rooms still broken at the end
// count until then. A connection that only fell silent (Broken with
// client.ErrSilent) and then answered again (Resumed, nothing moved) was
// never without a server: it counts as a silence, apart, and not in that
// time; one that fell silent and then moved counts from its silence.
// The settle wait and the final count ask every session for its Stats
// within a bound of their own, so a session whose goroutine is stuck
// makes the run unsettled (and counted under "session_stuck") rather than
// hang it.
//
// # Concurrency
//
// Run may be called from any goroutine; it owns everything it starts and
// stops all of it, child processes included, before it returns. ParseChaos
// and the Report methods are safe for concurrent use.
package load
