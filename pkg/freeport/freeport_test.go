package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestAddrOutsideEphemeralRange: a reserved port must not be one the
// kernel can give to an outgoing connection or a :0 listener before the
// process it was reserved for binds it, and must not be handed out twice.
func TestAddrOutsideEphemeralRange(t *testing.T) {
	start := ephemeralStart()
	if start-10000 < 1000 {
		t.Skipf("ephemeral range starts at %d: no room below it", start)
	}
	seen := map[string]bool{}
	for range 500 {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		_, ps, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(ps)
		if p >= start {
			t.Fatalf("Addr gave %s, inside the ephemeral range starting at %d", addr, start)
		}
		if seen[addr] {
			t.Fatalf("Addr gave %s twice", addr)
		}
		seen[addr] = true
	}
}
