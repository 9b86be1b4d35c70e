// Package dashboard serves Central's live console: a web page showing the
// chat servers (liveness, load, draining), a heatmap of every client's RTT
// to every server, the rooms with their server, worst member RTT and best
// alternative, and a timeline of moves with their reasons and how long the
// bad state before each lasted.
//
// The page is static (HTML, CSS and plain JavaScript embedded in the
// binary; no build step). It reads /api/snapshot once and then follows
// /api/events, a server-sent event stream that pushes a new snapshot
// whenever Central's picture changes, so it updates without a reload.
//
// The dashboard listens on its own address: a loopback address, or a Unix
// socket ("unix:/path", which the Mininet scripts relay to the machine's
// loopback from Central's network namespace). Bound to any other address
// it requires an operator token and TLS: a browser gives the token once as
// ?token=..., gets it back as an HttpOnly cookie, and tools send it as
// "Authorization: Bearer <token>".
package dashboard

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"nearchat/central"
	"nearchat/pkg/connlimit"
	"nearchat/pkg/loopback"
)

//go:embed web
var web embed.FS

// Source is what the dashboard shows; *central.Central is one.
type Source interface {
	Snapshot() central.Snapshot
}

// Config configures a Server.
type Config struct {
	// Listen is the address to serve on (port 0 picks one), or
	// "unix:/path" for a Unix socket.
	Listen string
	// Token, when set, is required on every request. It must be set, and
	// TLS too, when Listen is not a loopback address.
	Token string
	// TLS, when set, serves https.
	TLS *tls.Config
	// Interval is how often the picture is checked for changes to push;
	// 0 means 250 ms.
	Interval time.Duration
	// Logger receives the dashboard's logs; nil discards them.
	Logger *slog.Logger
}

// maxConns bounds the connections the dashboard serves at once. Of them,
// at most maxStreams carry /api/events (maxStreamsPerSource from one
// address), so pages and snapshots always find a slot; a stream ends after
// streamLifetime (the page's EventSource opens the next one), and one whose
// reader stops taking its writes for streamWriteTimeout is cut. Before,
// 32 streams held every slot for good (abuse probe, 2026-12-01).
//
// At most maxConnsPerSource connections come from one address (a browser
// opens six at most), so connections that send nothing cannot keep
// everyone out: each holds its slot for headerTimeout at most. A request
// refused (401, 403, 503) closes its connection rather than keep it alive
// and holding a slot.
const (
	maxConns            = 32
	maxConnsPerSource   = 8
	maxStreams          = 16
	maxStreamsPerSource = 4
	streamLifetime      = 10 * time.Minute
	streamWriteTimeout  = 10 * time.Second
	headerTimeout       = 5 * time.Second
)

// Server is a running dashboard. Create it with New.
type Server struct {
	cfg  Config
	src  Source
	log  *slog.Logger
	ln   net.Listener
	http *http.Server

	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	mu      sync.Mutex
	streams map[string][]*stream // open /api/events streams by remote address, oldest first
	nstream int
	snap    central.Snapshot // the last one taken, shared by the live views
	snapAt  time.Time
}

// Loopback reports whether addr (host:port, or unix:path) can only be
// reached from this machine.
func Loopback(addr string) bool { return loopback.Addr(addr) }

