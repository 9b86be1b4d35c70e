package connlimit

import (
	"container/list"
	"net"
	"net/netip"
)

// Newcomers: a connection that has not yet said who it is (a Hello) holds
// its place only until somebody needs it. A flood of connections that
// never speak, from one address or from many, would otherwise fill a
// source's cap or the port's until their hello deadlines close them, and
// refuse every real client meanwhile. AcquireNew admits a connection past
// a full cap by evicting the oldest newcomer (of the same source, for the
// per-source cap); a connection that said who it is (Newcomer.Settle) is
// never evicted for a newcomer, only for a fair share (share.go). The
// descriptor budget stays a hard limit: past it a connection is refused,
// as by Acquire.
//
// A flood then only evicts itself, oldest first: a client that says Hello
// within its first round trip is displaced only by as many newer
// connections as the cap holds.

// Newcomer is a connection admitted by AcquireNew that may still be
// evicted.
type Newcomer struct {
	p     *Port
	src   netip.Addr
	hasIP bool // counted by source
	evict func(settled bool)
	all   *list.Element // in p.newcomers
	mine  *list.Element // in p.bySrc[src]; nil without a per-source cap
	// in p.settled[src] once settled (nil without a per-source cap)
	settledAt *list.Element
	isSettled bool // Settle was called: listed as a newcomer no more
	done      bool // Done was called, or evicted: never listed again
	leaving   bool // evicted for a newcomer, counted in p.leaving until Done
}

// AcquireNew is Acquire for a connection that has yet to say who it is.
// Where Acquire would refuse it for the port's cap or addr's, it evicts
// the oldest newcomer instead (addr's own for the per-source cap), calling
// its evict, which must close that connection (its owner then calls
// Release and Done as for any close), be safe to call from any goroutine,
// and not call into p; settled tells it that the connection had said who
// it is, and goes for a fair share. It returns nil, false when the
// connection must be refused; otherwise call Settle once the connection
// has said who it is, and Done when it closes.
func (p *Port) AcquireNew(addr net.Addr, cost int, evict func(settled bool)) (*Newcomer, bool) {
	return p.acquire(addr, cost, evict, true)
}

// AcquireHandshake is AcquireNew for a connection that is admitted again,
// capped, once a handshake is done (a TLS one), and can be told then why
// it is refused: past the port's cap it evicts a newcomer if there is one,
// and is admitted all the same if there is none. The per-source cap and
// the budget refuse it as they refuse any.
func (p *Port) AcquireHandshake(addr net.Addr, cost int, evict func(settled bool)) (*Newcomer, bool) {
	return p.acquire(addr, cost, evict, false)
}

// listLocked records a newcomer from ip (with a per-source cap when
// hasIP).
func (p *Port) listLocked(ip netip.Addr, hasIP bool, evict func(bool)) *Newcomer {
	nc := &Newcomer{p: p, src: ip, hasIP: hasIP, evict: evict}
	p.pushLocked(nc)
	return nc
}

// pushLocked lists nc as the newest newcomer.
func (p *Port) pushLocked(nc *Newcomer) {
	nc.all = p.newcomers.PushBack(nc)
	ip := nc.src
	if nc.hasIP {
		l := p.bySrc[ip]
		if l == nil {
			l = list.New()
			p.bySrc[ip] = l
		}
		nc.mine = l.PushBack(nc)
	}
}

// unlistLocked takes nc off the lists; a no-op the second time.
func (p *Port) unlistLocked(nc *Newcomer) {
	if nc.settledAt != nil {
		p.unsettleLocked(nc)
	}
	if nc.all == nil {
		return
	}
	p.newcomers.Remove(nc.all)
	nc.all = nil
	if nc.mine != nil {
		l := p.bySrc[nc.src]
		l.Remove(nc.mine)
		if l.Len() == 0 {
			delete(p.bySrc, nc.src)
		}
		nc.mine = nil
	}
}

