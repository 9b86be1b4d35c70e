package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"nearchat/central"
	"nearchat/pkg/centralapi"
)

// cluster is Central (ours or someone else's) and the chat servers this run
// started.
type cluster struct {
	cfg    Config
	log    *slog.Logger
	logDir string

	rest, control string
	api           *centralapi.Client

	// Central in this process; nil when joining an existing one.
	cenCfg  central.Config
	cenMu   sync.Mutex
	cen     *central.Central
	cenDone chan struct{}

	mu      sync.Mutex
	servers map[string]*server // by ID
	nextID  int
	files   []*os.File // log files, closed last
}

// server is a chat server process slot: a name and an address that
// survive restarts.
type server struct {
	id, addr string
	cmd      *exec.Cmd     // nil while not running
	exited   chan struct{} // closed when cmd has been waited for
	starts   int
}

func newCluster(cfg Config, log *slog.Logger, logDir string) (*cluster, error) {
	c := &cluster{cfg: cfg, log: log, logDir: logDir, servers: map[string]*server{}}
	if cfg.Central != "" {
		c.rest, c.control = cfg.Central, cfg.Control
		c.api = centralapi.NewClient(c.rest, nil)
		return c, nil
	}
	cc := central.DefaultConfig()
	cc.RESTListen, cc.ControlListen = "127.0.0.1:0", "127.0.0.1:0"
	cc.MaxConnsPerSource = 0 // every synthetic member comes from loopback
	cc.HeartbeatInterval = cfg.Heartbeat
	cc.OfflineAfter = cfg.OfflineAfter
	cc.ScanInterval = time.Second
	cc.AssignRetry = 300 * time.Millisecond
	cc.AwaitingEvery = time.Second
	cc.RequestTimeout = 20 * time.Second
	cc.ClusterSecret = cfg.Secret
	cc.Policy.MinGain = cfg.MinGain
	cc.MaxMembers = max(cc.MaxMembers, cfg.Members)
	cc.Logger = c.fileLogger("central", slog.LevelInfo)
	c.cenCfg = cc
	if err := c.startCentral(); err != nil {
		return nil, err
	}
	return c, nil
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

// startCentral starts Central in this process; after the first start it
// binds the same ports again, retrying briefly while the old sockets go.
func (c *cluster) startCentral() error {
	var cen *central.Central
	var err error
	for try := 0; try < 50; try++ {
		cen, err = central.New(c.cenCfg)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("load: start Central: %w", err)
	}
	c.cenCfg.RESTListen, c.cenCfg.ControlListen = cen.RESTAddr(), cen.ControlAddr()
	c.rest, c.control = cen.RESTAddr(), cen.ControlAddr()
	if c.api == nil {
		c.api = centralapi.NewClient(c.rest, nil)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := cen.Run(context.Background()); err != nil {
			c.log.Warn("Central stopped", "err", err)
		}
	}()
	c.cenMu.Lock()
	c.cen, c.cenDone = cen, done
	c.cenMu.Unlock()
	return nil
}

func (c *cluster) stopCentral() {
	c.cenMu.Lock()
	cen, done := c.cen, c.cenDone
	c.cen = nil
	c.cenMu.Unlock()
	if cen != nil {
		_ = cen.Close()
		<-done
	}
}

// restartCentral closes Central and starts a new one on the same ports,
// then waits (bounded) until every running chat server has registered with
// it. It returns how long Central was not serving.
func (c *cluster) restartCentral(ctx context.Context) (time.Duration, error) {
	if c.cenCfg.RESTListen == "" {
		return 0, errors.New("load: Central is not ours to restart")
	}
	start := time.Now()
	c.stopCentral()
	if err := c.startCentral(); err != nil {
		return time.Since(start), err
	}
	down := time.Since(start)
	want := c.running()
	err := waitUntil(ctx, 10*time.Second, func() bool {
		up, err := c.upServers(ctx)
		if err != nil {
			return false
		}
		for _, id := range want {
			if !up[id] {
				return false
			}
		}
		return true
	})
	if err != nil {
		return down, fmt.Errorf("load: chat servers registering with the new Central: %w", err)
	}
	return down, nil
}

// upServers returns the servers Central lists as up.
func (c *cluster) upServers(ctx context.Context) (map[string]bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	list, err := c.api.Servers(cctx)
	if err != nil {
		return nil, err
	}
	up := make(map[string]bool, len(list))
	for _, s := range list {
		if s.Up {
			up[s.ID] = true
		}
	}
	return up, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// addServer starts a new chat server and waits until Central lists it.
func (c *cluster) addServer(ctx context.Context) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.nextID++
	s := &server{id: fmt.Sprintf("load%d", c.nextID), addr: addr}
	c.servers[s.id] = s
	c.mu.Unlock()
	return s.id, c.start(ctx, s)
}

// start runs s's process and waits until Central lists it as up.
func (c *cluster) start(ctx context.Context, s *server) error {
	bin := filepath.Join(c.cfg.Bin, "chatserver")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("load: %s not found (run make build, or set the bin directory): %w", bin, err)
	}
	logf, err := os.OpenFile(filepath.Join(c.logDir, s.id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-listen", s.addr, "-id", s.id, "-central", c.rest, "-secret", c.cfg.Secret,
		"-heartbeat", c.cfg.Heartbeat.String(), "-drain-timeout", "10s",
		"-max-conns-per-source", "0", // every synthetic member comes from loopback
		"-insecure") // the load's members have no tickets
	cmd.Stdout, cmd.Stderr = logf, logf
	// Our own process group, so a terminal's Ctrl-C reaches only us, and
	// death with us, so no server outlives a crashed run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("load: start %s: %w", s.id, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	c.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.starts++
	c.mu.Unlock()
	err = waitUntil(ctx, 10*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		up, err := c.upServers(ctx)
		return err == nil && up[s.id]
	})
	select {
	case <-exited:
		return fmt.Errorf("load: chat server %s exited at start (see %s.log)", s.id, s.id)
	default:
	}
	if err != nil {
		return fmt.Errorf("load: chat server %s registering: %w", s.id, err)
	}
	return nil
}

