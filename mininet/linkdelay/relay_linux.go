//go:build linux

package linkdelay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	vnetHdrLen = 10 // sizeof(struct virtio_net_hdr)
	// maxFrame is the receive buffer size: the virtio header plus the largest
	// GSO frame a veth hands over (64 KiB IP packet plus link headers).
	maxFrame = vnetHdrLen + 65536 + 256
	// maxBatch bounds how many frames are read per wake-up before the
	// direction looks at its send queue again.
	maxBatch = 256
	// maxEarly caps how early the timer is armed to compensate lateness.
	maxEarly = int64(time.Millisecond)
	// checkEvery is how often Run verifies that both interfaces still exist.
	checkEvery = time.Second
)

// Relay forwards Ethernet frames between two interfaces, in both directions,
// each after a constant delay. Create it with Open, drive it with Run and
// release it with Close.
type Relay struct {
	cfg        Config
	fdA, fdB   int
	idxA, idxB int
	evfd       int
	dirs       [2]*direction

	check   chan struct{} // "an interface may have vanished": check now
	closing chan struct{}

	mu      sync.Mutex
	started bool
	closed  bool
	wg      sync.WaitGroup // the direction goroutines
	runDone chan struct{}  // closed when Run returns
}

// Open validates cfg, opens and binds the packet sockets and prepares both
// directions. Frames start queueing in the kernel from here on; call Run to
// relay them.
func Open(cfg Config) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("linkdelay: %w", err)
	}
	if cfg.QueueBytes == 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	ifA, err := lookupInterface(cfg.A)
	if err != nil {
		return nil, err
	}
	ifB, err := lookupInterface(cfg.B)
	if err != nil {
		return nil, err
	}
	r := &Relay{
		cfg:     cfg,
		fdA:     -1,
		fdB:     -1,
		evfd:    -1,
		idxA:    ifA.Index,
		idxB:    ifB.Index,
		check:   make(chan struct{}, 1),
		closing: make(chan struct{}),
		runDone: make(chan struct{}),
	}
	ok := false
	defer func() {
		if !ok {
			r.closeFDs()
		}
	}()
	if r.fdA, err = openPacketSocket(cfg.A, ifA.Index, !cfg.NoPromisc, cfg.Logf); err != nil {
		return nil, err
	}
	if r.fdB, err = openPacketSocket(cfg.B, ifB.Index, !cfg.NoPromisc, cfg.Logf); err != nil {
		return nil, err
	}
	if cfg.PrepareInterfaces {
		for _, name := range []string{cfg.A, cfg.B} {
			if err := disableIPv6(name); err != nil && cfg.Logf != nil {
				cfg.Logf("cannot disable IPv6 on %s: %v", name, err)
			}
		}
	}
	if r.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("linkdelay: eventfd: %w", err)
	}
	clock := newMonoClock()
	delayBA := cfg.Delay
	if cfg.DelayBA > 0 {
		delayBA = cfg.DelayBA
	}
	r.dirs[0], err = newDirection(cfg.A+"->"+cfg.B, r.fdA, r.fdB, r.evfd, cfg.Delay, cfg.QueueBytes, clock, r.notify, cfg.Logf)
	if err != nil {
		return nil, err
	}
	r.dirs[1], err = newDirection(cfg.B+"->"+cfg.A, r.fdB, r.fdA, r.evfd, delayBA, cfg.QueueBytes, clock, r.notify, cfg.Logf)
	if err != nil {
		return nil, err
	}
	for _, d := range r.dirs {
		d.nice, d.rtprio = cfg.Nice, cfg.RealtimePriority
	}
	ok = true
	return r, nil
}

