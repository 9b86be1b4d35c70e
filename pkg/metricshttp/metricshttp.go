// Package metricshttp serves Prometheus metrics on an address of their
// own, apart from a program's API: Central and the chat servers bind it to
// loopback by default (-metrics 127.0.0.1:9090), so scraping is an
// operator's choice, not something the clients' ports expose.
package metricshttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"nearchat/pkg/connlimit"
	"nearchat/pkg/loopback"
)

// MaxConns bounds the connections the metrics port serves at once,
// MaxConnsPerSource those from one address.
const (
	MaxConns          = 16
	MaxConnsPerSource = 4
)

// readHeaderTimeout is how long a connection may take to send a
// request's headers: a scraper sends them at once, and a connection that
// sends nothing holds a slot no longer. A variable so tests can lengthen
// it.
var readHeaderTimeout = 3 * time.Second

// Server serves /metrics. Create it with Listen.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr and serves the collectors, with the Go runtime's and
// the process's own, on /metrics. Port 0 picks a free port.
func Listen(addr string, cs ...prometheus.Collector) (*Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// A scraper needs a connection or two. The port holds at most
	// MaxConns, MaxConnsPerSource from one address: its process's other
	// ports share a budget of descriptors (pkg/connlimit), and an
	// unbounded port here could exhaust it (an abuse probe made Central
	// exit with 19,978 idle connections to this port). Past either, the
	// oldest connection not serving a request gives way, so connections
	// that send nothing cannot keep a scraper out.
	var h http.Handler = mux
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		h = loopbackOnly(mux)
	}
	ln = connlimit.Few(ln, MaxConns, MaxConnsPerSource)
	s := &Server{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}}
	connlimit.ServeNewcomers(s.srv)
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = ln.Close()
		}
	}()
	return s, nil
}

// loopbackOnly serves only requests whose Host names localhost or a
// loopback address. Bound to loopback the port has no other guard, and a
// web page the operator's browser loads can reach it too by pointing a
// name of its own at 127.0.0.1 (DNS rebinding); its requests carry that
// name, so they are refused. Bound elsewhere, scrapers name the port
// however the operator set them up, and the handler is not used.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopback.Host(r.Host) {
			// Closing keeps refused requests from holding one of the
			// port's few slots.
			w.Header().Set("Connection", "close")
			http.Error(w, fmt.Sprintf("metrics on loopback answer requests for localhost or a loopback address, not %q", r.Host), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Addr returns the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops serving. Safe to call more than once.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
