package central

import (
	"container/heap"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nearchat/pkg/proto"
	"nearchat/pkg/selection"
)

// What Central records for operators: Prometheus metrics (Collector) and a
// read-only picture of its state with a bounded timeline of moves
// (Snapshot), which the dashboard renders. Recording happens under c.mu
// where the event happens and costs a counter increment; everything else is
// read when someone asks.

// movesKept bounds the timeline of moves Snapshot returns.
const movesKept = 256

// observer holds Central's metrics and its move timeline.
type observer struct {
	requests *prometheus.CounterVec // by final status
	moves    *prometheus.CounterVec // by reason label
	badFor   prometheus.Histogram   // a room's time on a bad server before its move
	scan     prometheus.Histogram
	reports  prometheus.Counter // latency vectors received
	rest     *prometheus.CounterVec

	// ring of the last movesKept moves, guarded by Central.mu.
	ring []Move
	next int
}

func newObserver() *observer {
	return &observer{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nearchat_central_chat_requests_total", Help: "Chat requests by final status.",
		}, []string{"outcome"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nearchat_central_moves_total", Help: "Room moves by reason.",
		}, []string{"reason"}),
		badFor: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nearchat_central_move_bad_state_seconds",
			Help:    "For moves away from a server that was down, draining or gone: time from Central's first sign of it (a member's Unreachable report, the first missed heartbeat, the drain) to the move.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}),
		scan: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nearchat_central_scan_duration_seconds", Help: "Duration of one relocation scan over every room.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nearchat_central_probe_reports_total", Help: "Latency vectors reported by clients.",
		}),
		rest: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nearchat_central_rest_requests_total", Help: "REST requests by route pattern and status code.",
		}, []string{"route", "code"}),
		ring: make([]Move, 0, movesKept),
	}
}

// moveReason maps a selection reason to a label with a bounded set of
// values.
func moveReason(reason string) string {
	switch {
	case reason == selection.ReasonCurrentDown:
		return "server_down"
	case reason == selection.ReasonCurrentDraining:
		return "server_draining"
	case reason == selection.ReasonCurrentUnknown:
		return "server_unknown"
	case reason == selection.ReasonCurrentUnmeasured:
		return "server_unmeasured"
	case reason == reasonRehome || reason == reasonRefused:
		return "server_full"
	case strings.HasPrefix(reason, "better server"):
		return "better_server"
	}
	return "other"
}

// Move is one relocation in the timeline.
type Move struct {
	At      time.Time     `json:"at"`
	Room    string        `json:"room"`
	From    string        `json:"from"`
	To      string        `json:"to"`
	Reason  string        `json:"reason"` // one of the moves_total labels
	Detail  string        `json:"detail"` // the policy's own words
	PrevRTT time.Duration `json:"prev_rtt"`
	RTT     time.Duration `json:"rtt"`
	// BadFor is how long the room sat on a server that was down, draining
	// or gone before this move; zero for moves to a better server.
	BadFor time.Duration `json:"bad_for"`
}

// noteMoveLocked records a move Central has just applied.
func (c *Central) noteMoveLocked(r *room, prev *serverRec, mv move, now time.Time) {
	rec := Move{At: now, Room: r.id, To: r.srv.rec.ID, Reason: moveReason(mv.reason), Detail: mv.reason, PrevRTT: mv.prevRTT, RTT: mv.rtt}
	if prev != nil {
		rec.From = prev.rec.ID
		if !prev.badAt.IsZero() {
			rec.BadFor = max(now.Sub(prev.badAt), 0)
			c.obs.badFor.Observe(rec.BadFor.Seconds())
		}
	}
	c.obs.moves.WithLabelValues(rec.Reason).Inc()
	o := c.obs
	if len(o.ring) < movesKept {
		o.ring = append(o.ring, rec)
	} else {
		o.ring[o.next] = rec
		o.next = (o.next + 1) % movesKept
	}
}

// noteServersLocked keeps each server's badAt: when Central first had a
// sign that it is down, draining or gone. For a server found down that is
// the earliest of a member's Unreachable report and its first missed
// heartbeat. syncSelLocked calls it on every change of the servers.
func (c *Central) noteServersLocked() {
	var now time.Time
	for _, s := range c.servers {
		if !s.rec.Down && !s.rec.Draining && !s.gone {
			s.badAt = time.Time{}
			if !s.probing {
				s.suspectAt = time.Time{}
			}
			continue
		}
		if !s.badAt.IsZero() {
			continue
		}
		if now.IsZero() {
			now = c.now()
		}
		at := now
		if s.rec.Down {
			if hb := s.rec.LastSeen.Add(c.cfg.HeartbeatInterval); hb.Before(at) {
				at = hb
			}
			if !s.suspectAt.IsZero() && s.suspectAt.Before(at) {
				at = s.suspectAt
			}
		}
		s.badAt = at
	}
}