// Run relays frames until ctx is done (returns nil), Close is called
// (returns nil), an interface vanishes (returns an error wrapping
// ErrInterfaceGone) or a socket fails unexpectedly. Run may be called once.
func (r *Relay) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.started || r.closed {
		r.mu.Unlock()
		return errors.New("linkdelay: Run called twice or after Close")
	}
	r.started = true
	defer close(r.runDone)
	errc := make(chan error, len(r.dirs))
	for _, d := range r.dirs {
		r.wg.Add(1)
		go func(d *direction) {
			defer r.wg.Done()
			errc <- d.run()
		}(d)
	}
	r.mu.Unlock()

	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	var result error
	lastCheck := time.Now()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-r.closing:
			break loop
		case err := <-errc:
			result = err
			break loop
		case <-r.check:
			// Rate-limit: a downed link can report an error per frame.
			if time.Since(lastCheck) < 100*time.Millisecond {
				continue
			}
			lastCheck = time.Now()
			if err := r.verifyInterfaces(); err != nil {
				result = err
				break loop
			}
		case <-tick.C:
			lastCheck = time.Now()
			if err := r.verifyInterfaces(); err != nil {
				result = err
				break loop
			}
		}
	}
	r.stopDirections()
	r.wg.Wait()
	return result
}

// Close stops a running Run and releases all descriptors. It is safe to call
// more than once and concurrently with Run.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	started := r.started
	close(r.closing)
	r.mu.Unlock()
	if started {
		<-r.runDone // Run stops the directions and waits for them
	}
	r.closeFDs()
	return nil
}

// Stats returns the counters of the A->B and B->A directions.
func (r *Relay) Stats() (ab, ba Stats) {
	return r.dirs[0].snapshot(), r.dirs[1].snapshot()
}

func (r *Relay) notify() {
	select {
	case r.check <- struct{}{}:
	default:
	}
}

func (r *Relay) stopDirections() {
	if r.evfd < 0 {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	// The eventfd is never read, so it stays readable and wakes both
	// directions (level-triggered epoll).
	_, _ = unix.Write(r.evfd, one[:])
}

func (r *Relay) verifyInterfaces() error {
	for _, c := range []struct {
		name string
		idx  int
		fd   int
	}{{r.cfg.A, r.idxA, r.fdA}, {r.cfg.B, r.idxB, r.fdB}} {
		if !interfaceExists(c.fd, c.idx) {
			return fmt.Errorf("%w: %s", ErrInterfaceGone, c.name)
		}
	}
	return nil
}

func (r *Relay) closeFDs() {
	for _, d := range r.dirs {
		if d != nil {
			d.close()
		}
	}
	for _, fd := range []*int{&r.fdA, &r.fdB, &r.evfd} {
		if *fd >= 0 {
			_ = unix.Close(*fd)
			*fd = -1
		}
	}
}

func lookupInterface(name string) (*net.Interface, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("linkdelay: interface %q not found in this network namespace: %v", name, err)
	}
	return ifi, nil
}

func disableIPv6(name string) error {
	err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1\n"), 0o644)
	if errors.Is(err, os.ErrNotExist) {
		return nil // IPv6 not available at all
	}
	return err
}

// interfaceExists asks the kernel for the name of ifindex idx.
func interfaceExists(fd, idx int) bool {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return true
	}
	ifr.SetUint32(uint32(idx))
	err = unix.IoctlIfreq(fd, unix.SIOCGIFNAME, ifr)
	return !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENXIO)
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func setInt(fd, level, opt, v int, what string) error {
	if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
		return fmt.Errorf("linkdelay: setsockopt %s: %w", what, err)
	}
	return nil
}

// openPacketSocket opens an AF_PACKET raw socket carrying virtio net headers
// and kernel receive timestamps, bound to interface idx.
func openPacketSocket(name string, idx int, promisc bool, logf func(string, ...any)) (fd int, err error) {
	// Protocol 0: the socket receives nothing until it is bound below, so it
	// never sees frames of other interfaces.
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return -1, fmt.Errorf("linkdelay: opening a packet socket needs root (CAP_NET_RAW): %w", err)
		}
		return -1, fmt.Errorf("linkdelay: packet socket: %w", err)
	}
	defer func() {
		if err != nil {
			_ = unix.Close(fd)
			fd = -1
		}
	}()
	if err = setInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"); err != nil {
		return
	}
	if e := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); e != nil && logf != nil {
		// Older kernels: the sll_pkttype check still filters our own frames.
		logf("%s: PACKET_IGNORE_OUTGOING unavailable (%v); filtering by packet type", name, e)
	}
	if err = setInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS"); err != nil {
		return
	}
	// Generous socket buffers absorb bursts of 64 KiB GSO frames. The
	// *FORCE variants need CAP_NET_ADMIN; fall back to the capped ones.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}
	if err = unix.Bind(fd, sa); err != nil {
		if errors.Is(err, unix.ENODEV) {
			err = fmt.Errorf("linkdelay: interface %q vanished while binding: %w", name, err)
		} else {
			err = fmt.Errorf("linkdelay: bind to %s: %w", name, err)
		}
		return
	}
	if promisc {
		mreq := &unix.PacketMreq{Ifindex: int32(idx), Type: unix.PACKET_MR_PROMISC}
		if err = unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
			err = fmt.Errorf("linkdelay: promiscuous mode on %s: %w", name, err)
			return
		}
	}
	return fd, nil
}

