package connlimit

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/testkit"
)

// busyLoops is an engine whose one event loop spends busyFor on every
// read: a loop loaded by other connections' traffic.
type busyLoops struct {
	gnet.BuiltinEventEngine
	eng     gnet.Engine
	busyFor time.Duration
	up      chan struct{}
	upOnce  sync.Once
	opened  atomic.Int64
}

func (e *busyLoops) OnBoot(eng gnet.Engine) gnet.Action { e.eng = eng; return gnet.None }

func (e *busyLoops) OnTick() (time.Duration, gnet.Action) {
	e.upOnce.Do(func() { close(e.up) })
	return time.Hour, gnet.None
}

func (e *busyLoops) OnOpen(gnet.Conn) ([]byte, gnet.Action) {
	e.opened.Add(1)
	return nil, gnet.None
}

func (e *busyLoops) OnTraffic(c gnet.Conn) gnet.Action {
	_, _ = c.Discard(-1)
	time.Sleep(e.busyFor) // the loop's work for other connections, not synchronisation
	return gnet.None
}

// TestFeedDoesNotWaitForEachEnrolment: while the event loop is busy (every
// pass takes 50 ms), a burst of 32 connections reaches it in a few passes.
// Feed used to wait for each connection to reach its loop before accepting
// the next: one connection per pass, 1.6 s for the burst, while the listen
// queue filled and loopback connects timed out (chatload at 2,000 rooms).
func TestFeedDoesNotWaitForEachEnrolment(t *testing.T) {
	e := &busyLoops{busyFor: 50 * time.Millisecond, up: make(chan struct{})}
	ran := make(chan error, 1)
	go func() {
		ran <- gnet.Run(e, "tcp://127.0.0.1:0", gnet.WithNumEventLoop(1), gnet.WithTicker(true),
			gnet.WithLoadBalancing(gnet.LeastConnections))
	}()
	select {
	case <-e.up:
	case err := <-ran:
		t.Fatalf("gnet: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		Feed(ln, e.eng, New(1<<20), nil, t.Logf)
	}()
	var conns []net.Conn
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
		ln.Close()
		<-fed
		for _, c := range conns {
			c.Close()
		}
		_ = e.eng.Stop(context.Background())
		<-ran
	})
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, busy)
	testkit.WaitFor(t, 10*time.Second, "the busy connection on the loop", func() bool { return e.opened.Load() == 1 })
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := busy.Write([]byte{0}); err != nil {
					return
				}
			}
		}
	}()
	const burst = 32
	start := time.Now()
	for range burst {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testkit.WaitFor(t, 30*time.Second, "the burst on the loop", func() bool { return e.opened.Load() == burst+1 })
	took := time.Since(start)
	t.Logf("%d connections reached a loop busy %v a pass in %v", burst, e.busyFor, took.Round(time.Millisecond))
	if limit := burst * e.busyFor / 2; took > limit {
		t.Errorf("the burst took %v to reach the loop, want well under %v (one connection a pass: %v)", took.Round(time.Millisecond), limit, burst*e.busyFor)
	}
}
