// Package connlimit keeps a server's connections within what the process can
// hold: a descriptor budget below RLIMIT_NOFILE, shared by every port of the
// process, and a cap on what one source address may hold.
//
// gnet's main reactor stops for good when accept(2) fails (EMFILE), and a Go
// listener that fails the same way ends its accept loop, so a process must
// never let its connections reach the descriptor limit. A Limiter counts
// descriptors, not connections: a TLS connection relayed to the event loops
// holds three. Connections past a limit are refused at once (closed, or told
// why where the protocol allows), never queued.
//
// A Limiter is safe for concurrent use.
package connlimit

import (
	"container/list"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

// Limiter is the descriptor budget of a process, shared by its ports.
type Limiter struct {
	max     int64
	n       atomic.Int64
	refused atomic.Int64
	evicted atomic.Int64

	peak        atomic.Int64 // for Reclaim
	lastReclaim atomic.Int64 // Unix nanoseconds
}

// New returns a Limiter allowing max descriptors in all.
func New(max int) *Limiter { return &Limiter{max: int64(max)} }

// Port is one listening port's share of a Limiter: the budget is common,
// the per-source cap is the port's own, and so is an optional cap on the
// whole port (Capped).
type Port struct {
	l      *Limiter
	perSrc int
	max    int64 // 0: the budget alone
	n      atomic.Int64
	mu     sync.Mutex
	src    map[netip.Addr]int
	// leaving counts the connections evicted and not yet closed, in all
	// and by source: their places are given to the ones that evicted
	// them, so the caps do not count them twice.
	leaving    map[netip.Addr]int
	leavingAll int64

	// Connections admitted by AcquireNew that have not yet said who they
	// are, oldest first: all of them, and by source (newcomer.go).
	newcomers *list.List
	bySrc     map[netip.Addr]*list.List
	// Those that have (Newcomer.Settle), by source, oldest first, and
	// the sources by how many connections they hold: at a full port a
	// newcomer from a source holding fewer takes the place of the
	// newest settled connection of the source holding the most
	// (share.go).
	settled map[netip.Addr]*list.List
	load    sourceLoad
	takers  map[netip.Addr]*rate.Limiter // sources that took settled places
}

// Capped sets the most descriptors p's connections may hold together, so
// that a flood of one port (connections that never say who they are,
// from many sources) leaves the others some of the budget. It returns p;
// call it before p serves.
func (p *Port) Capped(max int) *Port {
	p.max = int64(max)
	return p
}

// Port returns a Port drawing on l with at most perSource connections from
// one IP address (0: no per-source cap).
func (l *Limiter) Port(perSource int) *Port {
	return &Port{l: l, perSrc: perSource, src: map[netip.Addr]int{}, leaving: map[netip.Addr]int{}, newcomers: list.New(), bySrc: map[netip.Addr]*list.List{}, settled: map[netip.Addr]*list.List{}}
}

// Budget returns how many descriptors connections may use in this process:
// the soft RLIMIT_NOFILE (Go raises it to the hard limit at start) minus a
// reserve for listeners, files, outgoing dials, logs, and the connections
// the kernel has queued for accept that gnet takes before we see them (see
// Backlog). It also returns the reserve.
func Budget() (budget, reserve int, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("connlimit: getrlimit: %w", err)
	}
	return budgetFor(int(min(rl.Cur, 1<<30)))
}

// RaiseNoFile lifts RLIMIT_NOFILE (soft and hard) to want, as far as the
// kernel lets this process (fs.nr_open; past the hard limit only with
// CAP_SYS_RESOURCE), and returns the soft limit it ends at. Load
// generators and tests that hold many connections use it; servers keep
// what Go set at start and stay within Budget.
func RaiseNoFile(want uint64) (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("connlimit: getrlimit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	up := unix.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && up.Max > n {
			up.Cur, up.Max = min(up.Cur, n), n
		}
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &up); err != nil {
		// Not allowed past the hard limit: go as far as it.
		up = unix.Rlimit{Cur: lim.Max, Max: lim.Max}
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &up)
	}
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("connlimit: getrlimit: %w", err)
	}
	return lim.Cur, nil
}

func budgetFor(limit int) (budget, reserve int, err error) {
	reserve = min(max(48, limit/4), 1024+Backlog)
	if limit-reserve < 16 {
		return 0, reserve, fmt.Errorf("connlimit: RLIMIT_NOFILE %d leaves no room for connections (reserve %d)", limit, reserve)
	}
	return limit - reserve, reserve, nil
}

