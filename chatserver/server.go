package chatserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/connlimit"
	"nearchat/pkg/gnetlog"
	"nearchat/pkg/mono"
	"nearchat/pkg/proto"
	"nearchat/pkg/tlsconfig"
)

// Server is one chat server. Create it with New.
type Server struct {
	cfg Config
	log *slog.Logger

	sendEvery, sendSpan int64 // SendRate and SendBurst for sendBucket (sendPace)

	eng     gnet.Engine
	addr    string // where the event loops listen (TCP, or a Unix socket under TLS only)
	tlsLn   net.Listener
	front   *tlsFront
	sockDir string     // private directory of the loops' Unix socket, if any
	booted  chan error // receives the outcome of binding
	// loopsUp is closed once the event loops run (the first OnTick); the
	// plaintext feed and the TLS front enrol connections only after it.
	loopsUp     chan struct{}
	loopsUpOnce sync.Once
	exited      chan struct{} // closed when gnet.Run returns
	runErr      error         // gnet.Run's result, read after exited

	closing   atomic.Bool
	stopReap  chan struct{}
	stopAgent context.CancelFunc
	agentDone chan struct{}
	refused   chan error // Central's refusal of the first registration, once
	drainReq  chan struct{}
	centralOK atomic.Bool
	token     atomic.Pointer[string] // this server's token from Central
	revoked   revocations            // tickets Central withdrew (revoke.go)
	slowCuts  slowCuts               // members cut off as slow lately (flow.go)
	closeOnce sync.Once
	closeErr  error

	conns          atomic.Int64
	now            atomic.Int64 // mono.Now(), kept current by flowLoop for cheap timestamps
	outBytes       atomic.Int64 // members' unsent and held bytes, as last seen (member.outb)
	histFrames     atomic.Int64 // held by the rooms' history rings, when Config.Metrics is on
	histBytes      atomic.Int64 // held by the rooms' history rings, always counted (HistoryBudget)
	resendsDropped atomic.Uint64

	plainLn net.Listener       // plaintext TCP, fed to the loops by connlimit.Feed
	fed     chan struct{}      // closed when the feeding ends
	lim     *connlimit.Limiter // descriptors held by connections, TLS front included
	port    *connlimit.Port
	guardMu sync.Mutex // guards guards; each set is its loop's
	guards  map[gnet.EventLoop]*guardSet

	// Lock order: s.mu before r.mu (a room's) before l.mu (a fan-out
	// loop's). loopsMu is never held with s.mu or r.mu; under it only l.mu
	// is taken. l.mu is a leaf: nothing is locked while it is held.
	mu    sync.Mutex // guards rooms
	rooms map[string]*room

	loopsMu sync.Mutex // guards loops
	loops   map[gnet.EventLoop]*loop
}

// New validates cfg, binds the listener and starts the event loops. The
// server serves from the moment New returns; Run waits for it to end.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		booted:   make(chan error, 1),
		loopsUp:  make(chan struct{}),
		stopReap: make(chan struct{}),
		drainReq: make(chan struct{}, 1),
		exited:   make(chan struct{}),
		refused:  make(chan error, 1),
		rooms:    make(map[string]*room),
		loops:    make(map[gnet.EventLoop]*loop),
		guards:   make(map[gnet.EventLoop]*guardSet),
	}
	s.sendEvery, s.sendSpan = sendPace(cfg.SendRate, cfg.SendBurst)
	budget, _, err := connlimit.Budget()
	if err != nil {
		return nil, fmt.Errorf("chatserver: %w", err)
	}
	s.lim = connlimit.New(budget)
	// The port's cap stays below the budget, which is a hard limit, so
	// that a full server makes room for a newcomer by evicting the oldest
	// connection that has not said Hello (guard.go) instead of refusing
	// it; the margin covers connections being handed to the loops and
	// evicted ones not yet closed.
	s.port = s.lim.Port(cfg.MaxConnsPerSource).Capped(min(cfg.MaxConns, budget-connlimit.EvictionMargin(budget)))
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(cfg.Loops),
		gnet.WithReuseAddr(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetlog.New(log)),
		// Connections reach the loops through Engine.Register (see
		// connlimit.Feed), which RoundRobin does not allow.
		gnet.WithLoadBalancing(gnet.LeastConnections),
		// The first OnTick says the loops exist, so connections may be
		// enrolled (OnBoot comes before gnet makes them).
		gnet.WithTicker(true),
	}
	// gnet never accepts from the network: its own accept loop ends the
	// engine on EMFILE. It listens on a private Unix socket in a directory
	// that nobody dials (gnet needs a listener); connlimit.Feed accepts
	// plaintext TCP and the TLS front TLS, and both enrol what they accept
	// on the loops.
	network, listen, sockDir, err := tlsconfig.Backend("")
	if err != nil {
		return nil, fmt.Errorf("chatserver: %w", err)
	}
	s.sockDir = sockDir
	var plainLn, tlsLn net.Listener
	if cfg.Listen != "" {
		if plainLn, err = net.Listen("tcp", cfg.Listen); err != nil {
			os.RemoveAll(sockDir)
			return nil, fmt.Errorf("chatserver: listen on %s: %w", cfg.Listen, err)
		}
		s.addr = plainLn.Addr().String()
	} else {
		s.addr = listen
	}
	// The listeners bind first, so a port can name the server before the
	// event loops start reading the name.
	if cfg.TLS != nil {
		if tlsLn, err = net.Listen("tcp", cfg.TLSListen); err != nil {
			if plainLn != nil {
				plainLn.Close()
			}
			os.RemoveAll(sockDir)
			return nil, fmt.Errorf("chatserver: TLS listen on %s: %w", cfg.TLSListen, err)
		}
		s.tlsLn = tlsLn
	}
	if s.cfg.ID == "" {
		named := plainLn
		if tlsLn != nil {
			named = tlsLn
		}
		_, port, _ := net.SplitHostPort(named.Addr().String())
		s.cfg.ID = "chat-" + port
	}
	fail := func(err error) (*Server, error) {
		if tlsLn != nil {
			tlsLn.Close()
		}
		if plainLn != nil {
			plainLn.Close()
		}
		if sockDir != "" {
			os.RemoveAll(sockDir)
		}
		return nil, err
	}
	go func() {
		s.runErr = gnet.Run(&engine{s: s}, network+"://"+listen, opts...)
		close(s.exited)
	}()
	select {
	case err := <-s.booted:
		if err != nil {
			_ = s.eng.Stop(context.Background())
			<-s.exited
			return fail(err)
		}
	case <-s.exited:
		return fail(fmt.Errorf("chatserver: listen on %s: %w", listen, s.runErr))
	}
	select {
	case <-s.loopsUp:
	case <-s.exited:
		return fail(fmt.Errorf("chatserver: event loops did not start: %w", s.runErr))
	}
	s.now.Store(mono.Now()) // before the first connection stamps lastRead
	if tlsLn != nil {
		s.front = newTLSFront(s, tlsLn)
	}
	if plainLn != nil {
		s.plainLn = plainLn
		s.fed = make(chan struct{})
		full := errorFrame(proto.CodeServerFull, "server has too many connections; try again later")
		go func() {
			defer close(s.fed)
			connlimit.Feed(plainLn, s.eng, s.lim, full, s.log.Warn)
		}()
	}
	go s.flowLoop()
	s.startAgent()
	s.log.Info("chat server listening", "addr", s.Addr(), "plain", s.addr, "tls", s.front != nil, "loops", s.numLoops(), "id", s.cfg.ID)
	return s, nil
}