// New validates cfg, binds the listener and starts serving src.
func New(cfg Config, src Source) (*Server, error) {
	if !Loopback(cfg.Listen) && (cfg.Token == "" || cfg.TLS == nil) {
		return nil, fmt.Errorf("dashboard: %s is not a loopback address: it needs an operator token and TLS", cfg.Listen)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	network, addr := "tcp", cfg.Listen
	if path, ok := strings.CutPrefix(cfg.Listen, "unix:"); ok {
		network, addr = "unix", path
		// A socket left by an earlier run of ours would refuse the bind.
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(path)
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard: listen on %s: %w", cfg.Listen, err)
	}
	// A few viewers at a time, so as not to eat into the descriptors
	// Central's ports share (see pkg/metricshttp); past maxConns the
	// oldest connection not serving a request (a live view is one) gives
	// way to a new one.
	ln = connlimit.Few(ln, maxConns, maxConnsPerSource)
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	s := &Server{cfg: cfg, src: src, log: log, ln: ln, streams: map[string][]*stream{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	static, _ := fs.Sub(web, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/snapshot", s.snapshot)
	mux.HandleFunc("GET /api/events", s.events)
	// No WriteTimeout: /api/events streams for as long as a page is open.
	s.http = &http.Server{Handler: s.auth(mux), ReadHeaderTimeout: headerTimeout, ReadTimeout: 10 * time.Second,
		IdleTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	connlimit.ServeNewcomers(s.http)
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dashboard stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr returns the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL returns the page's address (with the token, if any); for a Unix
// socket, "unix:" and its path.
func (s *Server) URL() string {
	if s.ln.Addr().Network() == "unix" {
		return "unix:" + s.Addr()
	}
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	u := scheme + "://" + s.Addr() + "/"
	if s.cfg.Token != "" {
		u += "?token=" + s.cfg.Token
	}
	return u
}

// Close stops serving and ends the event streams. Idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err = s.http.Shutdown(ctx)
	})
	return err
}

const cookieName = "nearchat_dashboard"

// auth lets a request through when no token is configured or it carries
// the token (header, cookie, or ?token= which also sets the cookie).
func (s *Server) auth(next http.Handler) http.Handler {
	want := []byte(s.cfg.Token)
	ok := func(got string) bool { return got != "" && subtle.ConstantTimeCompare([]byte(got), want) == 1 }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:")
		if s.cfg.Token == "" {
			// Without a token only loopback can reach us, but a web page
			// can too, through a name of its own that it points at
			// 127.0.0.1 once loaded (DNS rebinding): its requests name
			// that host, so only loopback names are served.
			if !loopback.Host(r.Host) {
				refuse(w, fmt.Sprintf("this dashboard answers requests for localhost or a loopback address, not %q", r.Host), http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query().Get("token"); ok(q) {
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: q, Path: "/", HttpOnly: true, Secure: s.cfg.TLS != nil, SameSite: http.SameSiteStrictMode})
			u := *r.URL
			u.RawQuery = ""
			http.Redirect(w, r, u.String(), http.StatusSeeOther)
			return
		}
		if h := r.Header.Get("Authorization"); len(h) > 7 && h[:7] == "Bearer " && ok(h[7:]) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(cookieName); err == nil && ok(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		refuse(w, "operator token required", http.StatusUnauthorized)
	})
}

// refuse answers a request with an error and closes its connection, so
// that refused requests do not keep slots (maxConns) alive.
func refuse(w http.ResponseWriter, msg string, code int) {
	w.Header().Set("Connection", "close")
	http.Error(w, msg, code)
}

func (s *Server) snapshot(w http.ResponseWriter, _ *http.Request) {
	b, err := json.Marshal(s.src.Snapshot())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// shared returns the source's snapshot, taken at most about once an
// Interval however many live views ask: each take walks Central's state
// under its lock.
func (s *Server) shared() central.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snapAt.IsZero() || time.Since(s.snapAt) >= s.cfg.Interval*3/4 {
		s.snap, s.snapAt = s.src.Snapshot(), time.Now()
	}
	return s.snap
}

// stream is one open /api/events view; end stops it early.
type stream struct {
	end context.CancelFunc
}

// openStream counts a new /api/events stream from src. src may hold
// maxStreamsPerSource. When all maxStreams are taken, the newest view of
// the address holding the most ends (its page comes back in 2 s, and is
// then refused or takes a share) if that address holds at least two more
// than src would: addresses share the views, so a few of them cannot keep
// the others out for a stream's whole lifetime (before, 4 addresses with
// 4 views each held every view for up to 10 minutes). A view is refused
// only while src holds its own limit or every address holds about as
// many as src.
func (s *Server) openStream(src string, end context.CancelFunc) (*stream, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := len(s.streams[src])
	if mine >= maxStreamsPerSource {
		return nil, false
	}
	if s.nstream >= maxStreams {
		var most string // the lowest address of those holding the most
		for a, l := range s.streams {
			if n := len(s.streams[most]); len(l) > n || len(l) == n && a < most {
				most = a
			}
		}
		l := s.streams[most]
		if len(l) < mine+2 {
			return nil, false
		}
		// Its newest view goes: the longest open are likeliest watched.
		newest := l[len(l)-1]
		newest.end()
		s.dropLocked(most, newest)
	}
	st := &stream{end: end}
	s.nstream++
	s.streams[src] = append(s.streams[src], st)
	return st, true
}

// closeStream uncounts st, unless it was ended to make room already.
func (s *Server) closeStream(src string, st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(src, st)
}

func (s *Server) dropLocked(src string, st *stream) {
	l := s.streams[src]
	for i, x := range l {
		if x == st {
			l = append(l[:i], l[i+1:]...)
			s.nstream--
			break
		}
	}
	if len(l) == 0 {
		delete(s.streams, src)
	} else {
		s.streams[src] = l
	}
}

// events streams a snapshot whenever the picture differs from the last one
// sent (the snapshot's own timestamp aside), and a comment every 15 s so
// proxies keep the stream open, for at most streamLifetime.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	src, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		src = r.RemoteAddr // a unix socket's peer
	}
	ctx, stop := context.WithCancel(r.Context())
	defer stop()
	st, ok := s.openStream(src, stop)
	if !ok {
		w.Header().Set("Retry-After", "5")
		refuse(w, fmt.Sprintf("too many live views open (at most %d, %d from one address)", maxStreams, maxStreamsPerSource), http.StatusServiceUnavailable)
		return
	}
	defer s.closeStream(src, st)
	rc := http.NewResponseController(w)
	// Each write must be taken within streamWriteTimeout.
	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// retry: the page's EventSource comes back 2 s after this stream ends.
	if err := write([]byte("retry: 2000\n\n")); err != nil {
		return
	}
	end := time.NewTimer(streamLifetime)
	defer end.Stop()
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	var last []byte
	quiet := time.Now()
	for {
		snap := s.shared()
		at := snap.At
		snap.At = time.Time{}
		b, err := json.Marshal(snap)
		if err != nil {
			return
		}
		if !bytes.Equal(b, last) {
			last = b
			snap.At = at
			b, _ = json.Marshal(snap)
			if err := write(fmt.Appendf(nil, "event: snapshot\ndata: %s\n\n", b)); err != nil {
				return
			}
			quiet = time.Now()
		} else if time.Since(quiet) > 15*time.Second {
			if err := write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
			quiet = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-end.C:
			return
		case <-t.C:
		}
	}
}
