package central

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/selection"
	"nearchat/pkg/ticket"
)

// user is a registered client, or a placeholder for a room member that
// Central learnt from a heartbeat before the client itself came back.
type user struct {
	name  string
	token string // empty for a placeholder
	lat   map[string]selection.Sample
	reg   time.Time

	// latGen changes whenever lat does; latAt is when u last reported
	// (the same vector again too), zero before its first report to this
	// Central. dense is lat laid out in server order, valid while
	// denseLayout and denseGen match.
	latGen      uint64
	latAt       time.Time
	dense       []time.Duration
	spread      []time.Duration // the samples' spreads, laid out as dense
	denseLayout uint64
	denseGen    uint64

	// src is the address (an IPv6 /64) u last registered from, unknown
	// for users loaded from the store or learnt from a report.
	src          netip.Addr
	rooms        map[*room]struct{}
	reqs         map[*request]struct{}
	pushes       map[string]*push // by room id
	sess         *conn            // live control connection, nil when offline
	offlineSince time.Time
	// dropped: when u's control connection last ended (zero while
	// connected, and before u ever connected): see awaitedLocked.
	dropped time.Time
	// restored: loaded from the store and not connected to this Central
	// since (see awaitedLocked).
	restored  bool
	reqLimit  bucket // chat requests this user may still make
	holdLimit bucket // Holding reports
	adoptions bucket // rooms adopted from u's Holding reports (adoptRate)
	repLimit  bucket // Unreachable reports
	latLimit  bucket // latency reports (PUT /v1/clients/{name}/latency)
	// forged is when u last reported a ticket with a bad signature, which
	// no honest client does: its tickets go unchecked for forgedPause.
	forged time.Time
}

func (u *user) placeholder() bool { return u.token == "" }

func (u *user) record() store.User {
	return store.User{Name: u.name, Token: u.token, Latency: u.lat, Registered: u.reg}
}

// serverRec is a chat server slot. Slots keep their index (their position in
// every latency matrix) until a compaction changes the layout.
type serverRec struct {
	rec      store.Server
	idx      int // -1 once compacted away
	gone     bool
	probing  bool
	assigned int // rooms Central placed here
	// fresh counts the rooms placed here since the server's last
	// heartbeat, which its report of the rooms it hosts does not show yet;
	// joinedN the rooms here that a member has joined and that this
	// server showed a member in, or took, within the last holdFor
	// (room.counted; some may be empty on the server for now: their
	// members come back to them).
	fresh, joinedN int
	// admits: the last heartbeat said a client from a new address would
	// be admitted, though the server holds its maximum of connections
	// (it evicts for a fair share).
	admits bool
	// budget: the last heartbeat said the server refuses every new room,
	// a memory budget of its own reached (centralapi.HeartbeatRequest's
	// Budget, cut to maxBudgetText); "" otherwise.
	budget string
	// token is issued at registration; heartbeats, drain and deregister
	// for this id must carry it. Kept in memory only: after a Central
	// restart the server registers again.
	token string
	// suspectAt is when a member first reported the server unreachable,
	// badAt when Central first had a sign it is down, draining or gone
	// (see noteServersLocked); zero while it is fine.
	suspectAt, badAt time.Time
	// lapsed: the store's lease of the server ran out (no leader heard
	// it for OfflineAfter) and it has not been heard of since; a failed
	// echo check then marks it down. checkLivenessLocked checks it.
	lapsed bool
	// byLease: LastSeen is the store's account (a lease a previous
	// leader refreshed), not a heartbeat to this Central; its running
	// out is a lapse, not a silence this Central saw.
	byLease bool
	// echoRTT is how long Central's last successful echo check took.
	echoRTT time.Duration
	// answeredAt is when the server last answered Central's echo check
	// (on the real clock); recheck, that a check is due at recheckGap
	// after it.
	answeredAt time.Time
	recheck    bool
	// addrErr is why Central's last check of the server's advertised
	// address failed, "" once it answered as this server (or before the
	// first check ended); verifying, that a check runs; verifiedAt, when
	// the last one ended (see verifyAddrLocked).
	addrErr    string
	verifying  bool
	verifiedAt time.Time
	// knownAt is when this Central took the server in (registered, or
	// loaded from the store), knownGen the latGen then: a vector reported
	// before (a user's latGen not past it) could not name the server.
	knownAt  time.Time
	knownGen uint64
	checks   int // echo checks finished, for tests and logs
	// refusedLog is when adoptLocked last logged reports it refused.
	refusedLog time.Time
	// reporters said the server was unreachable (once per member and
	// room; true while every report of that member was only a silence,
	// see proto.Unreachable); if it answers Central's check, each gets its
	// room's placement again, so a member whose connection broke (the
	// server may have restarted and lost the room) joins afresh instead of
	// waiting forever.
	reporters map[reporter]bool
}