// observeREST counts REST requests by the mux pattern that served them.
func (c *Central) observeREST(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern // set by the mux on the request it was given
		if route == "" {
			route = "unmatched"
		}
		c.obs.rest.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(p)
}

// Collector returns a Prometheus collector of Central's metrics: the
// counters and histograms above, and gauges read under the lock at scrape
// time. Register it once. Safe for concurrent use.
func (c *Central) Collector() prometheus.Collector { return centralCollector{c} }

type centralCollector struct{ c *Central }

var (
	dClients = prometheus.NewDesc("nearchat_central_clients", "Registered clients by state (online: with a control connection).", []string{"state"}, nil)
	dServers = prometheus.NewDesc("nearchat_central_servers", "Chat servers by state.", []string{"state"}, nil)
	dRooms   = prometheus.NewDesc("nearchat_central_rooms", "Rooms.", nil, nil)
	dPushes  = prometheus.NewDesc("nearchat_central_pending_pushes", "Assign pushes not yet acknowledged.", nil, nil)
	dPending = prometheus.NewDesc("nearchat_central_pending_requests", "Chat requests awaiting answers.", nil, nil)
	dRefused = prometheus.NewDesc("nearchat_central_connections_refused_total", "Connections (REST and control) refused for a connection limit.", nil, nil)
	dEvicted = prometheus.NewDesc("nearchat_central_connections_evicted_total", "Connections (REST and control) closed before showing who they are, to make room for a newer one at a connection limit.", nil, nil)
)

func (k centralCollector) own() []prometheus.Collector {
	o := k.c.obs
	return []prometheus.Collector{o.requests, o.moves, o.badFor, o.scan, o.reports, o.rest}
}

func (k centralCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dClients, dServers, dRooms, dPushes, dPending, dRefused, dEvicted} {
		ch <- d
	}
	for _, x := range k.own() {
		x.Describe(ch)
	}
}

func (k centralCollector) Collect(ch chan<- prometheus.Metric) {
	c := k.c
	c.mu.Lock()
	online, total := c.online, len(c.users)
	var up, down, draining int
	for _, s := range c.servers {
		switch {
		case s.gone:
		case s.rec.Down:
			down++
		case s.rec.Draining:
			draining++
		default:
			up++
		}
	}
	rooms, pushes, reqs := len(c.rooms), len(c.pushes), len(c.reqs)
	c.mu.Unlock()
	g := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	g(dClients, online, "online")
	g(dClients, total-online, "offline")
	g(dServers, up, "up")
	g(dServers, down, "down")
	g(dServers, draining, "draining")
	g(dRooms, rooms)
	g(dPushes, pushes)
	g(dPending, reqs)
	ch <- prometheus.MustNewConstMetric(dRefused, prometheus.CounterValue, float64(c.lim.Refused()))
	ch <- prometheus.MustNewConstMetric(dEvicted, prometheus.CounterValue, float64(c.lim.Evicted()))
	for _, x := range k.own() {
		x.Collect(ch)
	}
}

// Snapshot is a copy of Central's picture for display. It shares nothing
// with Central.
type Snapshot struct {
	At      time.Time        `json:"at"`
	Servers []ServerView     `json:"servers"`
	Clients []ClientView     `json:"clients"`
	Rooms   []RoomView       `json:"rooms"`
	Moves   []Move           `json:"moves"` // oldest first, at most the last 256
	Counts  map[string]int64 `json:"counts"`
}

// ServerView is one chat server as Central sees it.
type ServerView struct {
	ID       string    `json:"id"`
	Addr     string    `json:"addr"`
	Up       bool      `json:"up"`
	Draining bool      `json:"draining"`
	Rooms    int       `json:"rooms"` // rooms Central placed there
	Conns    int       `json:"conns"` // as last heartbeated
	MaxRooms int       `json:"max_rooms"`
	MaxConns int       `json:"max_conns"`
	LastSeen time.Time `json:"last_seen"`
	// AddrError says why Central's check of Addr failed (see
	// centralapi.ServerInfo), empty when it answered.
	AddrError string `json:"addr_error,omitempty"`
}

// ClientView is one registered client and its latest latency vector
// (median RTT per server ID).
type ClientView struct {
	Name   string                   `json:"name"`
	Online bool                     `json:"online"`
	RTT    map[string]time.Duration `json:"rtt"`
}