// monoClock reads CLOCK_MONOTONIC (the timerfd's clock) through Go's vDSO
// backed monotonic clock, avoiding a system call per reading.
type monoClock struct {
	base     time.Time
	baseMono int64
}

func newMonoClock() *monoClock {
	c := &monoClock{}
	best := time.Duration(1 << 62)
	for i := 0; i < 5; i++ {
		var ts unix.Timespec
		t0 := time.Now()
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
			continue
		}
		t1 := time.Now()
		if d := t1.Sub(t0); d < best {
			best = d
			c.base = t0
			c.baseMono = ts.Nano() - int64(d/2)
		}
	}
	if c.base.IsZero() { // cannot happen on Linux; keep something sane
		c.base = time.Now()
	}
	return c
}

// now returns the CLOCK_MONOTONIC time in nanoseconds.
func (c *monoClock) now() int64 { return c.baseMono + int64(time.Since(c.base)) }

// sample returns CLOCK_MONOTONIC and the CLOCK_REALTIME minus
// CLOCK_MONOTONIC offset, from one reading.
func (c *monoClock) sample() (mono, realMinusMono int64) {
	t := time.Now()
	mono = c.baseMono + int64(t.Sub(c.base))
	return mono, t.UnixNano() - mono
}

// direction relays frames from one socket to the other.
type direction struct {
	name   string
	rx, tx int
	epfd   int
	tfd    int
	evfd   int
	delay  int64
	ring   *frameRing
	clock  *monoClock
	notify func()
	logf   func(string, ...any)
	nice   int
	rtprio int

	scratch []byte // receives frames that are dropped
	oobBuf  []uint64
	oob     []byte
	from    unix.RawSockaddrLinklayer
	iov     unix.Iovec
	msg     unix.Msghdr
	events  [4]unix.EpollEvent
	tbuf    [8]byte
	ts      unix.ItimerSpec
	armedAt int64 // absolute time the timer is armed for; 0: disarmed
	early   int64 // running average of the timer's wake-up lateness
	logged  int

	received, sent, droppedFull, droppedBad atomic.Uint64
	sendErrors, noTimestamp                 atomic.Uint64
	queued, maxQueued                       atomic.Int64
	earlyNs                                 atomic.Int64
	lateSum, lateMax, lateCount             atomic.Int64
	lateOver1ms                             atomic.Uint64
}

func newDirection(name string, rx, tx, evfd int, delay time.Duration, queueBytes int, clock *monoClock, notify func(), logf func(string, ...any)) (d *direction, err error) {
	maxEntries := queueBytes / 64
	if maxEntries > 1<<18 {
		maxEntries = 1 << 18
	}
	d = &direction{
		name:    name,
		rx:      rx,
		tx:      tx,
		epfd:    -1,
		tfd:     -1,
		evfd:    evfd,
		delay:   int64(delay),
		ring:    newFrameRing(queueBytes, maxFrame, maxEntries),
		clock:   clock,
		notify:  notify,
		logf:    logf,
		scratch: make([]byte, maxFrame),
		oobBuf:  make([]uint64, 32),
	}
	d.oob = unsafe.Slice((*byte)(unsafe.Pointer(&d.oobBuf[0])), len(d.oobBuf)*8)
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("linkdelay: timerfd: %w", err)
	}
	if d.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("linkdelay: epoll: %w", err)
	}
	for _, fd := range []int{rx, d.tfd, evfd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return nil, fmt.Errorf("linkdelay: epoll_ctl: %w", err)
		}
	}
	return d, nil
}