// full reports whether the server takes no new room: by the rooms it
// reported hosting and those placed on it since, or by its connections
// when it said it admits no client from a new address (one address's
// members filling a server made Central refuse to place rooms there,
// though the server would have evicted them for a fair share: abuse
// sweep 6, verification, N2). Rooms placed that nobody
// joins count until its next heartbeat only: pairs of users that form
// rooms and never join them made every server full, and no new chat
// could start (abuse sweep, 2026-12-03: 100,000 such rooms in 100 s).
//
// A room whose members all left its server (the server drops an empty
// room from its report) holds its place there for SessionGrace, as an
// offline user's name is held (longer on a server with many rooms, shorter
// on one whose memory budget is reached: see holdFor), not for as long
// as Central keeps the room: users that joined rooms once and then stayed
// away from the chat server, connected to Central only, kept every server
// full for RoomTTL, and no new chat could start (abuse sweep 2,
// 2026-12-05). Members that come back later to a server filled meanwhile
// are refused there, and Central moves their room (rehomeLocked).
func (s *serverRec) full() bool {
	rooms := max(s.rec.Rooms, s.joinedN) + s.fresh
	return (s.rec.MaxRooms > 0 && rooms >= s.rec.MaxRooms) || (s.rec.MaxConns > 0 && s.rec.Conns >= s.rec.MaxConns && !s.admits) || s.budget != ""
}

// maxBudgetText bounds the reason a heartbeat gives for a budget reached.
const maxBudgetText = 256

