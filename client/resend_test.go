package client

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/chatserver"
	"nearchat/pkg/testkit"
)

// TestLongResendIsPaced: bob joins a room where alice has sent 6,000
// messages of 4 KB (24 MB, within her Window) and the server keeps no
// history, so he lacks them all and asks alice. His user takes no events
// for the first two seconds, so his client stops reading and the answer
// backs up: first in the kernel's socket buffers (up to 16 MiB here),
// then at the server, whose outbound limit is 256 KiB. Before, alice
// wrote her whole answer at once and the server cut bob off as a slow
// consumer; and bob, not reading, asked again every few hundred
// milliseconds, and alice answered again once her suppression window
// passed. Now the answer goes through alice's SendWindow and the server's
// held Acks, and bob does not ask again while he does not read: he stays
// on, gets every message exactly once and in order, and no Missed, and
// alice answers once. In "live", alice goes on sending at 300 msg/s
// throughout: her new messages wait behind the answer, so bob holds
// nothing past his MaxHeld (512) and gets no second Missed either.
// Production timers.
func TestLongResendIsPaced(t *testing.T) {
	for _, live := range []bool{false, true} {
		name := "idle"
		if live {
			name = "live"
		}
		t.Run(name, func(t *testing.T) {
			srv := startChatWith(t, "serv1", func(c *chatserver.Config) {
				c.MaxOutbound = 256 << 10
				c.History = 0
			})
			cfg := DefaultSessionConfig()
			cfg.Logger = testkit.LoggerAt(t, slog.LevelInfo)
			cfg.Window = 6000
			a := join(t, cfg, ref(srv), "room-resend", "alice")
			const n = 6000
			text := strings.Repeat("x", 4000)
			for range n {
				a.send(t, text)
			}
			testkit.WaitFor(t, 10*time.Second, "alice acked", func() bool { return a.s.Stats().Unacked == 0 })

			bcfg := cfg
			bcfg.EventBuffer = 16
			bcfg.MaxHeld = 512
			bcfg.Dialer = smallRcvBuf()
			release := make(chan struct{})
			released := false
			defer func() {
				if !released {
					close(release)
				}
			}()
			start := time.Now()
			bob := openReader(t, bcfg, ref(srv), "room-resend", "bob", func(i int) {
				if i == 1 {
					<-release // the user's stall
				}
			})
			check, broken, missed := bob.check, &bob.broken, &bob.missed

			var sent atomic.Int64
			sent.Store(n)
			stop := make(chan struct{})
			sending := make(chan error, 1)
			go func() {
				if !live {
					sending <- nil
					return
				}
				tick := time.NewTicker(time.Second / 300)
				defer tick.Stop()
				for range 900 { // 3 s at 300 msg/s
					select {
					case <-stop:
						sending <- nil
						return
					case <-tick.C:
					}
					if _, err := a.s.Send(text); err != nil {
						sending <- err
						return
					}
					sent.Add(1)
				}
				sending <- nil
			}()
			var stopOnce sync.Once
			stopSending := func() { stopOnce.Do(func() { close(stop); <-sending }) }
			defer stopSending()

			// The stall: 2 s in which bob reads nothing. Watch how much of
			// the answer alice writes meanwhile, and whether the server
			// keeps bob.
			stall := 2 * time.Second
			peak, cut := 0, false
			for time.Since(start) < stall {
				peak = max(peak, a.s.Stats().Resent)
				cut = cut || srv.Stats().Conns < 2
				time.Sleep(20 * time.Millisecond) // sampling pace, not a wait for a condition
			}
			close(release)
			released = true
			t.Logf("during bob's %v stall alice wrote %d resends for %d messages (%d KB); bob cut off: %v", stall, peak, n, peak*(len(text)+64)>>10, cut)

			// The live sender stops before the count, so that the total
			// bob is held to cannot grow between the wait and the check.
			stopSending()
			testkit.WaitFor(t, 60*time.Second, "bob has all of alice's messages or was told", func() bool {
				r := check.Report()
				return int64(check.Count("alice")+r.Told["alice"]) >= sent.Load() && a.s.Stats().Unacked == 0
			})
			took := time.Since(start)
			check.Expect("alice", uint64(sent.Load()))
			r := check.Report()
			st := a.s.Stats()
			t.Logf("bob recovered %d messages in %v (%.0f msg/s after the stall); bob %v; alice %+v", sent.Load(), took,
				float64(sent.Load())/(took-stall).Seconds(), r, st)
			if !r.OK() || missed.Load() != 0 || broken.Load() != 0 || cut {
				t.Errorf("bob: %v, missed events %d, broken %d, cut off %v", r, missed.Load(), broken.Load(), cut)
			}
			// Bob's one ask covers what alice had sent when he joined: n,
			// plus in "live" the first live messages if they went out
			// before his join. Answering it twice (the bug) is 2n.
			limit := n
			if live {
				limit = n + n/10
			}
			if st.Resent > limit {
				t.Errorf("alice resent %d messages for one ask of about %d", st.Resent, n)
			}
		})
	}
}