func (d *direction) close() {
	for _, fd := range []*int{&d.epfd, &d.tfd} {
		if *fd >= 0 {
			_ = unix.Close(*fd)
			*fd = -1
		}
	}
}

func (d *direction) snapshot() Stats {
	return Stats{
		Received:       d.received.Load(),
		Sent:           d.sent.Load(),
		DroppedFull:    d.droppedFull.Load(),
		DroppedBad:     d.droppedBad.Load(),
		SendErrors:     d.sendErrors.Load(),
		NoTimestamp:    d.noTimestamp.Load(),
		QueuedFrames:   int(d.queued.Load()),
		EarlyArmNanos:  d.earlyNs.Load(),
		MaxQueuedBytes: int(d.maxQueued.Load()),
		LateMaxNanos:   d.lateMax.Load(),
		LateAvgNanos:   avg(d.lateSum.Load(), d.lateCount.Load()),
		LateOver1ms:    d.lateOver1ms.Load(),
	}
}

func avg(sum, n int64) int64 {
	if n == 0 {
		return 0
	}
	return sum / n
}

func (d *direction) logOnce(format string, args ...any) {
	if d.logf == nil || d.logged >= 10 {
		return
	}
	d.logged++
	d.logf(d.name+": "+format, args...)
}

// run is the direction's event loop; it returns nil when asked to stop.
func (d *direction) run() error {
	// Own thread: wake-ups do not wait for a goroutine to be scheduled onto
	// some other thread first. The thread is deliberately never unlocked:
	// its priority may have been changed, so it ends with the goroutine.
	runtime.LockOSThread()
	d.setPriority()
	for {
		n, err := unix.EpollWait(d.epfd, d.events[:], -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("linkdelay: %s: epoll_wait: %w", d.name, err)
		}
		now := d.clock.now()
		for i := 0; i < n; i++ {
			switch int(d.events[i].Fd) {
			case d.evfd:
				return nil
			case d.tfd:
				if _, err := unix.Read(d.tfd, d.tbuf[:]); err == nil && d.armedAt != 0 {
					d.observeLateness(now - d.armedAt)
					d.armedAt = 0
				}
			case d.rx:
				if err := d.drain(); err != nil {
					return err
				}
			}
		}
		d.flush()
	}
}

// setPriority applies the configured scheduling to the calling thread.
func (d *direction) setPriority() {
	tid := unix.Gettid()
	if d.rtprio > 0 {
		attr := unix.SchedAttr{
			Policy:   unix.SCHED_FIFO,
			Priority: uint32(d.rtprio),
			Flags:    unix.SCHED_FLAG_RESET_ON_FORK,
		}
		err := unix.SchedSetAttr(tid, &attr, 0)
		if err == nil {
			return
		}
		d.logOnce("cannot use SCHED_FIFO priority %d: %v", d.rtprio, err)
	}
	if d.nice != 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, d.nice); err != nil {
			d.logOnce("cannot set nice %d: %v", d.nice, err)
		}
	}
}

func (d *direction) observeLateness(late int64) {
	if late < 0 || late > 2*maxEarly {
		return // a preemption or similar outlier; do not learn from it
	}
	d.early += (late - d.early) / 8
	limit := maxEarly
	if d.delay/2 < limit {
		limit = d.delay / 2
	}
	if d.early > limit {
		d.early = limit
	}
	if d.early < 0 {
		d.early = 0
	}
	d.earlyNs.Store(d.early)
}

// recv reads one frame (with its virtio header) into buf without blocking.
func (d *direction) recv(buf []byte) (n int, pkttype uint8, flags int32, err error) {
	d.iov.Base = &buf[0]
	d.iov.SetLen(len(buf))
	d.msg.Name = (*byte)(unsafe.Pointer(&d.from))
	d.msg.Namelen = unix.SizeofSockaddrLinklayer
	d.msg.Iov = &d.iov
	d.msg.SetIovlen(1)
	d.msg.Control = &d.oob[0]
	d.msg.SetControllen(len(d.oob))
	d.msg.Flags = 0
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(d.rx), uintptr(unsafe.Pointer(&d.msg)), unix.MSG_DONTWAIT|unix.MSG_TRUNC)
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), d.from.Pkttype, d.msg.Flags, nil
}

