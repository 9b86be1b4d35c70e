package connlimit

import (
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestFairShareChurnLeavesNothing: many sources acquiring, settling, closing and being
// evicted at once leave no count, list or load behind.
func TestFairShareChurnLeavesNothing(t *testing.T) {
	l := New(10000)
	p := l.Port(16).Capped(64)
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for s := 0; s < 24; s++ {
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(s, w int) {
				defer wg.Done()
				r := rand.New(rand.NewSource(int64(s*100 + w)))
				addr := &net.TCPAddr{IP: net.IPv4(127, 1, byte(s), 1), Port: 1000 + w}
				if s >= 20 { // IPv6 sources, two of each /64
					addr = &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("fd00:%x::%x", s, w)), Port: 1}
				}
				for time.Now().Before(deadline) {
					gone := make(chan struct{}, 1)
					c := 1 + r.Intn(2)
					nc, ok := p.AcquireNew(addr, c, func(bool) { gone <- struct{}{} })
					if !ok {
						continue
					}
					if r.Intn(3) > 0 {
						nc.Settle()
					}
					select {
					case <-gone:
					case <-time.After(time.Duration(r.Intn(200)) * time.Microsecond):
					}
					nc.Done()
					p.Release(addr, c)
				}
			}(s, w)
		}
	}
	wg.Wait()
	if p.InUse() != 0 || l.InUse() != 0 || len(p.src) != 0 || len(p.settled) != 0 || p.load.top != 0 || p.Newcomers() != 0 {
		t.Fatalf("left behind: port %d limiter %d src %d settled %d top %d newcomers %d", p.InUse(), l.InUse(), len(p.src), len(p.settled), p.load.top, p.Newcomers())
	}
	t.Logf("evicted %d refused %d", l.Evicted(), l.Refused())
}

// TestTLSRelayKeepsItsClientsPlace: Central's TLS control port takes a
// connection's place in two steps on
// one port: the TCP connection (cost 2, by source) in the TLS front, then
// its relay on the event loops (cost 1, a Unix socket: no source). At a
// port full of settled connections from A, a client from B is admitted by
// evicting A's newest, but its relay, arriving before A's relay has gone,
// found the port full with one newcomer listed, B's own TCP connection,
// and evicted it (abuse sweep 6, verification). A relay is held to the
// budget only.
func TestTLSRelayKeepsItsClientsPlace(t *testing.T) {
	p := New(100).Port(2048).Capped(9)
	a := &net.TCPAddr{IP: net.IPv4(127, 0, 77, 1), Port: 1}
	b := &net.TCPAddr{IP: net.IPv4(127, 0, 78, 1), Port: 1}
	relay := &net.UnixAddr{Name: "@", Net: "unix"}
	evicted := map[string]bool{}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("A%d", i)
		tcp, ok := p.AcquireNew(a, 2, func(bool) { evicted[name] = true })
		rl, ok2 := p.AcquireNew(relay, 1, func(bool) { evicted[name+"-relay"] = true })
		if !ok || !ok2 {
			t.Fatal("A refused")
		}
		rl.Settle()
		tcp.Settle()
	}
	tcpB, ok := p.AcquireNew(b, 2, func(bool) { evicted["B"] = true })
	if !ok {
		t.Fatal("B's TCP refused")
	}
	// A2's TCP connection closes at once (its front), its relay later.
	if evicted["A2"] {
		p.Release(a, 2)
	}
	_, ok = p.AcquireNew(relay, 1, func(bool) { evicted["B-relay"] = true })
	t.Logf("B's relay admitted %v; evicted %v", ok, evicted)
	_ = tcpB
	if evicted["B"] || !ok {
		t.Errorf("B lost its own place: evicted %v, relay admitted %v", evicted, ok)
	}
}

