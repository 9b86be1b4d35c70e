package central

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/proto"
	"nearchat/pkg/selection"
)

// user is a registered client, or a placeholder for a room member that
// Central learnt from a heartbeat before the client itself came back.
type user struct {
	name  string
	token string // empty for a placeholder
	lat   map[string]selection.Sample
	reg   time.Time

	// latGen changes whenever lat does; dense is lat laid out in server
	// order, valid while denseLayout and denseGen match.
	latGen      uint64
	dense       []time.Duration
	denseLayout uint64
	denseGen    uint64

	rooms        map[*room]struct{}
	reqs         map[*request]struct{}
	pushes       map[string]*push // by room id
	sess         *conn            // live control connection, nil when offline
	offlineSince time.Time
	reqLimit     bucket // chat requests this user may still make
}

func (u *user) placeholder() bool { return u.token == "" }

func (u *user) record() store.User {
	return store.User{Name: u.name, Token: u.token, Latency: u.lat, Registered: u.reg}
}

// srv is a chat server slot. Slots keep their index (their position in
// every latency matrix) until a compaction changes the layout.
type srv struct {
	rec      store.Server
	idx      int // -1 once compacted away
	gone     bool
	probing  bool
	assigned int // rooms Central placed here
	// suspectAt is when a member first reported the server unreachable,
	// badAt when Central first had a sign it is down, draining or gone
	// (see noteServersLocked); zero while it is fine.
	suspectAt, badAt time.Time
	// reporters said the server was unreachable while its echo check ran;
	// if it answers, each gets its room's placement again, so a member
	// whose connection broke (the server may have restarted and lost the
	// room) joins afresh instead of waiting forever.
	reporters []reporter
}

type reporter struct {
	u *user
	r *room
}

// full reports whether the server takes no new room.
func (s *srv) full() bool {
	rooms := max(s.rec.Rooms, s.assigned)
	return (s.rec.MaxRooms > 0 && rooms >= s.rec.MaxRooms) || (s.rec.MaxConns > 0 && s.rec.Conns >= s.rec.MaxConns)
}

// room is a conversation. m is its latency matrix over c.servers, valid
// while mFresh holds and mLayout matches c.layout. A member's new vector or
// a change of members clears mFresh, so the scan checks one flag per room
// instead of visiting every member.
type room struct {
	id       string
	srv      *srv
	epoch    uint64
	members  []*user
	created  time.Time
	lastMove time.Time
	adopted  bool
	pos      int // index in c.rooms

	m       selection.Matrix
	mLayout uint64
	mFresh  bool
}

func (r *room) cur() int {
	if r.srv == nil || r.srv.gone {
		return -1
	}
	return r.srv.idx
}

func (r *room) memberNames() []string {
	out := make([]string, len(r.members))
	for i, u := range r.members {
		out[i] = u.name
	}
	return out
}

func (r *room) hasMember(u *user) bool { return slices.Contains(r.members, u) }

func (r *room) record() store.Room {
	rec := store.Room{ID: r.id, Epoch: r.epoch, Members: r.memberNames(), Created: r.created, LastMove: r.lastMove, Adopted: r.adopted}
	if r.srv != nil {
		rec.Server = r.srv.rec.ID
	}
	return rec
}

func randomID(prefix string, n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// storeErr logs a failed store write; the in-memory picture stays the
// truth for this process, so serving goes on.
func (c *Central) storeErr(what string, err error) {
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Error("store write failed", "op", what, "err", err)
	}
}

// load fills the picture from the records already in the store.
func (c *Central) load() error {
	now := c.now()
	servers, err := c.st.Servers()
	if err != nil {
		return err
	}
	for _, rec := range servers {
		rec.LastSeen = now // a fresh OfflineAfter window to heartbeat in
		c.addServerLocked(rec)
	}
	users, err := c.st.Users()
	if err != nil {
		return err
	}
	for _, rec := range users {
		u := c.newUserLocked(rec.Name, rec.Token, now)
		u.lat, u.reg = rec.Latency, rec.Registered
	}
	rooms, err := c.st.Rooms()
	if err != nil {
		return err
	}
	for _, rec := range rooms {
		r := &room{id: rec.ID, srv: c.srvByID[rec.Server], epoch: rec.Epoch, created: rec.Created, lastMove: rec.LastMove, adopted: rec.Adopted}
		for _, name := range rec.Members {
			r.members = append(r.members, c.userOrPlaceholderLocked(name, now))
		}
		c.insertRoomLocked(r)
	}
	c.syncSelLocked()
	return nil
}