// rxTimestamp extracts the SCM_TIMESTAMPNS control message (CLOCK_REALTIME
// nanoseconds) from the last recvmsg.
func (d *direction) rxTimestamp() (int64, bool) {
	oob := d.oob[:d.msg.Controllen]
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS &&
			l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[hdr]))
			return ts.Nano(), true
		}
		next := unix.CmsgSpace(l - hdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return 0, false
}

// drain reads the frames waiting on the receiving socket into the queue.
func (d *direction) drain() error {
	mono, realMinusMono := d.clock.sample()
	for i := 0; i < maxBatch; i++ {
		buf := d.ring.reserve()
		full := buf == nil
		if full {
			buf = d.scratch
		}
		n, pkttype, flags, err := d.recv(buf)
		if err != nil {
			switch {
			case errors.Is(err, unix.EAGAIN):
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.ENETDOWN), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
				// Link went down or away: not fatal; let Run check whether
				// the interface still exists.
				d.notify()
			default:
				return fmt.Errorf("linkdelay: %s: recvmsg: %w", d.name, err)
			}
			break
		}
		if pkttype == unix.PACKET_OUTGOING {
			continue // our own (or the namespace's) transmissions
		}
		if n > len(buf) || flags&unix.MSG_TRUNC != 0 || n <= vnetHdrLen {
			d.droppedBad.Add(1)
			continue
		}
		d.received.Add(1)
		if full {
			d.droppedFull.Add(1)
			continue
		}
		arrival := mono
		if rt, ok := d.rxTimestamp(); ok {
			a := rt - realMinusMono
			// Plausibility: not in the future, not older than a second
			// (a realtime clock step would otherwise shift frames).
			if a <= mono+int64(time.Millisecond) && a >= mono-int64(time.Second) {
				arrival = a
			} else {
				d.noTimestamp.Add(1)
			}
		} else {
			d.noTimestamp.Add(1)
		}
		d.ring.commit(n, arrival+d.delay)
	}
	d.queued.Store(int64(d.ring.Len()))
	if b := int64(d.ring.Bytes()); b > d.maxQueued.Load() {
		d.maxQueued.Store(b)
	}
	return nil
}

// flush sends every frame that is due and re-arms the timer for the next.
func (d *direction) flush() {
	for {
		frame, deadline, ok := d.ring.peek()
		if !ok {
			break
		}
		now := d.clock.now()
		if deadline-d.early > now {
			break
		}
		d.send(frame)
		d.ring.pop()
		d.recordLateness(now - deadline)
	}
	d.queued.Store(int64(d.ring.Len()))
	if _, deadline, ok := d.ring.peek(); ok {
		at := deadline - d.early
		if at <= 0 {
			at = 1
		}
		if at != d.armedAt {
			d.arm(at)
		}
	} else if d.armedAt != 0 {
		d.arm(0)
	}
}

// recordLateness accounts how late (negative: early) a frame was sent.
func (d *direction) recordLateness(late int64) {
	d.lateSum.Add(late)
	d.lateCount.Add(1)
	if late > d.lateMax.Load() {
		d.lateMax.Store(late)
	}
	if late > int64(time.Millisecond) {
		d.lateOver1ms.Add(1)
	}
}

// arm sets the timer to fire at absolute monotonic time at (0 disarms).
func (d *direction) arm(at int64) {
	d.ts.Value = unix.NsecToTimespec(at)
	if err := unix.TimerfdSettime(d.tfd, unix.TFD_TIMER_ABSTIME, &d.ts, nil); err != nil {
		d.logOnce("timerfd_settime: %v", err)
		return
	}
	d.armedAt = at
}

func (d *direction) send(frame []byte) {
	for {
		_, err := unix.Write(d.tx, frame)
		if err == nil {
			d.sent.Add(1)
			return
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		d.sendErrors.Add(1)
		switch {
		case errors.Is(err, unix.ENETDOWN), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
			d.notify() // link down (drop) or gone (Run will notice)
		case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.EAGAIN):
			// momentary shortage: drop, like a full queue would
		default:
			d.logOnce("send: %v (frame of %d bytes dropped)", err, len(frame))
		}
		return
	}
}
