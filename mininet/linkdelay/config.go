package linkdelay

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"nearchat/pkg/bounds"
)

// DefaultQueueBytes is the default size of each direction's queue. A delay
// line has to hold rate×delay bytes: 4 MiB keeps a 10 ms link going at more
// than 3 Gbit/s, and at 10 Mbit/s (the demo's links) lets a sender queue a
// few seconds' worth before frames are dropped.
const DefaultQueueBytes = 4 << 20

// ErrInterfaceGone is returned (wrapped) by Relay.Run when one of the relay's
// interfaces no longer exists, which is the normal way a relay ends when its
// link is deleted.
var ErrInterfaceGone = errors.New("linkdelay: relay interface vanished")

// Config describes one relay.
type Config struct {
	// A and B name the two middle interfaces (in the caller's network
	// namespace).
	A, B string
	// Delay is the one-way delay applied to frames going from A to B and,
	// unless DelayBA is set, from B to A (at most MaxDelay).
	Delay time.Duration
	// DelayBA, when positive, overrides Delay for frames from B to A.
	DelayBA time.Duration
	// QueueBytes bounds each direction's queue (0: DefaultQueueBytes; at
	// most MaxQueueBytes). Values below twice the largest frame are raised
	// to that.
	QueueBytes int
	// NoPromisc skips joining PACKET_MR_PROMISC on the sockets.
	NoPromisc bool
	// PrepareInterfaces makes Open disable IPv6 on A and B
	// (net.ipv6.conf.IF.disable_ipv6=1).
	PrepareInterfaces bool
	// Nice, if non-zero, is the nice value given to the two relay threads
	// (e.g. -10, so that the wire keeps its timing while the emulated hosts
	// load the CPU). Failure to set it is only logged.
	Nice int
	// RealtimePriority, if positive, runs the two relay threads under
	// SCHED_FIFO with this priority (1-99), so that frames leave on time even
	// when the emulated hosts keep every CPU busy. The threads only run when
	// frames arrive or fall due, so they cannot spin on their own. Nice is
	// used instead if this fails.
	RealtimePriority int
	// Logf, if set, receives diagnostic messages.
	Logf func(format string, args ...any)
}

// Bounds Validate holds a Config to.
const (
	// MaxDelay bounds Delay and DelayBA: a link slower than ten seconds
	// one way is no network the demos emulate, and its queue would have to
	// hold ten seconds of traffic.
	MaxDelay = 10 * time.Second
	// MaxQueueBytes bounds QueueBytes: each direction's queue is memory.
	MaxQueueBytes = 1 << 30
	// maxIfName is the longest interface name Linux takes (IFNAMSIZ-1).
	maxIfName = 15
)

// Validate reports the first setting out of range as a *bounds.Error
// naming the bin/linkdelay flag that sets it, the value and the range. Open
// calls it; bin/linkdelay calls it first and exits 2.
// It only reads c: safe for concurrent use.
func (c *Config) Validate() error {
	var same error
	if c.A != "" && c.A == c.B {
		same = bounds.Fail("b", c.B, "an interface other than -a")
	}
	return bounds.First(
		checkIfName("a", c.A),
		checkIfName("b", c.B),
		same,
		bounds.Range("delay", c.Delay, 0, MaxDelay),
		bounds.Range("delay-ba", c.DelayBA, 0, MaxDelay),
		bounds.Range("queue-bytes", c.QueueBytes, 0, MaxQueueBytes),
		bounds.Range("rtprio", c.RealtimePriority, 0, 99),
		bounds.Range("nice", c.Nice, -20, 19),
	)
}

// checkIfName refuses what cannot be a Linux interface name.
func checkIfName(flag, name string) error {
	if name == "" || len(name) > maxIfName || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return bounds.Fail(flag, name, fmt.Sprintf("an interface name of 1 to %d bytes without '/', ':' or spaces", maxIfName))
	}
	return nil
}

// Stats are the counters of one direction.
type Stats struct {
	Received       uint64 // frames read from the receiving interface
	Sent           uint64 // frames written to the other interface
	DroppedFull    uint64 // frames dropped because the queue was full
	DroppedBad     uint64 // frames dropped as truncated or runt
	SendErrors     uint64 // frames whose write failed (e.g. link down)
	NoTimestamp    uint64 // frames timed from the read time, not the kernel's
	QueuedFrames   int    // frames waiting now (approximate)
	EarlyArmNanos  int64  // current early-arming estimate (timer lateness)
	MaxQueuedBytes int    // largest queue seen, in bytes
	LateAvgNanos   int64  // mean of (send time - due time) over sent frames
	LateMaxNanos   int64  // largest (send time - due time)
	LateOver1ms    uint64 // frames sent more than 1 ms after their due time
}
