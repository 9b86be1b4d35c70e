package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// benchEnv switches on the slow comparison run (make bench).
const benchEnv = "NEARCHAT_BENCH"

// cell is one server's figures for one members×size workload.
type cell struct {
	res          Result
	allocsPerMsg float64
}

// runCells measures a room of members on a fresh server of kind, for about
// d per message size. A run that fails is returned as an error so the rest
// of the table can still be printed.
func runCells(t testing.TB, kind string, members int, d time.Duration) ([]cell, error) {
	t.Helper()
	tgt, err := StartServer(kind, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := tgt.Close(); err != nil {
			t.Errorf("close %s: %v", kind, err)
		}
	}()
	start := time.Now()
	s, err := Open(tgt.Addr(), Workload{Members: members})
	if err != nil {
		return nil, fmt.Errorf("%s members=%d: %w", kind, members, err)
	}
	defer s.Close()
	t.Logf("%s: %d members joined in %v", kind, members, time.Since(start).Round(time.Millisecond))
	var cells []cell
	for _, size := range benchSizes {
		if err := s.SetSize(size.bytes); err != nil {
			return nil, err
		}
		c, err := measureFor(s, d)
		if err != nil {
			return nil, fmt.Errorf("%s members=%d: %w", kind, members, err)
		}
		cells = append(cells, c)
	}
	return cells, nil
}

// measureFor warms s up, then sends for about d and waits for the last
// messages to arrive.
func measureFor(s *Session, d time.Duration) (cell, error) {
	for range 4 * cap(s.tokens) {
		if err := s.Send(); err != nil {
			return cell{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	if err := s.Drain(); err != nil {
		return cell{}, fmt.Errorf("warm-up: %w", err)
	}
	s.Reset()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	end := time.Now().Add(d)
	for i := 0; ; i++ {
		if i%64 == 0 && time.Now().After(end) {
			break
		}
		if err := s.Send(); err != nil {
			return cell{}, err
		}
	}
	if err := s.Drain(); err != nil {
		return cell{}, err
	}
	runtime.ReadMemStats(&after)
	r := s.Result()
	return cell{res: r, allocsPerMsg: float64(after.Mallocs-before.Mallocs) / float64(max(r.Messages, 1))}, nil
}

// TestCompareTable runs every BenchmarkBroadcast workload against both
// servers in one process and prints a markdown table of the figures side by
// side with their ratios, then the idle-memory table. It takes a few
// minutes, so it runs only with NEARCHAT_BENCH=1; NEARCHAT_BENCH_TIME sets
// the measuring time per cell (default 2s).
func TestCompareTable(t *testing.T) {
	if os.Getenv(benchEnv) == "" {
		t.Skipf("set %s=1 to run the server comparison", benchEnv)
	}
	d := 2 * time.Second
	if v := os.Getenv("NEARCHAT_BENCH_TIME"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("NEARCHAT_BENCH_TIME: %v", err)
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nBroadcast over loopback TCP, one sender, %d messages in flight, %v per cell; GOMAXPROCS=%d, %s/%s, %d CPUs.\n",
		64, d, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	fmt.Fprintf(&out, "Latency is send-to-receive at the receivers; ratios are gnet over baseline.\n\n")
	fmt.Fprintln(&out, "| members | size | gnet msgs/s | baseline msgs/s | msgs/s ratio | gnet p50 / p99 / p999 | baseline p50 / p99 / p999 | p99 ratio | allocs/msg gnet / baseline |")
	fmt.Fprintln(&out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range benchMembers {
		gs, gerr := runCells(t, Gnet, n, d)
		bs, berr := runCells(t, Baseline, n, d)
		for _, err := range []error{gerr, berr} {
			if err != nil {
				t.Error(err)
			}
		}
		for i, size := range benchSizes {
			if gerr != nil || berr != nil {
				fmt.Fprintf(&out, "| %d | %s | %s | %s | | | | | |\n", n, size.name, cellErr(gs, i, gerr), cellErr(bs, i, berr))
				continue
			}
			g, b := gs[i], bs[i]
			fmt.Fprintf(&out, "| %d | %s | %.0f | %.0f | %.2f× | %s | %s | %.2f | %.1f / %.1f |\n",
				n, size.name, g.res.MsgsPerSec(), b.res.MsgsPerSec(), g.res.MsgsPerSec()/b.res.MsgsPerSec(),
				lat(&g.res.Latency), lat(&b.res.Latency),
				float64(g.res.Latency.Quantile(0.99))/float64(b.res.Latency.Quantile(0.99)),
				g.allocsPerMsg, b.allocsPerMsg)
			t.Logf("members=%d size=%s: gnet %.0f msgs/s, baseline %.0f msgs/s", n, size.name, g.res.MsgsPerSec(), b.res.MsgsPerSec())
		}
	}
	fmt.Fprintf(&out, "\nResident memory per idle connection (%d connections after Hello/Welcome and Join, rooms of two; each server in its own process, VmRSS after a GC).\n\n", idleConns)
	fmt.Fprintln(&out, "| server | RSS before | RSS after | bytes/conn |")
	fmt.Fprintln(&out, "|---|---:|---:|---:|")
	for _, kind := range []string{Gnet, Baseline} {
		m := measureIdleMemory(t, kind, idleConns)
		fmt.Fprintf(&out, "| %s | %.1f MiB | %.1f MiB | %.0f |\n", kind, mib(m.Before), mib(m.After), m.BytesPerConn)
	}
	io.WriteString(os.Stdout, out.String())
	if p := os.Getenv("NEARCHAT_BENCH_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(out.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

const idleConns = 10_000

// TestIdleMemory measures resident memory per idle connection for each
// server on its own; NEARCHAT_BENCH=1 only.
func TestIdleMemory(t *testing.T) {
	if os.Getenv(benchEnv) == "" {
		t.Skipf("set %s=1 to measure idle memory", benchEnv)
	}
	for _, kind := range []string{Gnet, Baseline} {
		t.Run("server="+kind, func(t *testing.T) {
			m := measureIdleMemory(t, kind, idleConns)
			t.Logf("%s: %d conns, RSS %.1f -> %.1f MiB, %.0f bytes/conn (setup %v)",
				kind, m.Conns, mib(m.Before), mib(m.After), m.BytesPerConn, m.SetupDuration.Round(time.Millisecond))
		})
	}
}

// cellErr is a table entry for one server's figure, or "failed" when its
// run did.
func cellErr(cs []cell, i int, err error) string {
	if err != nil {
		return "failed (see log)"
	}
	return fmt.Sprintf("%.0f", cs[i].res.MsgsPerSec())
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func lat(h *Histogram) string {
	return fmt.Sprintf("%s / %s / %s", round(h.Quantile(0.5)), round(h.Quantile(0.99)), round(h.Quantile(0.999)))
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(100 * time.Nanosecond)
	}
}
