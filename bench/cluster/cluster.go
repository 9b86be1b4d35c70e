package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/freeport"
	"nearchat/pkg/ticket"
	"nearchat/pkg/tlsconfig"
)

// Options configures a cluster. Bin and Dir are required.
type Options struct {
	// Bin is the directory holding central, chatserver and chat.
	Bin string
	// Dir receives every process's log, the bots' event logs and, with
	// TLS, the certificates.
	Dir string
	// TLS runs TLS 1.3 on every link with a throwaway CA and signed room
	// tickets; chat servers then authenticate by certificate. Without it
	// the links are plaintext and servers present Secret.
	TLS bool
	// Certs, with TLS, are existing development files (tlsconfig.WriteDev,
	// with ticket.key and ticket.pub beside them) instead of new ones.
	Certs *tlsconfig.Files
	// Secret is the cluster secret (plaintext mode); empty makes one up.
	Secret string
	// Tickets, in plaintext mode, has Central sign room tickets that the
	// chat servers check, as with TLS. Without it (and without TLS) the
	// chat servers run -insecure: anyone may join any room.
	Tickets bool
	// CentralArgs are extra flags for central (timings, policy).
	CentralArgs []string
	// REST and Control, when both set, are an existing Central's
	// addresses: the cluster then starts no Central of its own.
	REST, Control string
}

// Cluster is Central, chat servers and bots as child processes on
// loopback. Its methods are safe for concurrent use.
type Cluster struct {
	opts Options
	// REST and Control are Central's addresses (fixed across restarts).
	REST, Control string
	// API talks to Central's REST API.
	API *centralapi.Client

	certs      tlsconfig.Files
	tpriv, tpb string

	central *Proc // nil when the Central is someone else's
	Events  *Recorder

	mu      sync.Mutex
	servers map[string]*Server
	bots    map[string]*Bot
}

// Server is a chat server slot: an ID and a listen address that survive
// restarts.
type Server struct {
	*Proc
	ID        string
	Addr      string // where it listens
	Advertise string // what clients are told to dial (Addr unless proxied)
}

// ServerOptions describes a chat server to add.
type ServerOptions struct {
	ID string
	// Listen is the address to serve on; empty picks a free one.
	Listen string
	// Advertise is the address clients and Central's echo check dial
	// (a proxy in front of the server); empty means its own address.
	Advertise string
	// Central is the REST address the server reports to; empty means
	// the cluster's.
	Central string
	// Args are extra chatserver flags.
	Args []string
	// NoWait returns once the process runs instead of once Central lists
	// the server as up.
	NoWait bool
}

// FreeAddr is freeport.Addr: a loopback address whose port no :0
// listener or outgoing connection can take before its process binds it.
func FreeAddr() (string, error) { return freeport.Addr() }

