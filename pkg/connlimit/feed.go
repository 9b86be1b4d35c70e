package connlimit

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// Feed accepts connections from ln and hands each to eng's event loops,
// until ln is closed. It exists because gnet's own accept loop ends the
// engine on the first accept error (EMFILE): here accept errors are
// retried with back-off, a connection past the descriptor budget is
// written refusal (a fatal error frame) and closed without reaching the
// loops, and at most maxEnrolling (16) accepted connections at a time wait to reach
// their loops, so the descriptors held can never outrun the count by more
// than 2 x maxEnrolling (gnet briefly duplicates each one), well inside the
// reserve of Budget. eng must use a load-balancing algorithm other than
// RoundRobin (gnet's rule for Engine.Register), and its event loops must be
// running: OnBoot comes before gnet makes them, OnTick (WithTicker) after.
// logf may be nil.
func Feed(ln net.Listener, eng gnet.Engine, l *Limiter, refusal []byte, logf func(string, ...any)) {
	// A connection reaches its loop only when the loop next runs its task
	// queue, after the I/O it is busy with: waiting for each in turn
	// before accepting the next let a busy server take one connection per
	// loop pass, and the listen queue overflow (connects timing out).
	// The window is waited for in order by one goroutine.
	enrolling := make(chan (<-chan gnet.RegisteredResult), maxEnrolling)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for res := range enrolling {
			if r := <-res; r.Err != nil && logf != nil {
				logf("handing a connection to the event loops", "err", r.Err)
			}
		}
	}()
	defer func() {
		close(enrolling)
		<-done
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if logf != nil && !Retry(err) {
				logf("accept", "err", err)
			}
			delay = Backoff(delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if l.InUse()+2*len(enrolling) >= l.Max() {
			l.refused.Add(1)
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(refusal)
			_ = c.Close()
			continue
		}
		res, err := eng.Register(gnet.NewNetConnContext(context.Background(), c))
		if err != nil {
			if logf != nil {
				logf("handing a connection to the event loops", "err", err)
			}
			_ = c.Close()
			continue
		}
		enrolling <- res
	}
}

// maxEnrolling is how many accepted connections Feed lets wait for their
// event loops at once.
const maxEnrolling = 16
