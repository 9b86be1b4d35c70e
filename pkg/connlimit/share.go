package connlimit

import (
	"container/list"
	"net/netip"

	"golang.org/x/time/rate"
)

// Settled connections and fair shares. A connection that said who it is
// (a Hello with a session token, a joined room) is never evicted for a
// newcomer, but who it is costs little: a token is one free
// registration. So a few addresses could fill a port with settled
// connections and refuse every other client for as long as they keep
// them (abuse sweep 6: 5,104 TLS connections from 3 addresses closed
// Central's control port). At a full port with no newcomer left, a new
// connection from a source holding fewer connections than the source
// holding the most takes the place of that source's newest settled
// connection: shares even out toward cap / sources, and a source at or
// above every other's count is refused, as before. Only ports with a
// per-source cap count sources.

// settleLocked lists nc among its source's settled connections, if it is
// counted by source.
func (p *Port) settleLocked(nc *Newcomer) {
	if !nc.hasIP || nc.evict == nil {
		return
	}
	l := p.settled[nc.src]
	if l == nil {
		l = list.New()
		p.settled[nc.src] = l
	}
	nc.settledAt = l.PushBack(nc)
}

// unsettleLocked takes nc off its source's settled connections.
func (p *Port) unsettleLocked(nc *Newcomer) {
	l := p.settled[nc.src]
	l.Remove(nc.settledAt)
	nc.settledAt = nil
	if l.Len() == 0 {
		delete(p.settled, nc.src)
	}
}

// A source may take settled places at most shareRate a second (bursts of
// shareBurst): one that keeps nothing it takes would otherwise reset a
// connection of the heaviest source on every try (4 a second from one
// address in the verification of abuse sweep 6). Past maxTakers sources
// seen, those whose allowance is whole again are forgotten; while
// maxTakers are still taking, a new source takes nothing (it is refused
// at a full port, as before fair shares), so that sources without number
// cannot grow the map without bound.
const (
	shareRate  = 1
	shareBurst = 4
	maxTakers  = 4096
)

// overShareLocked picks, and takes off the lists, the newest settled
// connection of a source holding more than have+1 connections, the most
// of any, for a connection from src; nil when there is none, or src has
// taken its allowance of places.
func (p *Port) overShareLocked(src netip.Addr, have int) *Newcomer {
	top := p.load.top
	if top <= have+1 || !p.mayTakeLocked(src) {
		return nil
	}
	// Every source in the top bucket holds the most; look at a few for one
	// with a settled connection (the others' are held in other ways).
	tries := 0
	for ip := range p.load.by[top] {
		if l := p.settled[ip]; l != nil && l.Len() > 0 {
			out := l.Back().Value.(*Newcomer)
			out.done = true
			p.unlistLocked(out)
			p.takers[src].Allow()
			return out
		}
		if tries++; tries == 8 {
			break
		}
	}
	return nil
}

// mayTakeLocked reports whether src has a settled place left to take now.
func (p *Port) mayTakeLocked(src netip.Addr) bool {
	if p.takers == nil {
		p.takers = map[netip.Addr]*rate.Limiter{}
	}
	lim := p.takers[src]
	if lim == nil {
		if len(p.takers) >= maxTakers {
			for ip, l := range p.takers {
				if l.Tokens() >= shareBurst {
					delete(p.takers, ip)
				}
			}
			if len(p.takers) >= maxTakers {
				return false
			}
		}
		lim = rate.NewLimiter(shareRate, shareBurst)
		p.takers[src] = lim
	}
	return lim.Tokens() >= 1
}

// sourceLoad keeps the sources by how many connections each holds, so that
// the source holding the most is found at once.
type sourceLoad struct {
	by  []map[netip.Addr]struct{} // by[n]: the sources holding n (n ≥ 1)
	top int                       // the most any source holds
}

// moved records that ip went from holding from connections to holding to.
func (s *sourceLoad) moved(ip netip.Addr, from, to int) {
	if from > 0 {
		delete(s.by[from], ip)
	}
	if to > 0 {
		for len(s.by) <= to {
			s.by = append(s.by, nil)
		}
		if s.by[to] == nil {
			s.by[to] = map[netip.Addr]struct{}{}
		}
		s.by[to][ip] = struct{}{}
		s.top = max(s.top, to)
	}
	for s.top > 0 && len(s.by[s.top]) == 0 {
		s.top--
	}
}

// Admits reports whether a connection from a source that holds none
// would be admitted by the port's cap now: there is room under the cap, a
// newcomer to evict, or a source holding two or more, one of them
// settled, to give way for a fair share. The budget and the rate of
// taking places aside. A server full of one source's settled
// connections still admits new clients, and says so where it reports
// its load (a chat server to Central, which places no rooms on a full
// server: abuse sweep 6, verification, N2).
func (p *Port) Admits() bool {
	if p.max <= 0 || p.n.Load() < p.max {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.newcomers.Len() > 0 {
		return true
	}
	if p.load.top < 2 {
		return false
	}
	tries := 0
	for ip := range p.load.by[p.load.top] {
		if l := p.settled[ip]; l != nil && l.Len() > 0 {
			return true
		}
		if tries++; tries == 8 {
			break
		}
	}
	return false
}