// Backlog is the listen backlog servers should use. gnet listens with the
// system maximum (often 4096) and accepts the whole queue before any
// connection reaches OnOpen; a short queue bounds how far accepted
// descriptors can run ahead of the count.
const Backlog = 128

// SetBacklog sets the listen backlog of the listening socket fd (a
// duplicate of it will do: the backlog belongs to the socket).
func SetBacklog(fd, n int) error {
	if err := unix.Listen(fd, n); err != nil {
		return fmt.Errorf("connlimit: listen backlog: %w", err)
	}
	return nil
}

// Max returns the descriptor budget.
func (l *Limiter) Max() int { return int(l.max) }

// InUse returns the descriptors held by admitted connections.
func (l *Limiter) InUse() int { return int(l.n.Load()) }

// InUse returns the descriptors held by p's connections.
func (p *Port) InUse() int { return int(p.n.Load()) }

// Refused returns how many connections were refused so far.
func (l *Limiter) Refused() int64 { return l.refused.Load() }

// Evicted returns how many connections were closed so far to make room
// for a newer one (AcquireNew).
func (l *Limiter) Evicted() int64 { return l.evicted.Load() }

// sourceOf returns addr's source, or false for addresses without one (Unix
// sockets: the relay of a TLS front, already counted by source there). A
// source is an IPv4 address, or an IPv6 /64: one host is usually given a
// whole /64, so counting its addresses apart would void every per-source
// cap against it (abuse sweep 6; Central's rate limits key sources the
// same way).
func sourceOf(addr net.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	var ok bool
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, ok = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, ok = netip.AddrFromSlice(a.IP)
	}
	if !ok {
		return netip.Addr{}, false
	}
	if ip = ip.Unmap(); ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip, true
}

// Acquire takes cost descriptors for a connection from addr. It reports
// false, taking nothing, when the budget, the port's cap or addr's
// per-source cap is spent.
func (p *Port) Acquire(addr net.Addr, cost int) bool {
	_, ok := p.acquire(addr, cost, nil, true)
	return ok
}

// acquire is Acquire, and AcquireNew when evict is not nil; without
// capped the port's cap is not checked (AcquireHandshake).
func (p *Port) acquire(addr net.Addr, cost int, evict func(settled bool), capped bool) (*Newcomer, bool) {
	n := int64(cost)
	if p.l.n.Add(n) > p.l.max {
		return nil, p.refuse(n, false)
	}
	ip, hasIP := sourceOf(addr)
	if !hasIP && evict != nil {
		// The relay of a TLS front in this process (a Unix socket):
		// its client's connection was capped there, and is the one to
		// evict. Counted in the port, so that the front's cap sees
		// it; never refused for the cap, nor evicting: it would evict
		// its own client's connection (abuse sweep 6, verification).
		p.n.Add(n)
		return nil, true
	}
	hasIP = hasIP && p.perSrc > 0
	p.mu.Lock()
	// A handshake (not capped) past the port's cap still makes room by
	// evicting where it can: otherwise handshakes piled up past the cap
	// to the budget, where nothing is evicted and every newcomer was
	// refused (review, 2026-12-03).
	overPort := p.n.Add(n)-p.leavingAll > p.max && p.max > 0
	overSrc := hasIP && p.src[ip]-p.leaving[ip] >= p.perSrc
	var out *Newcomer
	if overPort || overSrc {
		// One eviction makes room under both caps when it is addr's own.
		from := p.newcomers
		if overSrc {
			from = p.bySrc[ip]
		}
		switch {
		case evict != nil && from != nil && from.Len() > 0:
			out = from.Front().Value.(*Newcomer)
			out.done = true
			p.unlistLocked(out)
			p.leaveLocked(out)
		case evict != nil && capped && !overSrc && hasIP:
			// No newcomer to evict: the port is full of connections
			// that said who they are. A fair share, not first come.
			if out = p.overShareLocked(ip, p.src[ip]); out != nil {
				p.leaveLocked(out)
				break
			}
			p.mu.Unlock()
			return nil, p.refuse(n, true)
		case overSrc || capped:
			p.mu.Unlock()
			return nil, p.refuse(n, true)
		}
		// Else a handshake past the port's cap with nothing to evict:
		// admitted, and capped once it is on a loop (AcquireHandshake).
	}
	if hasIP {
		p.src[ip]++
		p.load.moved(ip, p.src[ip]-1, p.src[ip])
	}
	var nc *Newcomer
	if evict != nil {
		nc = p.listLocked(ip, hasIP, evict)
	}
	var outEvict func(bool)
	if out != nil {
		outEvict = out.evict // SetEvict changes it under p.mu
	}
	p.mu.Unlock()
	if out != nil {
		p.l.evicted.Add(1)
		outEvict(out.isSettled)
	}
	return nc, true
}

