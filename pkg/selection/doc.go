// Package selection holds the arithmetic Central uses to place a chat room on
// a server and to decide when a live room should move. It is pure: no I/O, no
// clock, no goroutines, no shared state; time and randomness come in as
// arguments, so every rule below can be tested exactly.
//
// # Which server
//
// A room is only as pleasant as its slowest member finds it, so the primary
// key is the largest member round-trip time to a server (min-max). Among
// servers with the same worst case, the smallest sum of member RTTs wins,
// which favours the server that is better for everybody else too. Servers
// still tied after that are equal by every figure we have, so one is drawn
// uniformly at random: a fixed order (say, the first in the list) would pile
// every such room onto the same machine.
//
// The figure used for a member is the median of its probe samples. The
// median ignores the odd slow probe. The spread (interquartile range) does
// not rank servers, but it judges moves: see below.
//
// A server is a candidate only when it is up, not draining, not at capacity,
// and measured by every member of the room. Requiring every member, rather
// than any, is deliberate: the worst-case RTT of a server some member has
// never probed is unknown, and guessing it would let an unmeasured (possibly
// unreachable) server win precisely because it has fewer numbers counted
// against it.
//
// # When to move
//
// Moving a live room costs a handoff, so Policy.Decide moves a room only when
// the gain is real: the best server must lower the worst-case RTT by an
// absolute margin AND a relative one (the absolute margin stops churn between
// nearby servers, the relative one stops it between distant servers whose
// figures jitter by more than the absolute margin), and the room must have
// stayed put for a minimum dwell time. The gain must also exceed the
// measurements' own noise: SpreadFactor times the sum of the two servers'
// spreads (each the largest member spread there), so a gain that the probes
// cannot tell apart from jitter moves nothing. A move must also strictly lower the
// worst case, even when both margins are zero, because otherwise the random
// tie-break alone would shuttle a room between equal servers on every scan.
//
// None of that applies when the current server can no longer host the room
// (down, draining, gone from the list, or no longer measured by some member):
// the room moves at once. A current server that has merely become full is
// still a fine home for a room already on it, so fullness only keeps new
// rooms away.
//
// The defaults (DefaultPolicy) are a gain of at least 5 ms and at least 10 %
// of the current worst-case RTT, and a dwell of 10 s, which is longer than
// Central's scan interval so a room that has just moved sits out one scan.
// The dwell counts from the room's last move; Central gives a room it
// placed and never moved none (its placement rested on first probe
// rounds, the noisiest), so its first move waits only for the gain.
// Central's -min-gain, -min-gain-pct and -min-dwell flags set them. This is
// the one statement of the relocation rule; the README, package central and
// central/API.md refer here.
//
// # Two forms of the same rule
//
// Choose, Score and Policy.Decide take members as maps keyed by server ID,
// which is convenient and fine for one-off decisions such as placing a new
// room. They cost one map lookup per member per server, more than ten times too
// slow for Central's periodic relocation scan, which must get through 100,000
// rooms x 64 servers in under 20 ms on two cores. For that scan Central should
// keep each room's latencies in a Matrix, a flat slice indexed by server
// position, call Policy.DecideMatrix, and split the rooms into one contiguous
// shard per core (see BenchmarkScan). Both forms apply the identical rule,
// consume the random source identically and, given equal inputs and equal
// random state, return the same server.
//
// Neither form allocates on the common path; a Decision that moves a room
// allocates its human-readable Reason, and errors allocate their detail.
//
// A *rand.Rand is not safe for concurrent use: a scan split across goroutines
// needs one per goroutine. Passing nil uses math/rand/v2's package-level
// source, which is safe but slower.
package selection