func (c *Central) newUserLocked(name, token string, now time.Time) *user {
	c.latGen++
	u := &user{name: name, token: token, reg: now, latGen: c.latGen, offlineSince: now,
		rooms: map[*room]struct{}{}, reqs: map[*request]struct{}{}, pushes: map[string]*push{}}
	c.users[name] = u
	if token != "" {
		c.tokens[token] = u
	}
	c.dirty[u] = struct{}{}
	return u
}

func (c *Central) userOrPlaceholderLocked(name string, now time.Time) *user {
	if u := c.users[name]; u != nil {
		return u
	}
	return c.newUserLocked(name, "", now)
}

// dropUserLocked forgets u entirely: rooms, requests, pushes, session.
func (c *Central) dropUserLocked(u *user, why string) {
	for r := range u.rooms {
		c.removeMemberLocked(r, u)
	}
	for q := range u.reqs {
		c.finishLocked(q, proto.UserNotFound, fmt.Sprintf("user %s %s", u.name, why), "")
	}
	if u.sess != nil {
		c.fatalLocked(u.sess, proto.CodeUnauthorized, "session ended: "+why)
		u.sess.user = nil
		u.sess = nil
		c.online--
	}
	delete(c.users, u.name)
	if u.token != "" {
		delete(c.tokens, u.token)
	}
	delete(c.dirty, u)
	c.storeErr("delete user", c.st.DeleteUser(u.name))
}

// setLatencyLocked replaces u's vector and re-evaluates u's rooms at once,
// so a client that just measured a new server does not wait for the scan.
func (c *Central) setLatencyLocked(u *user, lat map[string]selection.Sample) {
	c.obs.reports.Inc()
	u.lat = lat
	c.latGen++
	u.latGen = c.latGen
	c.dirty[u] = struct{}{}
	for r := range u.rooms {
		r.mFresh = false
	}
	c.storeErr("put user", c.st.PutUser(u.record()))
	if len(u.rooms) == 0 {
		return
	}
	c.syncSelLocked()
	c.refreshDirtyLocked()
	now := c.now()
	for r := range u.rooms {
		c.evaluateLocked(r, now, c.rnd)
	}
}

// addServerLocked creates a slot for a new server ID.
func (c *Central) addServerLocked(rec store.Server) *srv {
	s := &srv{rec: rec, idx: len(c.servers)}
	c.servers = append(c.servers, s)
	c.srvByID[rec.ID] = s
	c.layout++
	return s
}

// compactLocked drops the slots of deregistered servers once they pile up;
// every matrix is rebuilt at the next scan.
func (c *Central) compactLocked() {
	gone := 0
	for _, s := range c.servers {
		if s.gone {
			gone++
		}
	}
	if gone <= 32 || gone*2 < len(c.servers) {
		return
	}
	kept := c.servers[:0]
	for _, s := range c.servers {
		if s.gone {
			s.idx = -1
			continue
		}
		s.idx = len(kept)
		kept = append(kept, s)
	}
	clear(c.servers[len(kept):])
	c.servers = kept
	c.layout++
}

// syncSelLocked rebuilds the selection view of the servers.
func (c *Central) syncSelLocked() {
	c.sel = c.sel[:0]
	for _, s := range c.servers {
		c.sel = append(c.sel, selection.Server{ID: s.rec.ID, Up: !s.rec.Down && !s.gone, Draining: s.rec.Draining, Full: s.full()})
	}
	c.noteServersLocked()
}