// room is a conversation. m is its latency matrix over c.servers, valid
// while mFresh holds and mLayout matches c.layout. A member's new vector or
// a change of members clears mFresh, so the scan checks one flag per room
// instead of visiting every member.
type room struct {
	id       string
	srv      *serverRec
	epoch    uint64
	members  []*user
	created  time.Time
	lastMove time.Time
	adopted  bool
	// unmoved: this Central placed the room and has not moved it since
	// (a room loaded from the store or adopted from a report is not):
	// the dwell does not hold it (decide).
	unmoved bool
	// joined: a heartbeat of the room's server has reported a member in
	// it (or the room was adopted from a report, or loaded from the
	// store). Until then it counts toward its members' maxUnjoined, and
	// toward its server's capacity only until the server's next
	// heartbeat (serverRec.full). Set with markJoinedLocked.
	joined bool
	// counted: the room is in its server's joinedN, as a joined room its
	// server showed a member in (or took, by a move) at seen, less than
	// holdFor ago. See hold and expireLocked.
	counted bool
	seen    time.Time
	pos     int // index in c.rooms
	// lostSrv names the server a member or a restarted Central's store
	// says the room is on while Central does not know that server (srv is
	// nil): it may register again, or the room is placed afresh once
	// servers had OfflineAfter to come back.
	lostSrv string
	// alive is when a member was last seen connected or a server last
	// reported the room; RoomTTL after it the room expires.
	alive time.Time
	// held is the epoch each member last confirmed it follows (AssignAck,
	// or a Holding report that matches the placement).
	held map[*user]uint64

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

// confirm records that u follows the room at epoch.
func (r *room) confirm(u *user, epoch uint64) {
	if r.held == nil {
		r.held = make(map[*user]uint64, len(r.members))
	}
	r.held[u] = epoch
}

// srvID names the server r is placed on, known to Central or not.
func (r *room) srvID() string {
	if r.srv != nil {
		return r.srv.rec.ID
	}
	return r.lostSrv
}

func (r *room) record() store.Room {
	rec := store.Room{ID: r.id, Epoch: r.epoch, Members: r.memberNames(), Created: r.created, LastMove: r.lastMove, Adopted: r.adopted}
	if r.srv != nil {
		rec.Server = r.srv.rec.ID
	}
	return rec
}

// newToken issues a session token for name: 16 random bytes and the first
// 16 bytes of their HMAC with name under Central's token key. A Central
// that restarted with the same key (from TicketKey or ClusterSecret) can
// so tell a member's own token from a guess without having stored it.
func (c *Central) newToken(name string) string {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	return hex.EncodeToString(append(nonce, c.tokenMAC(name, nonce)...))
}

func (c *Central) tokenMAC(name string, nonce []byte) []byte {
	m := hmac.New(sha256.New, c.tokenKey)
	m.Write(nonce)
	m.Write([]byte(name))
	return m.Sum(nil)[:16]
}

// tokenFor reports whether token is one Central issued for name.
func (c *Central) tokenFor(name, token string) bool {
	b, err := hex.DecodeString(token)
	if err != nil || len(b) != 32 {
		return false
	}
	return hmac.Equal(b[16:], c.tokenMAC(name, b[:16]))
}

// deriveTokenKey is the key of newToken: derived from the ticket key or
// the cluster secret, which survive a restart, else random (then tokens
// cannot be checked after a restart, and placeholders are claimed by the
// first token of the right form, as the chat servers admit anyone then).
func deriveTokenKey(cfg Config) []byte {
	h := sha256.New()
	h.Write([]byte("nearchat session token key\x00"))
	switch {
	case cfg.TicketKey != nil:
		h.Write(cfg.TicketKey.Seed())
	case cfg.ClusterSecret != "":
		h.Write([]byte(cfg.ClusterSecret))
	default:
		return nil
	}
	return h.Sum(nil)
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
		// A fresh OfflineAfter window to heartbeat in, unless the store
		// keeps liveness (etcd leases): then the server was last heard
		// of when it says, and a server it has no sign of life of for
		// OfflineAfter is checked at once (a lapsed lease is the missed
		// heartbeats; the failed check must come too).
		rec.LastSeen = now
		lapsed, byLease := false, false
		if c.live != nil && !rec.Down {
			if ago, ok := c.live.HeardAgo(rec.ID); ok {
				rec.LastSeen, byLease = now.Add(-min(ago, c.cfg.OfflineAfter)), true
			} else {
				lapsed = true
			}
		}
		s := c.addServerLocked(rec)
		s.lapsed, s.byLease = lapsed, byLease
	}
	users, err := c.st.Users()
	if err != nil {
		return err
	}
	// Sized once: a standby that takes over loads every user and room,
	// and growing maps of 100,000 entries step by step costs seconds.
	c.users, c.folded, c.tokens = make(map[string]*user, len(users)), make(map[string]*user, len(users)), make(map[string]*user, len(users))
	c.dirty = make(map[*user]struct{}, len(users))
	for _, rec := range users {
		u := c.newUserLocked(rec.Name, rec.Token, now)
		u.lat, u.reg, u.restored = rec.Latency, rec.Registered, true
	}
	rooms, err := c.st.Rooms()
	if err != nil {
		return err
	}
	c.roomByID, c.rooms = make(map[string]*room, len(rooms)), make([]*room, 0, len(rooms))
	for _, rec := range rooms {
		// Whether a member joined is not stored: a loaded room was live,
		// and is taken for joined.
		r := &room{id: rec.ID, srv: c.srvByID[rec.Server], epoch: rec.Epoch, created: rec.Created, lastMove: rec.LastMove, adopted: rec.Adopted, joined: true}
		if r.srv == nil {
			r.lostSrv = rec.Server
		}
		for _, name := range rec.Members {
			r.members = append(r.members, c.userOrPlaceholderLocked(name, now))
		}
		c.insertRoomLocked(r)
	}
	reqs, err := c.st.Requests()
	if err != nil {
		return err
	}
	slices.SortFunc(reqs, func(a, b store.Request) int { return a.Finished.Compare(b.Finished) })
	for _, rec := range reqs {
		c.done[rec.ID] = rec
		c.doneQ = append(c.doneQ, rec.ID)
	}
	if err := c.loadRevokesLocked(now); err != nil {
		return err
	}
	c.syncSelLocked()
	return nil
}

