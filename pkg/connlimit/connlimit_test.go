package connlimit

import (
	"net"
	"syscall"
	"testing"
	"time"
)

func TestBudgetKeepsAReserve(t *testing.T) {
	for _, tc := range []struct{ limit, budget int }{
		{256, 192}, {1024, 768}, {20000, 20000 - 1024 - Backlog}, {1 << 20, 1<<20 - 1024 - Backlog},
	} {
		b, r, err := budgetFor(tc.limit)
		if err != nil || b != tc.budget || b+r != tc.limit {
			t.Errorf("limit %d: budget %d reserve %d err %v, want budget %d", tc.limit, b, r, err, tc.budget)
		}
	}
	if _, _, err := budgetFor(40); err == nil {
		t.Error("a limit of 40 descriptors leaves no room, yet no error")
	}
}

func TestPortLimits(t *testing.T) {
	l := New(5)
	a := l.Port(2)
	b := l.Port(0)
	x := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	y := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1}
	if !a.Acquire(x, 1) || !a.Acquire(x, 1) {
		t.Fatal("first two from one source refused")
	}
	if a.Acquire(x, 1) {
		t.Fatal("third from one source admitted past the per-source cap of 2")
	}
	if !a.Acquire(y, 1) {
		t.Fatal("another source refused")
	}
	if !b.Acquire(x, 2) {
		t.Fatal("a port with no per-source cap refused within the budget")
	}
	if b.Acquire(&net.UnixAddr{Name: "@"}, 1) {
		t.Fatal("admitted past the shared budget of 5")
	}
	a.Release(x, 1)
	if !a.Acquire(x, 1) || l.InUse() != 5 || l.Refused() != 2 {
		t.Fatalf("after a release: in use %d, refused %d", l.InUse(), l.Refused())
	}
}

func TestListenerRefusesPastTheLimit(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(100)
	ln := l.Port(1).Listener(raw, 1)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	first := <-accepted
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("second connection from the same source was not closed")
	}
	first.Close()
	if l.InUse() != 0 {
		t.Fatalf("in use %d after close", l.InUse())
	}
	c3, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a connection after the release was not admitted")
	}
}

// RaiseNoFile raises the open-file limit to what a run needs, or as far
// as this process may: to the hard limit without CAP_SYS_RESOURCE.
func TestRaiseNoFile(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	want := lim.Max + 1000
	got, err := RaiseNoFile(want)
	if err != nil {
		t.Fatal(err)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	t.Logf("open-file limit %d (hard %d) -> %d (hard %d), asked for %d", lim.Cur, lim.Max, now.Cur, now.Max, want)
	switch {
	case got != now.Cur:
		t.Fatalf("returned %d, but the limit is %d", got, now.Cur)
	case got < want && (got != lim.Max || now.Max != lim.Max):
		t.Fatalf("refused a raise past the hard limit %d, yet the limit is %d (hard %d)", lim.Max, got, now.Max)
	}
}

// TestCappedPortLeavesTheRest: a port capped below the budget refuses past
// its cap, from any number of sources, while another port still gets the
// rest of the budget; a release frees the capped port's share.
func TestCappedPortLeavesTheRest(t *testing.T) {
	l := New(8)
	ctrl := l.Port(1).Capped(6)
	rest := l.Port(0).Capped(6)
	for i := range 6 {
		if !ctrl.Acquire(&net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1)), Port: 1}, 1) {
			t.Fatalf("connection %d refused within the port's cap", i)
		}
	}
	z := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 99), Port: 1}
	if ctrl.Acquire(z, 1) {
		t.Fatal("admitted past the port's cap of 6")
	}
	if !rest.Acquire(z, 1) || !rest.Acquire(z, 1) {
		t.Fatal("the other port refused within what the capped one left")
	}
	if rest.Acquire(z, 1) {
		t.Fatal("admitted past the shared budget of 8")
	}
	ctrl.Release(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, 1)
	if !ctrl.Acquire(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, 1) || l.InUse() != 8 || l.Refused() != 2 {
		t.Fatalf("after a release: in use %d, refused %d", l.InUse(), l.Refused())
	}
}