// Start starts Central (unless opts names an existing one) and waits
// until its REST API answers.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Bin == "" || opts.Dir == "" {
		return nil, errors.New("cluster: Options.Bin and Options.Dir are required")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	if opts.Secret == "" && !opts.TLS {
		opts.Secret = fmt.Sprintf("cluster-%d", time.Now().UnixNano())
	}
	c := &Cluster{opts: opts, servers: map[string]*Server{}, bots: map[string]*Bot{}, Events: newRecorder()}
	if opts.TLS && opts.Certs != nil {
		c.certs = *opts.Certs
		c.tpriv, c.tpb = filepath.Join(c.certs.Dir, "ticket.key"), filepath.Join(c.certs.Dir, "ticket.pub")
	} else if opts.TLS {
		var err error
		if c.certs, err = tlsconfig.WriteDev(filepath.Join(opts.Dir, "certs"), nil, 24*time.Hour); err != nil {
			return nil, err
		}
		c.tpriv, c.tpb = filepath.Join(c.certs.Dir, "ticket.key"), filepath.Join(c.certs.Dir, "ticket.pub")
		if err := ticket.GenerateFiles(c.tpriv, c.tpb); err != nil {
			return nil, err
		}
	} else if opts.Tickets {
		keys := filepath.Join(opts.Dir, "keys")
		if err := os.MkdirAll(keys, 0o700); err != nil {
			return nil, err
		}
		c.tpriv, c.tpb = filepath.Join(keys, "ticket.key"), filepath.Join(keys, "ticket.pub")
		if err := ticket.GenerateFiles(c.tpriv, c.tpb); err != nil {
			return nil, err
		}
	}
	if opts.REST != "" && opts.Control != "" {
		c.REST, c.Control = opts.REST, opts.Control
		c.API = c.newAPI()
		return c, nil
	}
	var err error
	if c.REST, err = FreeAddr(); err != nil {
		return nil, err
	}
	if c.Control, err = FreeAddr(); err != nil {
		return nil, err
	}
	c.API = c.newAPI()
	args := []string{"-rest", c.REST, "-control", c.Control}
	if opts.TLS {
		args = append(args, "-tls-cert", c.certs.ServerCert, "-tls-key", c.certs.ServerKey,
			"-tls-client-ca", c.certs.CA, "-chat-ca", c.certs.CA, "-ticket-key", c.tpriv)
	} else {
		args = append(args, "-secret", opts.Secret)
		if opts.Tickets {
			args = append(args, "-ticket-key", c.tpriv)
		}
	}
	if c.central, err = newProc(opts.Bin, opts.Dir, "central", "central", append(args, opts.CentralArgs...)); err != nil {
		return nil, err
	}
	if err := c.startCentral(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// newAPI returns the operator's client for Central. With TLS it presents
// the cluster's client certificate, which is what lets it list rooms and
// drain servers: this Central has no cluster secret.
func (c *Cluster) newAPI() *centralapi.Client {
	if c.opts.TLS {
		tc, err := tlsconfig.Client(c.certs.CA, c.certs.ClientCert, c.certs.ClientKey)
		if err == nil {
			return centralapi.NewClientTLS(c.REST, tc)
		}
	}
	return centralapi.NewClient(c.REST, nil)
}

// Secret is the cluster secret servers present (plaintext mode).
func (c *Cluster) Secret() string { return c.opts.Secret }

// Dir is the log directory.
func (c *Cluster) Dir() string { return c.opts.Dir }

// TLS reports whether the links run TLS.
func (c *Cluster) TLS() bool { return c.opts.TLS }

// Central is Central's process, nil when the Central is someone else's.
func (c *Cluster) Central() *Proc { return c.central }

// startCentral starts Central and waits until its REST API answers. A
// restarted Central binds the same ports again; while the old sockets
// linger it exits at once, and it is started again.
func (c *Cluster) startCentral(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := c.central.start(); err != nil {
			return err
		}
		ex := c.central.Exited()
		err := WaitFor(ctx, 10*time.Second, func() bool {
			select {
			case <-ex:
				return true
			default:
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := c.API.Health(cctx)
			return err == nil
		})
		select {
		case <-ex:
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("cluster: central exited at start (%v); see %s", c.central.Err(), filepath.Join(c.opts.Dir, "central.log"))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			continue
		default:
		}
		if err != nil {
			return fmt.Errorf("cluster: central's REST API at %s: %w", c.REST, err)
		}
		return nil
	}
}

// StopCentral stops Central with sig (SIGKILL, or SIGTERM for a clean
// stop) and waits until it is gone.
func (c *Cluster) StopCentral(sig syscall.Signal) error {
	if c.central == nil {
		return errors.New("cluster: Central is not ours to stop")
	}
	return c.central.Stop(sig, 5*time.Second)
}

// StartCentral starts a stopped Central again on the same ports.
func (c *Cluster) StartCentral(ctx context.Context) error {
	if c.central == nil {
		return errors.New("cluster: Central is not ours to start")
	}
	return c.startCentral(ctx)
}

// RestartCentral stops Central with sig, starts it again on the same
// ports, and waits (bounded) until every running chat server has
// registered with it again. It returns how long after sig the old
// Central had exited (stopped) and the new one answered its REST API
// (down): under a reconnect storm on a loaded machine the second is
// mostly the new Central's queue, not its start.
func (c *Cluster) RestartCentral(ctx context.Context, sig syscall.Signal) (stopped, down time.Duration, err error) {
	start := time.Now()
	if err := c.StopCentral(sig); err != nil {
		return 0, 0, err
	}
	stopped = time.Since(start)
	if err := c.startCentral(ctx); err != nil {
		return stopped, time.Since(start), err
	}
	down = time.Since(start)
	want := c.Running()
	err = WaitFor(ctx, 15*time.Second, func() bool {
		up, err := c.UpServers(ctx)
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
		return stopped, down, fmt.Errorf("cluster: chat servers registering with the new Central: %w", err)
	}
	return stopped, down, nil
}

// UpServers returns the servers Central lists as up.
func (c *Cluster) UpServers(ctx context.Context) (map[string]bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	list, err := c.API.Servers(cctx)
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

// AddServer starts a new chat server and, unless o.NoWait, waits until
// Central lists it as up.
func (c *Cluster) AddServer(ctx context.Context, o ServerOptions) (*Server, error) {
	addr := o.Listen
	if addr == "" {
		var err error
		if addr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	if o.ID == "" {
		return nil, errors.New("cluster: a chat server needs an ID")
	}
	cen := o.Central
	if cen == "" {
		cen = c.REST
	}
	// The token file lets a restarted server take its id back at once:
	// Central gives a live id to nobody without its token.
	args := []string{"-listen", addr, "-id", o.ID, "-central", cen, "-token-file", filepath.Join(c.opts.Dir, o.ID+".token")}
	if o.Advertise != "" {
		args = append(args, "-advertise", o.Advertise)
	}
	if c.opts.TLS {
		// The client certificate stands for the cluster secret.
		args = append(args, "-tls-cert", c.certs.ServerCert, "-tls-key", c.certs.ServerKey, "-ca", c.certs.CA,
			"-client-cert", c.certs.ClientCert, "-client-key", c.certs.ClientKey, "-ticket-key", c.tpb)
	} else if c.opts.Tickets {
		args = append(args, "-secret", c.opts.Secret, "-ticket-key", c.tpb)
	} else {
		args = append(args, "-secret", c.opts.Secret, "-insecure") // no tickets to check
	}
	p, err := newProc(c.opts.Bin, c.opts.Dir, o.ID, "chatserver", append(args, o.Args...))
	if err != nil {
		return nil, err
	}
	s := &Server{Proc: p, ID: o.ID, Addr: addr, Advertise: o.Advertise}
	if s.Advertise == "" {
		s.Advertise = addr
	}
	c.mu.Lock()
	if c.servers[o.ID] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("cluster: chat server %s exists", o.ID)
	}
	c.servers[o.ID] = s
	c.mu.Unlock()
	return s, c.startServer(ctx, s, !o.NoWait)
}

// Server returns the chat server slot id, or nil.
func (c *Cluster) Server(id string) *Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[id]
}

// StartServer starts a stopped chat server again on its address and waits
// until Central lists it as up.
func (c *Cluster) StartServer(ctx context.Context, id string) error {
	s := c.Server(id)
	if s == nil {
		return fmt.Errorf("cluster: no chat server %s", id)
	}
	return c.startServer(ctx, s, true)
}

func (c *Cluster) startServer(ctx context.Context, s *Server, wait bool) error {
	if err := s.start(); err != nil {
		return err
	}
	if !wait {
		return nil
	}
	ex := s.Exited()
	err := WaitFor(ctx, 15*time.Second, func() bool {
		select {
		case <-ex:
			return true
		default:
		}
		up, err := c.UpServers(ctx)
		return err == nil && up[s.ID]
	})
	select {
	case <-ex:
		return fmt.Errorf("cluster: chat server %s exited at start (%v); see %s", s.ID, s.Err(), filepath.Join(c.opts.Dir, s.ID+".log"))
	default:
	}
	if err != nil {
		return fmt.Errorf("cluster: chat server %s registering with Central: %w", s.ID, err)
	}
	return nil
}

// Running lists the IDs of the chat servers whose process runs, sorted.
func (c *Cluster) Running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id, s := range c.servers {
		if s.Running() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Servers lists every chat server slot, sorted by ID.
func (c *Cluster) Servers() []*Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Server, 0, len(c.servers))
	for _, s := range c.servers {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Drain SIGTERMs chat server id: it asks Central to move its rooms away
// and exits once empty (its -drain-timeout bounds that). Drain waits up to
// grace for the exit, then SIGKILLs and reports it.
func (c *Cluster) Drain(id string, grace time.Duration) error {
	s := c.Server(id)
	if s == nil {
		return fmt.Errorf("cluster: no chat server %s", id)
	}
	return s.Stop(syscall.SIGTERM, grace)
}

// Close stops every bot, every chat server (a double SIGTERM cuts their
// drain short) and Central, killing whatever outlives a grace period.
func (c *Cluster) Close() {
	c.mu.Lock()
	var procs []*Proc
	for _, b := range c.bots {
		procs = append(procs, b.Proc)
	}
	for _, s := range c.servers {
		procs = append(procs, s.Proc)
	}
	c.mu.Unlock()
	stopAll(procs, 5*time.Second)
	if c.central != nil {
		_ = c.central.Stop(syscall.SIGTERM, 5*time.Second)
	}
}

func stopAll(procs []*Proc, grace time.Duration) {
	var exits []<-chan struct{}
	for _, p := range procs {
		if p.Running() {
			exits = append(exits, p.Exited())
			_ = p.Signal(syscall.SIGTERM)
			_ = p.Signal(syscall.SIGTERM)
		} else {
			exits = append(exits, nil)
		}
	}
	deadline := time.After(grace)
	for i, ex := range exits {
		if ex == nil {
			continue
		}
		select {
		case <-ex:
		case <-deadline:
			_ = procs[i].Kill()
		}
	}
}

// WaitFor polls cond every 50 ms until it holds, ctx ends or timeout
// passes.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
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