// numLoops is the number of event loops gnet runs: Config.Loops, or one
// per CPU this process may use.
func (s *Server) numLoops() int {
	if s.cfg.Loops > 0 {
		return s.cfg.Loops
	}
	return runtime.NumCPU()
}

// Addr returns the address clients dial: the TLS address when TLS is on,
// the plaintext one otherwise. Safe for concurrent use.
func (s *Server) Addr() string {
	if s.tlsLn != nil {
		return s.tlsLn.Addr().String()
	}
	return s.addr
}

// PlainAddr returns where the event loops listen: the plaintext TCP
// address, or a Unix socket path when only TLS is served. Safe for
// concurrent use.
func (s *Server) PlainAddr() string { return s.addr }

// Advertised returns the address announced to Central for clients to dial.
// Safe for concurrent use.
func (s *Server) Advertised() string {
	if s.cfg.Advertise != "" {
		return s.cfg.Advertise
	}
	return s.Addr()
}

// ID returns the server's name. Safe for concurrent use.
func (s *Server) ID() string { return s.cfg.ID }

// Run blocks until ctx ends (then closes the server) or the event loops stop
// for another reason. It returns nil after a clean shutdown. Safe to call
// once.
func (s *Server) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return s.Close()
	case err := <-s.refused:
		s.Close()
		return err
	case <-s.exited:
		if s.closing.Load() {
			return nil
		}
		if s.runErr == nil {
			return errors.New("chatserver: event loops stopped")
		}
		return fmt.Errorf("chatserver: event loops stopped: %w", s.runErr)
	}
}

// Close says goodbye to every member (Error shutdown), gives those frames
// up to ShutdownGrace to leave, and stops the event loops. It is idempotent
// and safe for concurrent use.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.log.Info("chat server shutting down", "id", s.cfg.ID)
		if s.stopAgent != nil {
			s.stopAgent()
			<-s.agentDone
			s.deregister()
		}
		if s.front != nil {
			s.front.stopAccepting() // current TLS members still get their goodbye
		}
		if s.plainLn != nil {
			s.plainLn.Close()
			<-s.fed
		}
		bye := s.goodbye()
		deadline := time.Now().Add(s.cfg.ShutdownGrace)
		for !bye() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		close(s.stopReap)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.eng.Stop(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = fmt.Errorf("chatserver: stop: %w", err)
		}
		<-s.exited
		if s.sockDir != "" {
			_ = os.RemoveAll(s.sockDir)
		}
	})
	return s.closeErr
}

// Stats is a snapshot of the server's load.
type Stats struct {
	Conns int
	Rooms int
	// ResendsDropped counts Resend asks over a member's ResendRate, and
	// Missed frames that answered no ask (onMissed).
	ResendsDropped uint64
}

// Stats reports the current load. Safe for concurrent use.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.rooms)
	s.mu.Unlock()
	return Stats{Conns: int(s.conns.Load()), Rooms: n, ResendsDropped: s.resendsDropped.Load()}
}

// RoomInfo describes one hosted room.
type RoomInfo struct {
	ID      string
	Epoch   uint64
	Seq     uint64
	Members []string
	Proof   []byte // the ticket of a member that joined at Epoch, if any (RoomReport.Ticket)
}

// Rooms lists the rooms this server hosts. Safe for concurrent use.
func (s *Server) Rooms() []RoomInfo {
	s.mu.Lock()
	rs := make([]*room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rs = append(rs, r)
	}
	s.mu.Unlock()
	out := make([]RoomInfo, 0, len(rs))
	for _, r := range rs {
		r.mu.Lock()
		info := RoomInfo{ID: r.id, Epoch: r.epoch, Seq: r.seq, Proof: r.proof, Members: make([]string, 0, len(r.members))}
		for u := range r.members {
			info.Members = append(info.Members, u)
		}
		closed := r.closed
		r.mu.Unlock()
		if !closed {
			out = append(out, info)
		}
	}
	return out
}
