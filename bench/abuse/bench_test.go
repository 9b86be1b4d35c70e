package abuse

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/tlsconfig"
)

// BenchmarkIdleFlood sends 20,000 idle connection attempts at a chat
// server (plaintext, TLS) and at Central (REST, control port), each under
// its default descriptor limit here, while honest clients go on: on a chat
// server a room chats (on the plaintext port) and newcomers arrive on the
// flooded port every 100 ms (dial, TLS handshake if any, Hello, Welcome);
// on Central newcomers ask REST's /healthz and say Hello on the control
// port. It reports how many connections the target held and shed, its
// peak RSS, the RSS per held idle connection, the honest room's p99 and
// losses, and the newcomers' p99, worst wait and failures. One iteration
// is the whole flood.
//
//	go test -run '^$' -bench IdleFlood -benchtime 1x ./bench/abuse/
func BenchmarkIdleFlood(b *testing.B) {
	const attempts = 20_000
	ca, err := tlsconfig.WriteDev(b.TempDir(), nil, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	clientTLS, err := tlsconfig.Client(ca.CA, "", "")
	if err != nil {
		b.Fatal(err)
	}
	tlsDial := (&tlsconfig.Dialer{Config: clientTLS}).DialContext
	for _, tc := range []struct{ name, bin string }{
		{"target=chatserver/tls=false", "chatserver"},
		{"target=chatserver/tls=true", "chatserver"},
		{"target=central/port=rest", "central"},
		{"target=central/port=control", "central"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a1, _ := FreeAddr()
			a2, _ := FreeAddr()
			var args []string
			var flood, roomAddr string
			var arrivals []func(ctx context.Context) error
			switch tc.name {
			case "target=chatserver/tls=false":
				args = []string{"-listen", a1, "-insecure", "-hello-timeout", "2m", "-max-conns-per-source", "0"}
				flood, roomAddr = a1, a1
				arrivals = append(arrivals, func(ctx context.Context) error { return Greet(ctx, DialTCP, a1, "") })
			case "target=chatserver/tls=true":
				args = []string{"-listen", a2, "-plain-listen", a1, "-tls-cert", ca.ServerCert, "-tls-key", ca.ServerKey,
					"-insecure", "-hello-timeout", "2m", "-max-conns-per-source", "0"}
				flood, roomAddr = a2, a1
				arrivals = append(arrivals, func(ctx context.Context) error {
					return Greet(ctx, func(ctx context.Context, addr string) (net.Conn, error) { return tlsDial(ctx, "tcp", addr) }, a2, "")
				})
			default:
				args = []string{"-rest", a1, "-control", a2, "-max-conns-per-source", "0"}
				flood = a1
				if tc.name == "target=central/port=control" {
					flood = a2
				}
			}
			p := start(b, tc.bin, 0, args...)
			if err := WaitDial(a1, 10*time.Second); err != nil {
				b.Fatal(err)
			}
			if tc.bin == "central" {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				s, err := centralapi.NewClient(a1, nil).RegisterClient(ctx, "newcomer", "")
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				web := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
				arrivals = append(arrivals,
					func(ctx context.Context) error {
						req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+a1+"/healthz", nil)
						resp, err := web.Do(req)
						if err != nil {
							return err
						}
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							return fmt.Errorf("healthz: %s", resp.Status)
						}
						return nil
					},
					func(ctx context.Context) error { return Greet(ctx, DialTCP, a2, s.Token) })
			}
			var room *Room
			if roomAddr != "" {
				if room, err = StartRoom(roomAddr, "honest", 20*time.Millisecond); err != nil {
					b.Fatal(err)
				}
			}
			time.Sleep(500 * time.Millisecond) // let the baseline settle before measuring it
			base := p.RSS()
			var comers []*Newcomers
			for _, arrive := range arrivals {
				comers = append(comers, StartNewcomers(100*time.Millisecond, 15*time.Second, arrive))
			}
			for b.Loop() {
				start := time.Now()
				f := OpenShed(context.Background(), flood, attempts, 64, 20*time.Millisecond)
				took := time.Since(start)
				held := f.Alive()
				rss := p.RSS()
				b.ReportMetric(float64(f.Opened), "held")
				b.ReportMetric(float64(f.Refused+f.Failed), "shed")
				b.ReportMetric(float64(p.PeakRSS())/(1<<20), "peak-MiB")
				if held > 0 {
					b.ReportMetric(float64(rss-base)/float64(held), "B/idle-conn")
				}
				b.Logf("%s: %d attempts in %v: %d held (%d still open), %d refused, %d failed; alive %v; RSS %d KiB -> %d KiB, peak %d KiB",
					tc.name, attempts, took.Round(time.Millisecond), f.Opened, held, f.Refused, f.Failed, p.Alive(), base>>10, rss>>10, p.PeakRSS()>>10)
				f.Close()
				if !p.Alive() {
					b.Fatalf("%s died:\n%s", tc.bin, p.Log())
				}
			}
			for i, n := range comers {
				st := n.Stop()
				b.ReportMetric(float64(st.P99.Microseconds()), fmt.Sprintf("newcomer%d-p99-us", i))
				b.ReportMetric(float64(st.Max.Microseconds()), fmt.Sprintf("newcomer%d-max-us", i))
				b.ReportMetric(float64(st.Failed), fmt.Sprintf("newcomer%d-failed", i))
				b.Logf("newcomers %d: %v", i, st)
			}
			if room != nil {
				st := room.Stop(5 * time.Second)
				b.ReportMetric(float64(st.P99.Microseconds()), "room-p99-us")
				b.ReportMetric(float64(st.Lost), "room-lost")
				b.Logf("honest room: %v", st)
			}
		})
	}
}