func (c *Central) newUserLocked(name, token string, now time.Time) *user {
	c.latGen++
	u := &user{name: name, token: token, reg: now, latGen: c.latGen, offlineSince: now,
		rooms: map[*room]struct{}{}, reqs: map[*request]struct{}{}, pushes: map[string]*push{}}
	c.users[name] = u
	c.folded[strings.ToLower(name)] = u
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
	if c.folded[strings.ToLower(u.name)] == u {
		delete(c.folded, strings.ToLower(u.name))
	}
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
	u.latGen, u.latAt = c.latGen, c.now()
	c.dirty[u] = struct{}{}
	for r := range u.rooms {
		r.mFresh = false
	}
	c.storeErr("put user", c.st.PutUser(u.record()))
	for q := range u.reqs {
		if !q.settleBy.IsZero() {
			c.tryPlaceLocked(q, false) // u's new vector may settle it
		}
	}
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
func (c *Central) addServerLocked(rec store.Server) *serverRec {
	s := &serverRec{rec: rec, idx: len(c.servers), token: rec.Token, knownAt: c.now(), knownGen: c.latGen}
	c.srvGen = c.latGen
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

// markDownLocked declares s down; the caller kicks the scan. attrs are
// logged after why (for an echo check: how long it took and its error).
func (c *Central) markDownLocked(s *serverRec, why string, attrs ...any) {
	if s.rec.Down || s.gone {
		return
	}
	s.rec.Down, s.lapsed, s.byLease = true, false, false
	clear(s.reporters)
	c.announceLocked(s, proto.ServerDown)
	c.log.Warn("chat server down", append([]any{"server", s.rec.ID, "addr", s.rec.Addr, "why", why, "rooms", s.assigned}, attrs...)...)
	c.storeErr("put server", c.st.PutServer(s.rec))
	c.syncSelLocked()
}

// checkLivenessLocked marks down every server silent for OfflineAfter and
// reports whether any was.
func (c *Central) checkLivenessLocked(now time.Time) bool {
	changed := false
	for _, s := range c.servers {
		if s.byLease && !s.rec.Down && !s.gone && now.Sub(s.rec.LastSeen) > c.cfg.OfflineAfter {
			// Silent for OfflineAfter by the lease's account: the missed
			// heartbeats; an echo check must fail too. If it answers, it
			// has OfflineAfter from now to heartbeat.
			s.byLease, s.lapsed, s.rec.LastSeen = false, true, now
		}
		if !s.rec.Down && !s.gone && now.Sub(s.rec.LastSeen) > c.cfg.OfflineAfter {
			c.markDownLocked(s, fmt.Sprintf("no heartbeat for %v", now.Sub(s.rec.LastSeen).Round(time.Millisecond)))
			changed = true
		} else if (len(s.reporters) > 0 && !s.rec.Down && now.Sub(s.rec.LastSeen) > c.cfg.HeartbeatInterval*3/2) || s.lapsed {
			c.probeLocked(s) // a report plus a late heartbeat, or a lapsed lease: check again now
		}
	}
	return changed
}

func (c *Central) insertRoomLocked(r *room) {
	r.alive = c.now()
	r.pos = len(c.rooms)
	c.rooms = append(c.rooms, r)
	c.roomByID[r.id] = r
	for _, u := range r.members {
		u.rooms[r] = struct{}{}
	}
	if r.srv != nil {
		r.srv.assigned++
		if r.joined {
			r.hold(r.alive) // adopted or loaded: in the server's count already
		} else {
			r.srv.fresh++
		}
	}
}

// markJoinedLocked records that a member joined r on its server, as its
// server shows at now.
func (c *Central) markJoinedLocked(r *room, now time.Time) {
	r.joined = true
	r.hold(now)
}

// hold counts r, if joined, toward its server's capacity from now for
// holdFor: its server showed a member in it, or it just moved there
// and its members are on their way.
func (r *room) hold(now time.Time) {
	r.seen = now
	if r.joined && !r.counted && r.srv != nil {
		r.srv.joinedN++
		r.counted = true
	}
}

// holdFor is how long a joined room keeps its place on s with s showing
// no member in it: SessionGrace, or, if longer, as long as s takes to
// report every room it hosts twice over (a heartbeat lists at most
// centralapi.HeartbeatPage rooms, the rest in later beats) and one beat
// more. A live room that s had not listed for a while was otherwise taken
// for an empty one, and one member's blip moved it off a full server
// (rehomeLocked; review, 2026-12-05).
//
// While s says a memory budget of its own is reached it refuses every new
// room, so a place held for a room it dropped holds nothing: a member
// coming back is refused all the same. Such a room's place lasts only
// until s would have listed it, and its members are moved on their next
// report of the refusal, not a SessionGrace later (a minute by default;
// last stop's review).
func (c *Central) holdFor(s *serverRec) time.Duration {
	pages := max(1, (s.rec.Rooms+centralapi.HeartbeatPage-1)/centralapi.HeartbeatPage)
	listed := time.Duration(2*pages+1) * c.cfg.HeartbeatInterval
	if s.budget != "" {
		return listed
	}
	return max(c.cfg.SessionGrace, listed)
}

// unhold takes r out of its server's count; call it before r.srv changes.
func (r *room) unhold() {
	if r.counted {
		r.srv.joinedN--
		r.counted = false
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
		r.unhold()
	}
	c.revokeLocked(centralapi.Revocation{Room: r.id, Before: c.now().UnixNano()}, c.now())
	c.storeErr("delete room", c.st.DeleteRoom(r.id))
	c.log.Info("room removed", "room", r.id)
}

// leaveLocked takes u out of room id for good, as its LeaveRoom or a
// Holding's Left asks (via), and reports whether u was a member.
func (c *Central) leaveLocked(u *user, id, via string) bool {
	r := c.roomByID[id]
	if r == nil || !r.hasMember(u) {
		return false
	}
	c.log.Info("member left room", "room", r.id, "user", u.name, "via", via)
	c.removeMemberLocked(r, u)
	return true
}

// removeMemberLocked takes u out of r; a room left without members goes.
func (c *Central) removeMemberLocked(r *room, u *user) {
	i := slices.Index(r.members, u)
	if i < 0 {
		return
	}
	r.members = slices.Delete(r.members, i, i+1)
	delete(r.held, u)
	// The tickets u holds for r admit it no more, wherever r is.
	c.revokeLocked(centralapi.Revocation{Room: r.id, User: u.name, Before: c.now().UnixNano()}, c.now())
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

// adoptLocked merges the rooms a server reports into the picture. Rooms
// Central does not know (it restarted) are adopted with their epoch and
// members; a higher epoch than Central's means the reporter holds the
// room's newest placement; adopted rooms learn members as they reconnect.
// Where Central signs tickets, a report does either only with a ticket
// for that placement (placedOn): a registered server cannot take a room
// by claiming a higher epoch, or make Central hold rooms it never placed
// (abuse probe, 2026-12-02: one server's heartbeats took live rooms, and
// made Central adopt 20,000 invented rooms of 320,000 names).
func (c *Central) adoptLocked(s *serverRec, reports []centralapi.RoomReport, now time.Time) {
	budget, refused := maxProofsPerBeat, 0
	defer func() {
		if refused > 0 && now.Sub(s.refusedLog) >= time.Minute {
			s.refusedLog = now
			c.log.Warn("a chat server reported rooms whose placement on it Central cannot verify; they are not adopted",
				"server", s.rec.ID, "rooms", refused, "hint", "a server without -ticket-key, an old version, or one claiming rooms it was not given")
		}
	}()
	for i := range reports {
		rep := &reports[i]
		if proto.CheckRoom(rep.ID) != nil || !epochPlausible(rep.Epoch, now) {
			continue
		}
		r := c.roomByID[rep.ID]
		if (r == nil || rep.Epoch > r.epoch || (r.srv == nil && rep.Epoch == r.epoch)) && !c.placedOn(s, rep, now, &budget) {
			refused++
			continue
		}
		if r == nil && c.cfg.TicketKey == nil && s.rec.MaxRooms > 0 && s.assigned >= s.rec.MaxRooms {
			refused++ // trusted, but not past what it says it can host
			continue
		}
		// A member that left the room, or a room Central removed, since
		// this Central started is not brought back by a report that still
		// lists it (the server drops it once it reads the revocation).
		var members []string
		for _, m := range rep.Members {
			if proto.CheckUser(m) == nil && !slices.Contains(members, m) && len(members) < c.cfg.MaxMembers && !c.leftLocked(rep.ID, m, 0) {
				members = append(members, m)
			}
		}
		if r == nil {
			if len(members) == 0 {
				continue
			}
			r = &room{id: rep.ID, srv: s, epoch: rep.Epoch, created: now, lastMove: now, adopted: true, joined: true}
			for _, m := range members {
				r.members = append(r.members, c.userOrPlaceholderLocked(m, now))
			}
			c.insertRoomLocked(r)
			c.storeErr("put room", c.st.PutRoom(r.record()))
			c.log.Info("room adopted from heartbeat", "room", r.id, "server", s.rec.ID, "epoch", r.epoch, "members", members)
			continue
		}
		r.alive = now
		if r.srv == s && rep.Epoch == r.epoch && len(members) > 0 {
			c.markJoinedLocked(r, now)
		}
		changed := false
		if rep.Epoch > r.epoch || (r.srv == nil && rep.Epoch == r.epoch) {
			c.adoptPlacementLocked(r, s, s.rec.ID, rep.Epoch, now)
		} else if rep.Epoch < r.epoch {
			// s still holds members of an older placement: those that have
			// not confirmed the current one are told it again.
			for _, m := range members {
				if u := c.users[m]; u != nil && r.hasMember(u) && r.held[u] != r.epoch {
					c.resendPlacementLocked(u, r, "the room has moved")
				}
			}
		}
		if r.adopted && r.srv == s && rep.Epoch == r.epoch {
			for _, m := range members {
				u := c.userOrPlaceholderLocked(m, now)
				if !r.hasMember(u) && len(r.members) < c.cfg.MaxMembers {
					r.members = append(r.members, u)
					u.rooms[r] = struct{}{}
					r.mFresh = false
					changed = true
				}
			}
		}
		if changed {
			c.storeErr("put room", c.st.PutRoom(r.record()))
		}
	}
}

// maxProofsPerBeat bounds the placement tickets one heartbeat makes
// Central verify (an Ed25519 check each, under its lock); reports past it
// are looked at again on a later beat.
const maxProofsPerBeat = 256

// placedOn reports whether rep proves that Central placed the room on s at
// rep.Epoch: its ticket carries Central's signature on that room, server
// and epoch. Expired tickets count: the room may have lived for days.
// Where Central signs no tickets, chat servers are trusted.
func (c *Central) placedOn(s *serverRec, rep *centralapi.RoomReport, now time.Time, budget *int) bool {
	if c.cfg.TicketKey == nil {
		return true
	}
	if len(rep.Ticket) == 0 || *budget <= 0 || !c.allowCheckLocked(now) {
		return false
	}
	*budget--
	cl, err := ticket.Open(c.cfg.TicketKey.Public().(ed25519.PublicKey), rep.Ticket)
	return err == nil && cl.Room == rep.ID && cl.Server == s.rec.ID && cl.Epoch == rep.Epoch
}

// unjoined counts u's rooms that no member has joined yet.
func (u *user) unjoined() int {
	n := 0
	for r := range u.rooms {
		if !r.joined {
			n++
		}
	}
	return n
}

// maxUnjoined bounds the rooms a user may be in that nobody has joined
// yet: enough for a few chats started at once, while their members join.
const maxUnjoined = 4

// makeRoomForUsersLocked forgets the users longest offline among those
// that are in no room and wait on no request, an eighth of MaxUsers at
// most (those SessionGrace forgets anyway, only sooner: a flood of
// registrations from many addresses, each within its rate, grew Central
// by 768 bytes each, without bound), so that a registration past MaxUsers
// has room. It reports false when no user may go. The scan is over every
// user, once per MaxUsers/8 registrations at most.
func (c *Central) makeRoomForUsersLocked(now time.Time) bool {
	var idle []*user
	for _, u := range c.users {
		if u.sess == nil && !u.placeholder() && len(u.rooms) == 0 && len(u.reqs) == 0 {
			idle = append(idle, u)
		}
	}
	if len(idle) == 0 {
		return false
	}
	n := min(len(idle), max(c.cfg.MaxUsers/8, 1))
	slices.SortFunc(idle, func(a, b *user) int { return a.offlineSince.Compare(b.offlineSince) })
	for _, u := range idle[:n] {
		c.dropUserLocked(u, "forgotten early: Central holds its maximum of users")
	}
	c.log.Warn("users forgotten before their session grace: Central holds its maximum of users", "forgotten", n, "max", c.cfg.MaxUsers,
		"oldest_offline_for", now.Sub(idle[0].offlineSince).Round(time.Second))
	return true
}

// expireLocked forgets rooms none of whose members has been connected, and
// that no server has reported, for RoomTTL (their clients crashed or never
// came back, so nobody will send LeaveRoom), and users whose session has
// been gone for SessionGrace and who are left in no room. Expired rooms
// stop counting against their server's capacity, and so do rooms their
// server has not shown a member in for holdFor (serverRec.full).
func (c *Central) expireLocked(now time.Time) {
	c.expireDoneLocked(now)
	released := false
	for i := 0; i < len(c.rooms); {
		r := c.rooms[i]
		if r.counted && now.Sub(r.seen) >= c.holdFor(r.srv) {
			r.unhold() // empty on its server for the grace: see full
			released = true
		}
		for _, u := range r.members {
			if u.sess != nil {
				r.alive = now
				break
			}
		}
		if now.Sub(r.alive) < c.cfg.RoomTTL {
			i++
			continue
		}
		c.log.Info("room expired: no member connected and no server reported it", "room", r.id, "for", now.Sub(r.alive).Round(time.Second))
		for len(r.members) > 0 {
			c.removeMemberLocked(r, r.members[0]) // the last one deletes r, which moves another room to i
		}
	}
	for _, u := range c.users {
		if u.sess == nil && !u.placeholder() && len(u.rooms) == 0 && len(u.reqs) == 0 && now.Sub(u.offlineSince) >= c.cfg.SessionGrace {
			if ok, hushed := c.expireLog.allow(now); ok {
				c.log.Info("user expired: offline past the session grace", c.expireLog.attrs(hushed, "user", u.name)...)
			}
			c.dropUserLocked(u, "expired")
		}
	}
	if released {
		c.syncSelLocked()
	}
}