// markDownLocked declares s down; the caller kicks the scan.
func (c *Central) markDownLocked(s *srv, why string) {
	if s.rec.Down || s.gone {
		return
	}
	s.rec.Down = true
	c.log.Warn("chat server down", "server", s.rec.ID, "addr", s.rec.Addr, "why", why, "rooms", s.assigned)
	c.storeErr("put server", c.st.PutServer(s.rec))
	c.syncSelLocked()
}

// checkLivenessLocked marks down every server silent for OfflineAfter and
// reports whether any was.
func (c *Central) checkLivenessLocked(now time.Time) bool {
	changed := false
	for _, s := range c.servers {
		if !s.rec.Down && !s.gone && now.Sub(s.rec.LastSeen) > c.cfg.OfflineAfter {
			c.markDownLocked(s, fmt.Sprintf("no heartbeat for %v", now.Sub(s.rec.LastSeen).Round(time.Millisecond)))
			changed = true
		}
	}
	return changed
}

func (c *Central) insertRoomLocked(r *room) {
	r.pos = len(c.rooms)
	c.rooms = append(c.rooms, r)
	c.roomByID[r.id] = r
	for _, u := range r.members {
		u.rooms[r] = struct{}{}
	}
	if r.srv != nil {
		r.srv.assigned++
	}
}

func (c *Central) deleteRoomLocked(r *room) {
	last := c.rooms[len(c.rooms)-1]
	c.rooms[r.pos] = last
	last.pos = r.pos
	c.rooms[len(c.rooms)-1] = nil
	c.rooms = c.rooms[:len(c.rooms)-1]
	delete(c.roomByID, r.id)
	for _, u := range r.members {
		delete(u.rooms, r)
		c.dropPushLocked(u, r.id)
	}
	if r.srv != nil {
		r.srv.assigned--
	}
	c.storeErr("delete room", c.st.DeleteRoom(r.id))
	c.log.Info("room removed", "room", r.id)
}

// removeMemberLocked takes u out of r; a room left without members goes.
func (c *Central) removeMemberLocked(r *room, u *user) {
	i := slices.Index(r.members, u)
	if i < 0 {
		return
	}
	r.members = slices.Delete(r.members, i, i+1)
	r.mFresh = false
	delete(u.rooms, r)
	c.dropPushLocked(u, r.id)
	if len(r.members) == 0 {
		c.deleteRoomLocked(r)
	} else {
		c.storeErr("put room", c.st.PutRoom(r.record()))
	}
	if u.placeholder() && len(u.rooms) == 0 {
		delete(c.users, u.name)
		delete(c.dirty, u)
	}
}

// refreshDenseLocked lays u's vector out in server order.
func (c *Central) refreshDenseLocked(u *user) {
	if u.denseLayout == c.layout && u.denseGen == u.latGen {
		return
	}
	u.dense = slices.Grow(u.dense[:0], len(c.servers))[:len(c.servers)]
	for i, s := range c.servers {
		d := selection.Unmeasured
		if smp, ok := u.lat[s.rec.ID]; ok && smp.Count > 0 && smp.Median >= 0 {
			d = smp.Median
		}
		u.dense[i] = d
	}
	u.denseLayout, u.denseGen = c.layout, u.latGen
}

// refreshDirtyLocked brings every dense vector up to date, so that matrix
// rebuilds can read them from several goroutines at once.
func (c *Central) refreshDirtyLocked() {
	if c.denseAt != c.layout {
		for _, u := range c.users {
			c.refreshDenseLocked(u)
		}
		c.denseAt = c.layout
	} else {
		for u := range c.dirty {
			c.refreshDenseLocked(u)
		}
	}
	clear(c.dirty)
}

// refreshMatrix rebuilds r.m if stale. It writes only r and reads the
// members' dense vectors, which refreshDirtyLocked made current.
func (c *Central) refreshMatrix(r *room) {
	if r.mFresh && r.mLayout == c.layout {
		return
	}
	k := len(r.members)
	n := len(c.servers)
	if cap(r.m.RTT) < n*k {
		r.m.RTT = make([]time.Duration, n*k)
	}
	r.m.RTT = r.m.RTT[:n*k]
	r.m.Servers, r.m.Members = n, k
	for j, u := range r.members {
		for s := range n {
			r.m.RTT[s*k+j] = u.dense[s]
		}
	}
	r.mLayout, r.mFresh = c.layout, true
}

