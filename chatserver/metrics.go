package chatserver

import (
	"sync/atomic"
	"time"
)

// Counters kept for monitoring, when Config.Metrics is on. The hot path
// adds to plain tallies that belong to its event loop, which publishes
// them to atomics once at the end of each callback or fan-out run (flush);
// Server.Metrics sums the atomics when someone asks. So recording costs a
// few plain additions per write, no allocation, no lock, and no atomic
// instruction per member. With metrics off a loop has no loopStats and
// every method below returns at once.

// fanoutBuckets are the upper bounds, in seconds, of the fan-out latency
// histogram: from a message queued for a loop to its write to the members.
var fanoutBuckets = [...]float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
}

// fanoutBucketNs is fanoutBuckets in nanoseconds, for the loop to compare with.
var fanoutBucketNs = func() (ns [len(fanoutBuckets)]int64) {
	for i, s := range fanoutBuckets {
		ns[i] = int64(s * 1e9)
	}
	return ns
}()

// tally is what a loop counted since its last flush; loop only.
type tally struct {
	framesIn, bytesIn   uint64
	framesOut, bytesOut uint64
	writes              uint64
	outHigh             int64
	fanoutCount         uint64
	fanoutSumNs         int64
	fanout              [len(fanoutBuckets) + 1]uint64
}

// loopStats are one event loop's counters: the tally only the loop
// touches, and the published atomics only the loop adds to. A nil
// *loopStats records nothing.
type loopStats struct {
	_ [64]byte // keep other loops' counters off these cache lines

	t tally

	framesIn, bytesIn   atomic.Uint64
	framesOut, bytesOut atomic.Uint64
	writes              atomic.Uint64
	slowConsumers       atomic.Uint64
	fellBehind          atomic.Uint64
	busyNs              atomic.Int64
	outHigh             atomic.Int64 // most unsent bytes seen before a write, since the last Metrics call

	fanoutCount atomic.Uint64
	fanoutSumNs atomic.Int64
	fanout      [len(fanoutBuckets) + 1]atomic.Uint64 // last slot: above every bound

	_ [64]byte
}

// observeFanout records one item's wait from enqueue (at, Unix ns) to now.
// Event loop only.
func (st *loopStats) observeFanout(at, now int64) {
	if st == nil || at == 0 {
		return
	}
	d := now - at
	i := 0
	for i < len(fanoutBucketNs) && d > fanoutBucketNs[i] {
		i++
	}
	st.t.fanout[i]++
	st.t.fanoutCount++
	st.t.fanoutSumNs += d
}

// wrote counts one write of b carrying frames frames to a member whose
// unsent backlog was backlog bytes before it. Event loop only.
func (st *loopStats) wrote(b []byte, frames, backlog int) {
	if st == nil {
		return
	}
	st.t.framesOut += uint64(frames)
	st.t.bytesOut += uint64(len(b))
	st.t.writes++
	st.t.outHigh = max(st.t.outHigh, int64(backlog))
}

// received counts one inbound frame of n bytes. Event loop only.
func (st *loopStats) received(n int) {
	if st == nil {
		return
	}
	st.t.framesIn++
	st.t.bytesIn += uint64(n)
}

// cutOff counts a slow consumer cut off. Event loop only.
func (st *loopStats) cutOff() {
	if st != nil {
		st.slowConsumers.Add(1)
	}
}

// behind counts a member marked behind. Event loop only.
func (st *loopStats) behind() {
	if st != nil {
		st.fellBehind.Add(1)
	}
}

// done ends a callback or fan-out run that began at start: it adds the
// time to the loop's busy time and publishes the tally. Event loop only.
func (st *loopStats) done(start time.Time) {
	if st == nil {
		return
	}
	st.busyNs.Add(int64(time.Since(start)))
	t := &st.t
	if t.framesIn != 0 {
		st.framesIn.Add(t.framesIn)
		st.bytesIn.Add(t.bytesIn)
	}
	if t.framesOut != 0 {
		st.framesOut.Add(t.framesOut)
		st.bytesOut.Add(t.bytesOut)
		st.writes.Add(t.writes)
	}
	if t.outHigh > st.outHigh.Load() {
		st.outHigh.Store(t.outHigh)
	}
	if t.fanoutCount != 0 {
		st.fanoutCount.Add(t.fanoutCount)
		st.fanoutSumNs.Add(t.fanoutSumNs)
		for i, n := range t.fanout {
			if n != 0 {
				st.fanout[i].Add(n)
			}
		}
	}
	*t = tally{}
}