// RoomView is one room: its server, members, the worst member's RTT there,
// and the best other server with its worst RTT (empty when none is
// measured by every member).
type RoomView struct {
	ID       string        `json:"id"`
	Server   string        `json:"server"`
	Epoch    uint64        `json:"epoch"`
	Members  []string      `json:"members"`
	Worst    time.Duration `json:"worst"`
	Best     string        `json:"best"`
	BestRTT  time.Duration `json:"best_rtt"`
	LastMove time.Time     `json:"last_move"`
}

// snapshotRooms and snapshotClients bound the rooms and clients a
// Snapshot lists, so a display of a big cluster stays cheap; Counts has
// the true totals.
const (
	snapshotRooms   = 500
	snapshotClients = 500
)

// nameHeap holds users, the greatest name on top (container/heap).
type nameHeap []*user

func (h nameHeap) Len() int           { return len(h) }
func (h nameHeap) Less(i, j int) bool { return h[i].name > h[j].name }
func (h nameHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nameHeap) Push(x any)        { *h = append(*h, x.(*user)) }
func (h *nameHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Snapshot copies Central's picture under its lock. Safe for concurrent
// use; it costs a walk over the servers and the clients, and lists up to
// 500 clients and 500 rooms.
func (c *Central) Snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	snap := Snapshot{At: c.now(), Counts: map[string]int64{
		"clients": int64(len(c.users)), "online": int64(c.online), "rooms": int64(len(c.rooms)),
		"pushes": int64(len(c.pushes)), "requests": int64(len(c.reqs)),
	}}
	for _, s := range c.servers {
		if s.gone {
			continue
		}
		snap.Servers = append(snap.Servers, ServerView{ID: s.rec.ID, Addr: s.rec.Addr, Up: !s.rec.Down, Draining: s.rec.Draining,
			Rooms: s.assigned, Conns: s.rec.Conns, MaxRooms: s.rec.MaxRooms, MaxConns: s.rec.MaxConns, LastSeen: s.rec.LastSeen,
			AddrError: s.addrErr})
	}
	// The first snapshotClients by name: a heap of the smallest names
	// seen, its greatest on top. Anyone may register users, and a snapshot
	// of them all grew with each (414 KB at 5,831 users, marshalled under
	// the lock for every live view: abuse probe, 2026-12-01).
	var top nameHeap
	for _, u := range c.users {
		if u.placeholder() {
			continue
		}
		if top.Len() < snapshotClients {
			heap.Push(&top, u)
		} else if u.name < top[0].name {
			top[0] = u
			heap.Fix(&top, 0)
		}
	}
	for _, u := range top {
		v := ClientView{Name: u.name, Online: u.sess != nil, RTT: make(map[string]time.Duration, len(u.lat))}
		for id, smp := range u.lat {
			v.RTT[id] = smp.Median
		}
		snap.Clients = append(snap.Clients, v)
	}
	slices.SortFunc(snap.Clients, func(a, b ClientView) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range c.rooms[:min(len(c.rooms), snapshotRooms)] {
		v := RoomView{ID: r.id, Epoch: r.epoch, Members: r.memberNames(), LastMove: r.lastMove}
		if r.srv != nil {
			v.Server = r.srv.rec.ID
		}
		v.Worst, v.Best, v.BestRTT = c.roomRTTsLocked(r)
		snap.Rooms = append(snap.Rooms, v)
	}
	o := c.obs
	snap.Moves = make([]Move, 0, len(o.ring))
	snap.Moves = append(snap.Moves, o.ring[o.next:]...)
	snap.Moves = append(snap.Moves, o.ring[:o.next]...)
	return snap
}

// roomRTTsLocked returns the worst member RTT on r's server and the best
// other live server by worst member RTT, from the members' vectors.
func (c *Central) roomRTTsLocked(r *room) (worst time.Duration, best string, bestRTT time.Duration) {
	worstOn := func(id string) (time.Duration, bool) {
		var w time.Duration
		for _, u := range r.members {
			smp, ok := u.lat[id]
			if !ok {
				return 0, false
			}
			w = max(w, smp.Median)
		}
		return w, len(r.members) > 0
	}
	if r.srv != nil {
		worst, _ = worstOn(r.srv.rec.ID)
	}
	for _, s := range c.servers {
		if s.gone || s.rec.Down || s.rec.Draining || s == r.srv {
			continue
		}
		if w, ok := worstOn(s.rec.ID); ok && (best == "" || w < bestRTT) {
			best, bestRTT = s.rec.ID, w
		}
	}
	return worst, best, bestRTT
}

// countRequest counts a chat request that ended with code.
func (c *Central) countRequest(code proto.StatusCode) {
	c.obs.requests.WithLabelValues(strings.ToLower(code.String())).Inc()
}