// Settle takes nc's connection off the newcomers, for good: it said who it
// is. From then on it gives way only to a newcomer from a source holding
// fewer connections, when the port is full (share.go). Safe to call more
// than once, and on nil.
func (nc *Newcomer) Settle() {
	if nc == nil {
		return
	}
	p := nc.p
	p.mu.Lock()
	if !nc.done && !nc.isSettled {
		nc.isSettled = true
		p.unlistLocked(nc)
		p.settleLocked(nc)
	}
	p.mu.Unlock()
}

// SetEvict replaces how nc's connection is evicted, once its owner can
// say more than a close does: a TLS front, once the handshake is done,
// tells its client why in the protocol it speaks (a fatal Error frame)
// where the listener could only close the TCP connection under it. The
// same rules as AcquireNew's evict hold. A no-op on nil.
func (nc *Newcomer) SetEvict(evict func(settled bool)) {
	if nc == nil {
		return
	}
	nc.p.mu.Lock()
	nc.evict = evict
	nc.p.mu.Unlock()
}

// Done takes nc's connection off every list, for good: it closed (or
// said who it is, on a port with no share to keep). Safe to call more
// than once, and on nil.
func (nc *Newcomer) Done() {
	if nc == nil {
		return
	}
	p := nc.p
	p.mu.Lock()
	nc.done = true
	p.unlistLocked(nc)
	if nc.leaving {
		nc.leaving = false
		p.leavingAll--
		if nc.hasIP {
			if p.leaving[nc.src]--; p.leaving[nc.src] <= 0 {
				delete(p.leaving, nc.src)
			}
		}
	}
	p.mu.Unlock()
}

// leaveLocked counts nc, just evicted, as leaving until its Done: its
// place is the evicting connection's already.
func (p *Port) leaveLocked(nc *Newcomer) {
	nc.leaving = true
	p.leavingAll++
	if nc.hasIP {
		p.leaving[nc.src]++
	}
}

// Hold takes nc's connection off the newcomers while it does work that
// shows it is a client (an HTTP request being served); Relist puts it
// back once it idles, as the newest. Both are no-ops after Done, and on
// nil.
func (nc *Newcomer) Hold() {
	if nc == nil {
		return
	}
	nc.p.mu.Lock()
	nc.p.unlistLocked(nc)
	nc.p.mu.Unlock()
}

// Relist: see Hold.
func (nc *Newcomer) Relist() {
	if nc == nil {
		return
	}
	nc.p.mu.Lock()
	if !nc.done && !nc.isSettled && nc.all == nil {
		nc.p.pushLocked(nc)
	}
	nc.p.mu.Unlock()
}

// NewcomerOf returns the newcomer of a connection accepted by a
// NewcomerListener, looking through wrappers that have a NetConn method
// (crypto/tls), or nil.
func NewcomerOf(c net.Conn) *Newcomer {
	for range 8 {
		switch x := c.(type) {
		case *conn:
			return x.nc
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Newcomers returns how many connections admitted by AcquireNew have not
// yet said who they are.
func (p *Port) Newcomers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.newcomers.Len()
}

// NewcomerListener is Listener for a port whose connections prove who
// they are only later, in a protocol run over them (behind a TLS front):
// each accepted connection is a newcomer (AcquireNew), evicted by closing
// it, until NewcomerOf(it).Settle() is called (then only for a fair share).
func (p *Port) NewcomerListener(ln net.Listener, cost int) net.Listener {
	return &listener{Listener: ln, p: p, cost: cost, newcomers: true}
}

// EvictionMargin is how much of a budget to leave above the caps of the
// ports that evict (AcquireNew), for connections evicted or being handed
// to the event loops but not yet closed: a sixteenth, at least 2*Backlog,
// never more than a quarter, so that a small budget keeps a cap (0 would
// be none, and then the budget, which never evicts, refuses first).
func EvictionMargin(budget int) int {
	return min(max(budget/16, 2*Backlog), budget/4)
}

// Max returns p's cap (0: none).
func (p *Port) Max() int { return int(p.max) }
