package chatserver

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

// BenchmarkFanoutTransport measures fan-out over plain TCP and over the TLS
// front, same server, same workload: one sender with 64 messages in flight,
// every other member counting what it receives. It reports delivered
// messages per second; compare the two transports from one run.
func BenchmarkFanoutTransport(b *testing.B) {
	ca, err := tlsconfig.WriteDev(b.TempDir(), nil, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	for _, transport := range []string{"plain", "tls"} {
		for _, members := range []int{16, 256} {
			b.Run(fmt.Sprintf("transport=%s/members=%d/size=64B", transport, members), func(b *testing.B) {
				var s *Server
				dialMember := func(user string) *peer {
					if transport == "plain" {
						p, _ := joinAs(b, s, "bench", user)
						return p
					}
					return tlsMember(b, s.Addr(), ca, "bench", user)
				}
				if transport == "plain" {
					s = startServer(b, nil)
				} else {
					s = startTLSServer(b, ca)
				}
				sender := dialMember("sender")
				var delivered atomic.Int64
				var wg sync.WaitGroup
				for i := 1; i < members; i++ {
					p := dialMember(fmt.Sprintf("m%d", i))
					wg.Add(1)
					go func() {
						defer wg.Done()
						countDelivers(p.Conn, &delivered)
					}()
				}
				text := strings.Repeat("x", 64)
				const window = 64
				var frame []byte
				acks := make(chan struct{}, window)
				go func() {
					for {
						m, err := sender.next(30 * time.Second)
						if err != nil {
							close(acks)
							return
						}
						if _, ok := m.(*proto.Ack); ok {
							acks <- struct{}{}
						}
					}
				}()
				time.Sleep(100 * time.Millisecond) // presence traffic settles
				inflight := 0
				b.ReportAllocs()
				start := time.Now()
				n := 0
				for b.Loop() {
					n++
					if inflight == window {
						if _, ok := <-acks; !ok {
							b.Fatal("sender connection ended")
						}
						inflight--
					}
					frame, _ = wire.AppendFrame(frame[:0], &proto.Chat{Num: uint64(n), At: time.Now().UnixNano(), Text: text})
					if _, err := sender.conn.Write(frame); err != nil {
						b.Fatal(err)
					}
					inflight++
				}
				want := int64(n) * int64(members-1)
				deadline := time.Now().Add(60 * time.Second)
				for delivered.Load() < want && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				el := time.Since(start)
				if got := delivered.Load(); got < want {
					b.Fatalf("delivered %d of %d", got, want)
				}
				b.ReportMetric(float64(want)/el.Seconds(), "msgs/s")
				s.Close()
				wg.Wait()
			})
		}
	}
}

// countDelivers counts Deliver frames until the connection ends.
func countDelivers(r io.Reader, n *atomic.Int64) {
	var fc frameCounter
	buf := make([]byte, 32<<10)
	for {
		k, err := r.Read(buf)
		before := fc.delivers
		fc.feed(buf[:k])
		n.Add(int64(fc.delivers - before))
		if err != nil {
			return // the server closed: the benchmark is over
		}
	}
}
