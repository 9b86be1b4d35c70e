package abuse

import (
	"context"
	"testing"
	"time"

	"nearchat/pkg/tlsconfig"
)

// BenchmarkIdleFlood sends 20,000 idle connection attempts at a chat
// server (plaintext, TLS) and at Central (REST, control port), each under
// its default descriptor limit here, while an honest room chats on the
// chat server. It reports how many connections the target held and shed,
// its peak RSS, the RSS per held idle connection, and the honest room's
// p99 and losses. One iteration is the whole flood.
//
//	go test -run '^$' -bench IdleFlood -benchtime 1x ./bench/abuse/
func BenchmarkIdleFlood(b *testing.B) {
	const attempts = 20_000
	ca, err := tlsconfig.WriteDev(b.TempDir(), nil, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
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
			switch tc.name {
			case "target=chatserver/tls=false":
				args = []string{"-listen", a1, "-insecure", "-hello-timeout", "2m", "-max-conns-per-source", "0"}
				flood, roomAddr = a1, a1
			case "target=chatserver/tls=true":
				args = []string{"-listen", a2, "-plain-listen", a1, "-tls-cert", ca.ServerCert, "-tls-key", ca.ServerKey,
					"-insecure", "-hello-timeout", "2m", "-max-conns-per-source", "0"}
				flood, roomAddr = a2, a1
			case "target=central/port=rest":
				args = []string{"-rest", a1, "-control", a2, "-max-conns-per-source", "0"}
				flood = a1
			default:
				args = []string{"-rest", a1, "-control", a2, "-max-conns-per-source", "0"}
				flood = a2
			}
			p := start(b, tc.bin, 0, args...)
			if err := WaitDial(a1, 10*time.Second); err != nil {
				b.Fatal(err)
			}
			var room *Room
			if roomAddr != "" {
				if room, err = StartRoom(roomAddr, "honest", 20*time.Millisecond); err != nil {
					b.Fatal(err)
				}
			}
			time.Sleep(500 * time.Millisecond) // let the baseline settle before measuring it
			base := p.RSS()
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
			if room != nil {
				st := room.Stop(5 * time.Second)
				b.ReportMetric(float64(st.P99.Microseconds()), "room-p99-us")
				b.ReportMetric(float64(st.Lost), "room-lost")
				b.Logf("honest room: %v", st)
			}
		})
	}
}
