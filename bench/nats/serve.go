package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"nearchat/bench/baseline"
	"nearchat/chatserver"
	"nearchat/pkg/tlsconfig"
)

// Server kinds. A "-tls" suffix serves TLS 1.3 only.
const (
	kindNearchat = "nearchat"
	kindNATS     = "nats"
	kindBaseline = "baseline" // goroutine per connection, nearchat's protocol
)

// stopper is a running server.
type stopper interface{ Close() error }

type natsServer struct{ s *server.Server }

func (n natsServer) Close() error {
	n.s.Shutdown()
	n.s.WaitForShutdown()
	return nil
}

// nearchatConfig is the chat server's configuration in the benchmark.
func nearchatConfig() chatserver.Config {
	cfg := chatserver.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MaxConns = 30_000
	cfg.MaxConnsPerSource = 0 // every member dials from 127.0.0.1
	cfg.MaxMembers = 10_000
	cfg.MaxRooms = 30_000
	// The one sender of the one-room pattern is the whole load: the
	// per-member flood guard (1,000,000 a second by default) would be
	// what is measured, not the fan-out. nats-server has no such guard.
	cfg.SendRate, cfg.SendBurst = 1e9, 1_000_000
	// The receivers send nothing after their Join and every server of a
	// pattern runs through the others' rounds (inTurn), a minute and more
	// with -full: the idle cut-off (30 s by default; a real client pings)
	// would end them mid-run.
	cfg.IdleTimeout = 0
	return cfg
}

// startKind starts one server of kind on a free loopback port; certs are
// the development certificates for the TLS kinds.
func startKind(kind string, tlsOn bool, certs tlsconfig.Files) (stopper, string, error) {
	switch kind {
	case kindNearchat:
		cfg := nearchatConfig()
		if tlsOn {
			tc, err := tlsconfig.Server(certs.ServerCert, certs.ServerKey, "")
			if err != nil {
				return nil, "", err
			}
			cfg.Listen, cfg.TLS, cfg.TLSListen = "", tc, "127.0.0.1:0"
		}
		s, err := chatserver.New(cfg)
		if err != nil {
			return nil, "", err
		}
		return s, s.Addr(), nil
	case kindBaseline:
		if tlsOn {
			return nil, "", fmt.Errorf("the baseline serves no TLS")
		}
		cfg := baseline.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.MaxMembers = 10_000
		cfg.WriteTimeout = 0 // its fastest configuration
		s, err := baseline.New(cfg)
		if err != nil {
			return nil, "", err
		}
		go s.Run(context.Background())
		return s, s.Addr(), nil
	case kindNATS:
		opts := &server.Options{
			Host:    "127.0.0.1",
			Port:    -1,
			NoLog:   true,
			NoSigs:  true,
			MaxConn: 30_000,
		}
		if tlsOn {
			tc, err := tlsconfig.Server(certs.ServerCert, certs.ServerKey, "")
			if err != nil {
				return nil, "", err
			}
			opts.TLSConfig = tc
			opts.TLSTimeout = 10
			// Handshake first, like nearchat, so one client dials both.
			opts.TLSHandshakeFirst = true
		}
		s, err := server.NewServer(opts)
		if err != nil {
			return nil, "", err
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			return nil, "", fmt.Errorf("nats-server not ready in 10s")
		}
		return natsServer{s}, s.Addr().String(), nil
	}
	return nil, "", fmt.Errorf("unknown server kind %q", kind)
}

// serveChild is the child process: it starts the server, prints its
// address, answers each "gc" line on stdin with a GC and "ok", and stops
// at EOF. With profile set it writes a CPU profile of its whole life.
func serveChild(kind string, tlsOn bool, certDir, profile string) int {
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	s, addr, err := startKind(kind, tlsOn, tlsconfig.DevFiles(certDir))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ADDR %s\n", addr)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch cmd, arg, _ := strings.Cut(in.Text(), " "); cmd {
		case "gc":
			runtime.GC()
			debug.FreeOSMemory()
			fmt.Println("ok")
		case "heap":
			if f, err := os.Create(arg); err == nil {
				_ = pprof.WriteHeapProfile(f)
				f.Close()
			}
			fmt.Println("ok")
		}
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