// refuse gives back the n descriptors Acquire took from the budget (and
// from the port's own count, with port), counts a refusal, and says no.
func (p *Port) refuse(n int64, port bool) bool {
	if port {
		p.n.Add(-n)
	}
	p.l.n.Add(-n)
	p.l.refused.Add(1)
	return false
}

// Release returns what Acquire took for a connection from addr.
func (p *Port) Release(addr net.Addr, cost int) {
	p.l.n.Add(-int64(cost))
	p.n.Add(-int64(cost))
	if ip, ok := sourceOf(addr); ok && p.perSrc > 0 {
		p.mu.Lock()
		if p.src[ip]--; p.src[ip] <= 0 {
			delete(p.src, ip)
		}
		p.load.moved(ip, p.src[ip]+1, p.src[ip])
		p.mu.Unlock()
	}
}

// Listener wraps ln so that each accepted connection costs cost
// descriptors: one past the limits is closed at once, and accept errors
// that say the process or system is out of descriptors or memory are
// retried with back-off instead of ending the caller's accept loop.
func (p *Port) Listener(ln net.Listener, cost int) net.Listener {
	return &listener{Listener: ln, p: p, cost: cost}
}

// Few wraps the listener of an HTTP port that serves a few clients at a
// time (a metrics scraper, a dashboard's viewers): at most max connections
// are held, at most perSource of them from one address. Past either a new
// connection evicts the oldest that is not serving a request (the
// server must call ServeNewcomers), or is closed at once when every one
// is; so connections that send nothing, or trickle, from one address or
// many, cannot keep a scraper out. The process's descriptor budget is
// not touched: max bounds what this port takes of it.
func Few(ln net.Listener, max, perSource int) net.Listener {
	return New(2*max).Port(perSource).Capped(max).NewcomerListener(ln, 1)
}

type listener struct {
	net.Listener
	p         *Port
	cost      int
	newcomers bool // NewcomerListener
}

func (ln *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			if !Retry(err) {
				return nil, err
			}
			delay = Backoff(delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		var evict func(bool)
		if ln.newcomers {
			evict = func(bool) { _ = c.Close() }
		}
		nc, ok := ln.p.acquire(c.RemoteAddr(), ln.cost, evict, true)
		if !ok {
			_ = c.Close()
			continue
		}
		return &conn{Conn: c, p: ln.p, cost: ln.cost, nc: nc}, nil
	}
}

type conn struct {
	net.Conn
	p    *Port
	cost int
	nc   *Newcomer // NewcomerListener: until Settle
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.nc.Done()
		c.p.Release(c.Conn.RemoteAddr(), c.cost)
	})
	return err
}

// CloseWrite half-closes the connection when the underlying one can.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// Retry reports whether an accept error is worth retrying after a pause:
// out of descriptors (EMFILE, ENFILE), buffers or memory, or a peer that
// gave up while queued.
func Retry(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, e := range []syscall.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EINTR, unix.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Backoff returns the next pause after prev: 5 ms doubling to 1 s.
func Backoff(prev time.Duration) time.Duration {
	if prev == 0 {
		return 5 * time.Millisecond
	}
	return min(2*prev, time.Second)
}

// Reclaim hands freed memory back to the operating system after a flood:
// when the descriptors in use fall to half of their peak since the last
// reclaim, by at least reclaimDrop, and at most once per reclaimEvery.
// Buffers of the connections of a flood are garbage once they close, but
// the runtime returns them slowly; an operator watching RSS after an attack
// should see it fall. Call it periodically.
func (l *Limiter) Reclaim() {
	n := l.n.Load()
	if n > l.peak.Load() {
		l.peak.Store(n)
		return
	}
	peak := l.peak.Load()
	if peak-n < reclaimDrop || n > peak/2 || time.Since(time.Unix(0, l.lastReclaim.Load())) < reclaimEvery {
		return
	}
	l.peak.Store(n)
	l.lastReclaim.Store(time.Now().UnixNano())
	debug.FreeOSMemory()
}

const (
	reclaimDrop  = 256
	reclaimEvery = 10 * time.Second
)
