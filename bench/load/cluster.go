package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	proc "nearchat/bench/cluster"
)

// cluster is the run's policy over bench/cluster: Central (a process of
// ours, or someone else's) and the chat servers this run started, which
// chaos picks its victims from.
type cluster struct {
	*proc.Cluster
	cfg    Config
	log    *slog.Logger
	logDir string

	rest, control string

	mu     sync.Mutex
	nextID int
	files  []*os.File // log files, closed last
}

func newCluster(cfg Config, log *slog.Logger, logDir string) (*cluster, error) {
	opts := proc.Options{Bin: cfg.Bin, Dir: logDir, Secret: cfg.Secret, REST: cfg.Central, Control: cfg.Control}
	if cfg.Central == "" {
		opts.CentralArgs = []string{"-heartbeat", cfg.Heartbeat.String(), "-offline-after", cfg.OfflineAfter.String(),
			"-scan", "1s", "-assign-retry", "300ms", "-awaiting-every", "1s", "-request-timeout", "20s",
			"-min-gain", cfg.MinGain.String(), "-max-members", fmt.Sprint(max(16, cfg.Members)),
			"-max-conns-per-source", "0"} // every synthetic member comes from loopback
	}
	cl, err := proc.Start(context.Background(), opts)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return &cluster{Cluster: cl, cfg: cfg, log: log, logDir: logDir, rest: cl.REST, control: cl.Control}, nil
}

// fileLogger logs to name.log in the log directory.
func (c *cluster) fileLogger(name string, level slog.Level) *slog.Logger {
	f, err := os.OpenFile(filepath.Join(c.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.log.Warn("log file", "name", name, "err", err)
		return nil
	}
	c.mu.Lock()
	c.files = append(c.files, f)
	c.mu.Unlock()
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: level}))
}

// restartCentral stops Central (SIGTERM) and starts it again on the same
// ports, then waits (bounded) until every running chat server has
// registered with it. It returns how long after the signal the old
// Central had exited and the new one answered (Cluster.RestartCentral).
func (c *cluster) restartCentral(ctx context.Context) (stopped, down time.Duration, err error) {
	if c.Central() == nil {
		return 0, 0, errors.New("load: Central is not ours to restart")
	}
	return c.RestartCentral(ctx, syscall.SIGTERM)
}

// addServer starts a new chat server and waits until Central lists it.
func (c *cluster) addServer(ctx context.Context) (string, error) {
	c.mu.Lock()
	c.nextID++
	id := fmt.Sprintf("load%d", c.nextID)
	c.mu.Unlock()
	_, err := c.AddServer(ctx, proc.ServerOptions{ID: id,
		// Every synthetic member comes from loopback. The harness runs
		// plaintext servers -insecure: the load's members have no tickets.
		Args: []string{"-heartbeat", c.cfg.Heartbeat.String(), "-drain-timeout", "10s", "-max-conns-per-source", "0"}})
	if err != nil {
		return "", fmt.Errorf("load: %w", err)
	}
	return id, nil
}

// victim picks the running server of ours that hosts the most rooms, so
// every kill or drain moves as many rooms as it can.
func (c *cluster) victim(ctx context.Context) (string, error) {
	ids := c.Running()
	if len(ids) < 2 {
		return "", errors.New("fewer than two chat servers running")
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	list, err := c.API.Servers(cctx)
	if err != nil {
		return "", err
	}
	best, most := "", -1
	for _, s := range list {
		if slices.Contains(ids, s.ID) && s.Up && !s.Draining && s.Rooms > most {
			best, most = s.ID, s.Rooms
		}
	}
	if best == "" {
		return "", errors.New("no chat server of ours is up")
	}
	return best, nil
}

// kill SIGKILLs id, waits until Central has marked it down and moved its
// rooms away (bounded), and starts it again on the same address.
func (c *cluster) kill(ctx context.Context, id string, killed func()) error {
	s := c.Server(id)
	if s == nil || !s.Running() {
		return fmt.Errorf("chat server %s is not running", id)
	}
	ex := s.Exited()
	if err := s.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	killed()
	<-ex
	// An empty newcomer under the same name, registered while Central
	// still places rooms on the name, would keep those rooms from ever
	// moving (see the package's repro tests), so the restart waits the
	// way an operator's supervisor would: until Central has given up on
	// the dead process.
	_ = proc.WaitFor(ctx, c.cfg.OfflineAfter+15*time.Second, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		list, err := c.API.AllServers(cctx)
		if err != nil {
			return false
		}
		for _, s := range list {
			if s.ID == id {
				return !s.Up && s.Rooms == 0
			}
		}
		return true
	})
	return c.restart(ctx, id)
}

// drain SIGTERMs id: the server asks Central to move its rooms away and
// exits once empty (its -drain-timeout bounds the wait). Then it starts
// again.
func (c *cluster) drain(ctx context.Context, id string) error {
	if err := c.Drain(id, 20*time.Second); err != nil {
		return err
	}
	return c.restart(ctx, id)
}

func (c *cluster) restart(ctx context.Context, id string) error {
	if ctx.Err() != nil {
		return nil
	}
	return c.StartServer(ctx, id)
}

// close stops every server and Central.
func (c *cluster) close() {
	c.Close()
	c.mu.Lock()
	for _, f := range c.files {
		f.Close()
	}
	c.files = nil
	c.mu.Unlock()
}

// waitUntil polls cond every 50 ms until it holds, ctx ends or timeout
// passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	return proc.WaitFor(ctx, timeout, cond)
}
