// Package chaos is nearchat's fault-injection harness (make chaos,
// bin/chaos): each Scenario runs on a fresh cluster of real processes
// (bench/cluster: Central, chat servers s1..s3, a room of three bots) with
// a Proxy on every link, injects its faults, heals, and checks the
// invariants the design promises:
//
//   - convergence: within Config.Converge (5 s) of the last fault, every
//     room Central lists has all its members on its server, at its epoch,
//     with a live link, as the members' own joined/moved/broken events
//     say; no member holds a room Central does not list it in;
//   - delivery: from the bots' sent and received events, nothing arrives
//     twice or out of per-sender order, and nothing owed is missing
//     without a Missed event that covers it (a bot's incarnation, in every
//     message text, tells a restarted sender's numbers from its earlier
//     run's);
//   - memory: the RSS of Central and of each chat server stays under
//     Config.CentralRSS and Config.ServerRSS.
//
// Long faults (a slow or stalled reader) last Config.Hold: a minute in
// make chaos, scaled down in the short run of make test. Before the bots
// stop, the harness waits until no bot lags behind what the others sent
// more than a second earlier, so a backlog flow control held back counts
// only if it never arrives.
//
// The Proxy cuts frame links (client to Central control, client to chat
// server) into frames with wire.Reader, so it can drop, duplicate, reorder,
// inject and replay frames, and learns a chat connection's user from its
// Join, so a rule can hit one member of a shared server. Raw links (REST,
// the servers' heartbeats) go through in chunks: delay, rate, stall,
// black-hole and cut work there too. Every random choice comes from the
// scenario's seed.
//
// RunScenario is safe for concurrent use with different Configs' Dirs, but
// the scenarios are meant to run one at a time: they measure timing.
package chaos