// move is a relocation decided by a scan.
type move struct {
	r       *room
	to      int
	epoch   uint64
	reason  string
	prevRTT time.Duration
	rtt     time.Duration
}

// decide runs the policy for one room without changing anything but its
// matrix; it is safe to call for different rooms from several goroutines.
func (c *Central) decide(r *room, now time.Time, rnd *mrand) (move, bool) {
	if len(r.members) == 0 {
		return move{}, false
	}
	c.refreshMatrix(r)
	cur := r.cur()
	d, err := c.cfg.Policy.DecideMatrix(cur, r.lastMove, now, c.sel, r.m, rnd)
	if err != nil || !d.Move {
		return move{}, false
	}
	mv := move{r: r, to: d.To.Index, epoch: r.epoch, reason: d.Reason, rtt: d.To.Max}
	if cur >= 0 {
		if sc, ok := selection.ScoreMatrix(c.sel, r.m, cur); ok {
			mv.prevRTT = sc.Max
		}
	}
	return mv, true
}

// evaluateLocked decides and applies one room's move.
func (c *Central) evaluateLocked(r *room, now time.Time, rnd *mrand) {
	if mv, ok := c.decide(r, now, rnd); ok {
		c.applyMoveLocked(mv, now)
	}
}

func (c *Central) applyMoveLocked(mv move, now time.Time) {
	r := mv.r
	if c.roomByID[r.id] != r || r.epoch != mv.epoch {
		return
	}
	if t := c.sel[mv.to]; !t.Up || t.Draining || (t.Full && mv.to != r.cur()) {
		return // a move applied earlier in this scan filled it; the next scan retries
	}
	to := c.servers[mv.to]
	prev := r.srv
	prevID := ""
	if prev != nil {
		prevID = prev.rec.ID
		prev.assigned--
		if prev.idx >= 0 {
			c.sel[prev.idx].Full = prev.full()
		}
	}
	r.srv = to
	to.assigned++
	c.sel[to.idx].Full = to.full()
	r.epoch++
	r.lastMove = now
	c.storeErr("put room", c.st.PutRoom(r.record()))
	c.log.Info("room moved", "room", r.id, "epoch", r.epoch, "from", prevID, "to", to.rec.ID, "reason", mv.reason, "rtt", mv.rtt, "prev_rtt", mv.prevRTT)
	c.noteMoveLocked(r, prev, mv, now)
	c.pushAssignLocked(r, mv.reason, prevID, mv.prevRTT, mv.rtt, now)
}

// scanChunk is how many rooms one scan worker takes at a time.
const scanChunk = 1024

// scanLocked re-evaluates every room, in parallel over the CPUs. Decisions
// only read shared state (each worker writes the matrices of its own rooms
// alone), and moves are applied afterwards on this goroutine.
func (c *Central) scanLocked() int {
	c.syncSelLocked()
	c.refreshDirtyLocked()
	now := c.now()
	workers := len(c.workerRnds)
	if len(c.rooms) < 2*scanChunk {
		workers = 1
	}
	found := make([][]move, workers)
	if workers == 1 {
		found[0] = c.scanRange(0, len(c.rooms), now, c.workerRnds[0], nil)
	} else {
		var wg sync.WaitGroup
		var next chunkCounter
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					lo := next.take(scanChunk)
					if lo >= len(c.rooms) {
						return
					}
					found[w] = c.scanRange(lo, min(lo+scanChunk, len(c.rooms)), now, c.workerRnds[w], found[w])
				}
			}()
		}
		wg.Wait()
	}
	n := 0
	for _, mvs := range found {
		for _, mv := range mvs {
			c.applyMoveLocked(mv, now)
			n++
		}
	}
	return n
}

func (c *Central) scanRange(lo, hi int, now time.Time, rnd *mrand, out []move) []move {
	for _, r := range c.rooms[lo:hi] {
		if mv, ok := c.decide(r, now, rnd); ok {
			out = append(out, mv)
		}
	}
	return out
}
