// Package bench measures how fast nearchat's chat server fans messages out,
// against a goroutine-per-connection baseline (package bench/baseline)
// speaking the same protocol, over real loopback TCP.
//
// # Workload
//
// Open dials Workload.Members connections, each of which sends Hello and
// Join into one room, and waits until every join has been reported to
// every member (in Presence frames, or gathered in Presences frames). Member 0 then sends Chat frames whose At field is the wall clock
// at sending; the server delivers each to the other Members-1. A message is
// complete when every receiver has it, and at most Workload.Window (64)
// messages are in flight, so a run measures throughput rather than one
// round trip. Receivers record send-to-receive latency into a log-bucketed
// Histogram and check that Deliver sequence numbers arrive without gaps.
// Under a full window, latency is mostly queueing: by Little's law the median
// is close to Window divided by the message rate.
//
// # Keeping the client out of the way
//
// The client runs on the same cores as the server, and on the machines this
// was written on a system call costs microseconds, so the client is built to
// cost as little as possible and the same for both servers: one epoll
// goroutine reads every member's socket (a read takes whatever frames have
// piled up, with no goroutine wake-up per member); Deliver frames are
// scanned for seq, num and at without decoding their strings; the sender
// encodes Chat frames by hand into a reused buffer. The client side
// allocates nothing per message, so allocs/op is the server's.
//
// # Running
//
//	go test -run '^$' -bench . -benchtime 2s ./bench/               # BenchmarkBroadcast, benchstat-friendly
//	NEARCHAT_BENCH=1 go test -run TestCompareTable -v -timeout 30m ./bench/   # both servers, markdown table with ratios, idle memory
//	NEARCHAT_BENCH=1 go test -run TestIdleMemory -v ./bench/          # idle memory only
//	NEARCHAT_BENCH=1 go test -run TestBudgetRSS -v -timeout 15m ./bench/  # bin/chatserver's RSS beside -history-budget/-outbound-budget
//
// BenchmarkBroadcast is named server=…/members=…/size=…; sizes share one
// room per server and member count, because joining costs the baseline
// one Presence frame per member per join (4096 members: 8.4 million
// frames; nearchat gathers them into a few Presences frames a member). The
// idle-memory measurement re-executes the test binary as a child process
// hosting one server, opens 10,000 connections that complete Hello/Welcome
// and Join (rooms of two), and compares the child's VmRSS, after a GC,
// before and after.
//
// The baseline runs without write deadlines, its fastest configuration, so
// the comparison errs in its favour.
package bench