// countHistory adds to the history gauges. The bytes are always counted:
// HistoryBudget is checked against them.
func (s *Server) countHistory(frames, bytes int) {
	s.histBytes.Add(int64(bytes))
	if s.cfg.Metrics {
		s.histFrames.Add(int64(frames))
	}
}

// stamp returns the enqueue time of a fan-out item queued from a callback
// on loop from (nil: from no loop), or 0 when metrics are off. On a loop
// it is when the callback began, read once for all it queues.
func (s *Server) stamp(from *loop) int64 {
	if !s.cfg.Metrics {
		return 0
	}
	if from != nil && from.depth > 0 {
		return from.now.UnixNano()
	}
	return time.Now().UnixNano()
}

// Metrics is a snapshot of the server's counters and gauges, for
// monitoring. Counters only grow over the server's life.
type Metrics struct {
	Conns, Rooms, Members int

	FramesIn, BytesIn   uint64
	FramesOut, BytesOut uint64
	// Writes counts the writes of frames to clients (a system call each,
	// unless the connection's unsent bytes were queued): FramesOut over
	// Writes is how well frames are batched.
	Writes        uint64
	SlowConsumers uint64
	// FellBehind counts the times a member's backlog passed HighWater and
	// its room's Acks were held for it.
	FellBehind uint64
	// Busy is the event loops' total time spent parsing inbound frames
	// and writing fan-out, summed over the loops.
	Busy time.Duration

	// FanoutBuckets are the upper bounds of Fanout, in seconds. Fanout
	// holds cumulative counts per bound, as Prometheus wants them.
	FanoutBuckets []float64
	Fanout        []uint64
	FanoutCount   uint64
	FanoutSum     time.Duration

	// HistoryFrames and HistoryBytes are what the rooms' history rings hold;
	// HistoryLimit is Config.History, the ring size per room.
	HistoryFrames, HistoryBytes int64
	HistoryLimit                int
	// OutboundHigh is the largest unsent backlog a member had before a
	// write since the previous Metrics call; OutboundLimit is
	// Config.MaxOutbound, past which a member is cut off.
	OutboundHigh, OutboundLimit int64

	TLSHandshakes, TLSFailures uint64
	// Refused counts connections refused for a limit; Evicted, those
	// closed before joining a room to make room for a newer one.
	Refused, Evicted uint64
}

// Metrics sums the per-loop counters and reads the gauges; with
// Config.Metrics off only the gauges are filled in. Each call
// resets OutboundHigh's window. Safe for concurrent use; it takes the room
// locks one at a time to count members, so call it at scrape intervals,
// not per message.
func (s *Server) Metrics() Metrics {
	m := Metrics{
		Conns:         int(s.conns.Load()),
		FanoutBuckets: fanoutBuckets[:],
		Fanout:        make([]uint64, len(fanoutBuckets)),
		HistoryFrames: s.histFrames.Load(),
		HistoryBytes:  s.histBytes.Load(),
		HistoryLimit:  s.cfg.History,
		OutboundLimit: int64(s.cfg.MaxOutbound),
		Refused:       uint64(s.lim.Refused()),
		Evicted:       uint64(s.lim.Evicted()),
	}
	s.mu.Lock()
	rooms := make([]*room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	m.Rooms = len(rooms)
	for _, r := range rooms {
		r.mu.Lock()
		m.Members += len(r.members)
		r.mu.Unlock()
	}
	s.loopsMu.Lock()
	for _, l := range s.loops {
		st := l.st
		if st == nil {
			continue
		}
		m.FramesIn += st.framesIn.Load()
		m.BytesIn += st.bytesIn.Load()
		m.FramesOut += st.framesOut.Load()
		m.BytesOut += st.bytesOut.Load()
		m.Writes += st.writes.Load()
		m.SlowConsumers += st.slowConsumers.Load()
		m.FellBehind += st.fellBehind.Load()
		m.Busy += time.Duration(st.busyNs.Load())
		m.OutboundHigh = max(m.OutboundHigh, st.outHigh.Swap(0))
		m.FanoutCount += st.fanoutCount.Load()
		m.FanoutSum += time.Duration(st.fanoutSumNs.Load())
		for i := range m.Fanout {
			m.Fanout[i] += st.fanout[i].Load()
		}
	}
	s.loopsMu.Unlock()
	for i := 1; i < len(m.Fanout); i++ {
		m.Fanout[i] += m.Fanout[i-1]
	}
	if s.front != nil {
		m.TLSHandshakes, m.TLSFailures = s.front.handshakes.Load(), s.front.failed.Load()
	}
	return m
}