// running lists the IDs of the servers whose process runs.
func (c *cluster) running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id, s := range c.servers {
		if s.cmd != nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// victim picks the running server of ours that hosts the most rooms, so
// every kill or drain moves as many rooms as it can.
func (c *cluster) victim(ctx context.Context) (string, error) {
	ids := c.running()
	if len(ids) < 2 {
		return "", errors.New("fewer than two chat servers running")
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	list, err := c.api.Servers(cctx)
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

// signal sends sig to a running server and returns its exit channel.
func (c *cluster) signal(id string, sig syscall.Signal) (chan struct{}, error) {
	c.mu.Lock()
	s := c.servers[id]
	c.mu.Unlock()
	if s == nil || s.cmd == nil {
		return nil, fmt.Errorf("chat server %s is not running", id)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		return nil, err
	}
	return s.exited, nil
}

// kill SIGKILLs id, waits until Central has marked it down and moved its
// rooms away (bounded), and starts it again on the same address.
func (c *cluster) kill(ctx context.Context, id string, killed func()) error {
	exited, err := c.signal(id, syscall.SIGKILL)
	if err != nil {
		return err
	}
	killed()
	<-exited
	c.forget(id)
	// An empty newcomer under the same name, registered while Central
	// still places rooms on the name, would keep those rooms from ever
	// moving (see the package's repro tests), so the restart waits the
	// way an operator's supervisor would: until Central has given up on
	// the dead process.
	_ = waitUntil(ctx, c.cfg.OfflineAfter+15*time.Second, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		list, err := c.api.AllServers(cctx)
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
	exited, err := c.signal(id, syscall.SIGTERM)
	if err != nil {
		return err
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_, _ = c.signal(id, syscall.SIGKILL)
		<-exited
		c.forget(id)
		return fmt.Errorf("chat server %s did not exit within 20s of SIGTERM", id)
	}
	c.forget(id)
	return c.restart(ctx, id)
}

func (c *cluster) forget(id string) {
	c.mu.Lock()
	if s := c.servers[id]; s != nil {
		s.cmd = nil
	}
	c.mu.Unlock()
}

func (c *cluster) restart(ctx context.Context, id string) error {
	c.mu.Lock()
	s := c.servers[id]
	c.mu.Unlock()
	if ctx.Err() != nil {
		return nil
	}
	return c.start(ctx, s)
}

// close stops every server (SIGTERM, then SIGKILL after a grace) and
// Central.
func (c *cluster) close() {
	c.mu.Lock()
	var live []*server
	for _, s := range c.servers {
		if s.cmd != nil {
			live = append(live, s)
		}
	}
	c.mu.Unlock()
	for _, s := range live {
		// A second SIGTERM cuts the server's drain short: the run is over
		// and nobody needs the rooms moved.
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(5 * time.Second)
	for _, s := range live {
		select {
		case <-s.exited:
		case <-deadline:
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		c.forget(s.id)
	}
	c.stopCentral()
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
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("still waiting after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