// TestTakingPlacesIsRateLimited: a source that keeps nothing it takes
// (it closes each connection at once) may take settled places only
// shareBurst at once and shareRate a second, not one a try (abuse sweep
// 6, verification: one address reset a busier address's connections 4
// times a second while holding none).
func TestTakingPlacesIsRateLimited(t *testing.T) {
	p := New(100).Port(64).Capped(8)
	nat := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1}
	churn := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 1}
	var gone *Newcomer // the NAT's connection evicted last
	connectNAT := func() {
		var nc *Newcomer
		nc, ok := p.AcquireNew(nat, 1, func(bool) { gone = nc })
		if !ok {
			t.Fatal("the NAT refused under the cap")
		}
		nc.Settle()
	}
	for range 8 {
		connectNAT()
	}
	taken := 0
	for range 20 {
		nc, ok := p.AcquireNew(churn, 1, func(bool) {})
		if !ok {
			continue
		}
		taken++
		// The churning connection closes at once, and so does the one it
		// evicted; the NAT's client connects again into the freed place.
		nc.Done()
		p.Release(churn, 1)
		gone.Done()
		p.Release(nat, 1)
		connectNAT()
	}
	if taken != shareBurst {
		t.Fatalf("20 tries in a moment took %d places, want %d", taken, shareBurst)
	}
}

// TestTakersBounded: the sources that took places are forgotten once
// their allowance is whole again; while maxTakers are still taking, a new
// source takes none, rather than growing the map without bound (a source
// per IPv6 /64 costs an attacker little).
func TestTakersBounded(t *testing.T) {
	p := New(100).Port(64).Capped(8)
	p.takers = map[netip.Addr]*rate.Limiter{}
	spent := func() *rate.Limiter {
		l := rate.NewLimiter(shareRate, shareBurst)
		l.AllowN(time.Now(), shareBurst)
		return l
	}
	for i := range maxTakers {
		p.takers[netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})] = spent()
	}
	newcomer := netip.MustParseAddr("127.0.0.9")
	if p.mayTakeLocked(newcomer) || len(p.takers) != maxTakers {
		t.Fatalf("a new source beside %d still taking: may take, or the map grew to %d", maxTakers, len(p.takers))
	}
	for ip := range p.takers {
		p.takers[ip] = rate.NewLimiter(shareRate, shareBurst) // whole again
	}
	if !p.mayTakeLocked(newcomer) || len(p.takers) != 1 {
		t.Fatalf("with every allowance whole: the new source may not take, or %d kept (want 1)", len(p.takers))
	}
}

// TestAdmits: a port at its cap admits a fresh source while it holds a
// newcomer, or a source holding two or more settled connections; not
// when every source holds one.
func TestAdmits(t *testing.T) {
	p := New(100).Port(64).Capped(4)
	from := func(i byte) *net.TCPAddr { return &net.TCPAddr{IP: net.IPv4(127, 0, 5, i), Port: 1} }
	var ncs []*Newcomer
	for i := range byte(4) {
		if !p.Admits() {
			t.Fatalf("refuses with %d of 4 held", i)
		}
		nc, ok := p.AcquireNew(from(1+i/2), 1, func(bool) {}) // two sources, two each
		if !ok {
			t.Fatal("refused under the cap")
		}
		ncs = append(ncs, nc)
	}
	if !p.Admits() {
		t.Fatal("full of newcomers: a fresh source would evict one")
	}
	for _, nc := range ncs {
		nc.Settle()
	}
	if !p.Admits() {
		t.Fatal("two sources of two settled: a fresh source takes a place")
	}
	// Every source at one: nobody gives way.
	ncs[1].Done()
	p.Release(from(1), 1)
	ncs[3].Done()
	p.Release(from(2), 1)
	for i := range byte(2) {
		nc, ok := p.AcquireNew(from(3+i), 1, func(bool) {})
		if !ok {
			t.Fatal("refused under the cap")
		}
		nc.Settle()
	}
	if p.Admits() {
		t.Fatal("four sources of one settled connection each: nothing to take, yet Admits")
	}
	if _, ok := p.AcquireNew(from(9), 1, func(bool) {}); ok {
		t.Fatal("Admits said no, yet a fresh source was admitted")
	}
}
