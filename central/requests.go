package central

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/proto"
	"nearchat/pkg/selection"
)

// request is a chat request waiting for its invitees' answers.
type request struct {
	id        string
	group     string // sorted member names: one pending request per group
	keyed     bool   // the requester named it (proto.Request.Key): its outcome is kept
	from      *user
	members   []*user // requester first
	waiting   map[*user]struct{}
	created   time.Time
	lastAwait time.Time
	// settleBy is set once everyone accepted: until then Central waits
	// for every member to have measured every open server (a server that
	// registered after a member's last round is measured at once, on its
	// ServerEvent), so the first placement is the right one.
	settleBy time.Time
	// unmeasuredSaid is set once the log said the placement waits for a
	// member's first measurement of a server that could host the room.
	unmeasuredSaid bool
}

// statusLocked sends one Status to u if it is online.
func (c *Central) statusLocked(u *user, req string, code proto.StatusCode, detail, room string) {
	if u != nil && u.sess != nil {
		c.sendLocked(u.sess, &proto.Status{Req: req, Code: code, Detail: detail, Room: room})
	}
}

// maxPendingPerUser bounds the requests pending for one user: the rate
// limit is per requester, and 1,000 accounts inviting one user put 10,000
// Incoming frames on its control connection in 101 ms, cutting it off as a
// slow consumer, again at every reconnect, for as long as they were
// renewed (abuse probe, 2026-12-01). Past it a request is declined.
const maxPendingPerUser = 32

// maxRoomsPerUser bounds the rooms one user may be in: no request that
// would add one more is made. A client states every room it holds in one
// Holding frame, which must stay under the frame limit (with tickets, about
// 200 bytes a room: 64 KiB held 330 rooms, and a client invited into more
// lost its control connection for good). Requests pending on the user
// (maxPendingPerUser) may add a few more.
const maxRoomsPerUser = maxAdopted

// handleRequestLocked runs the first steps of a chat request from u.
func (c *Central) handleRequestLocked(u *user, m *proto.Request) {
	id := randomID("q-", 8)
	invalid := func(format string, args ...any) {
		c.countRequest(proto.ReqInvalid)
		c.statusLocked(u, id, proto.ReqInvalid, fmt.Sprintf(format, args...), "")
	}
	if m.Key != "" {
		if err := proto.CheckKey(m.Key); err != nil {
			invalid("%v", err)
			return
		}
		id = proto.RequestID(u.name, m.Key)
		// A repeat costs no token: it starts nothing, and the answers
		// go to the repeater alone.
		if prev, ok := c.repeatLocked(u, id, m.To); ok {
			if prev != nil {
				invalid("key %q already names your request to %s; a repeat must invite the same users, a new request needs a new key", m.Key, strings.Join(prev, ", "))
			}
			return
		}
	}
	if !u.reqLimit.allow(c.now(), c.cfg.RequestRate, c.cfg.RequestBurst) {
		// One reply, not two: a flood of requests must not buy a flood
		// of answers.
		invalid("too many chat requests: at most %g a second (bursts of %d)", c.cfg.RequestRate, c.cfg.RequestBurst)
		return
	}
	c.statusLocked(u, id, proto.AckConn, "", "")
	if len(u.rooms) >= maxRoomsPerUser {
		c.countRequest(proto.ReqDeclined)
		c.statusLocked(u, id, proto.ReqDeclined, fmt.Sprintf("you are in %d rooms, the most one user may be in: leave one first", len(u.rooms)), "")
		return
	}
	if n := u.unjoined(); n >= maxUnjoined {
		c.countRequest(proto.ReqDeclined)
		c.statusLocked(u, id, proto.ReqDeclined, fmt.Sprintf("you are in %d rooms that no member has joined on a chat server yet: join or leave one first", n), "")
		return
	}
	if len(m.To) == 0 {
		invalid("nobody to invite")
		return
	}
	if len(m.To)+1 > c.cfg.MaxMembers {
		invalid("%d invitees; a room holds at most %d members", len(m.To), c.cfg.MaxMembers)
		return
	}
	names := []string{u.name}
	for _, to := range m.To {
		if err := proto.CheckUser(to); err != nil {
			invalid("%v", err)
			return
		}
		if to == u.name {
			invalid("a chat request to oneself")
			return
		}
		if slices.Contains(names, to) {
			invalid("%s is invited twice", to)
			return
		}
		names = append(names, to)
	}
	members := []*user{u}
	for _, to := range names[1:] {
		v := c.users[to]
		switch {
		case v == nil || v.placeholder():
			c.countRequest(proto.UserNotFound)
			c.statusLocked(u, id, proto.UserNotFound, fmt.Sprintf("no user %s is registered", to), "")
			return
		case v.sess == nil && !c.awaitedLocked(v):
			c.countRequest(proto.UserNotFound)
			c.statusLocked(u, id, proto.UserNotFound, fmt.Sprintf("user %s is not connected", to), "")
			return
		case len(v.rooms) >= maxRoomsPerUser:
			c.countRequest(proto.ReqDeclined)
			c.statusLocked(u, id, proto.ReqDeclined, fmt.Sprintf("user %s is in %d rooms, the most one user may be in", to, len(v.rooms)), "")
			return
		case v.unjoined() >= maxUnjoined:
			c.countRequest(proto.ReqDeclined)
			c.statusLocked(u, id, proto.ReqDeclined, fmt.Sprintf("user %s is in %d rooms that no member has joined yet; try again later", to, maxUnjoined), "")
			return
		case c.cfg.MaxPendingPerSource > 0 && u.src.IsValid() && pendingFrom(v, u.src) >= c.cfg.MaxPendingPerSource:
			c.countRequest(proto.ReqDeclined)
			c.statusLocked(u, id, proto.ReqDeclined, fmt.Sprintf("user %s has %d requests pending from users of your address; try again later", to, c.cfg.MaxPendingPerSource), "")
			return
		case len(v.reqs) >= maxPendingPerUser:
			c.countRequest(proto.ReqDeclined)
			c.statusLocked(u, id, proto.ReqDeclined, fmt.Sprintf("user %s has %d requests pending; try again later", to, len(v.reqs)), "")
			return
		}
		members = append(members, v)
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	group := strings.Join(sorted, "\x00")
	if prev := c.reqByGroup[group]; prev != nil {
		invalid("request %s between the same users is already pending", prev.id)
		return
	}
	now := c.now()
	q := &request{id: id, group: group, keyed: m.Key != "", from: u, members: members, waiting: map[*user]struct{}{}, created: now, lastAwait: now}
	c.reqs[id] = q
	c.reqByGroup[group] = q
	var later []string
	for _, v := range members {
		v.reqs[q] = struct{}{}
		if v != u {
			q.waiting[v] = struct{}{}
			if v.sess == nil {
				later = append(later, v.name) // told on its Hello
				continue
			}
			c.incomingLocked(v, q)
		}
	}
	detail := ""
	if len(later) > 0 {
		detail = "told when they reconnect: " + strings.Join(later, ", ")
	}
	c.statusLocked(u, id, proto.ReqSent, detail, "")
}

// pendingFrom counts the requests v is asked to answer that come from
// users registered from src.
func pendingFrom(v *user, src netip.Addr) int {
	n := 0
	for q := range v.reqs {
		if q.from != v && q.from.src == src {
			n++
		}
	}
	return n
}

func (c *Central) incomingLocked(v *user, q *request) {
	names := make([]string, len(q.members))
	for i, m := range q.members {
		names[i] = m.name
	}
	c.sendLocked(v.sess, &proto.Incoming{Req: q.id, From: q.from.name, Members: names})
}

// awaitedLocked reports whether v, offline, is expected back: it was
// loaded from the store by this Central, which started less than
// SessionGrace ago (a restart or a failover: the name is still reserved
// for it), and has not connected since. A request to v waits for it
// (within RequestTimeout) rather than failing because v's client has not
// found the new Central yet.
//
// Likewise, v is awaited for ReconnectGrace after its control connection
// dropped: its client connects again at once (to another replica when the
// one relaying it died), and a request must not fail for that.
func (c *Central) awaitedLocked(v *user) bool {
	now := c.now()
	if v.restored && now.Sub(c.started) < c.cfg.SessionGrace {
		return true
	}
	return v.sess == nil && !v.dropped.IsZero() && now.Sub(v.dropped) < c.cfg.ReconnectGrace
}

// failOfflineLocked ends the requests of u, offline and no longer awaited.
func (c *Central) failOfflineLocked(u *user) {
	for q := range u.reqs {
		detail := fmt.Sprintf("user %s went offline", u.name)
		if q.from == u {
			detail = fmt.Sprintf("requester %s went offline", u.name)
		}
		c.finishLocked(q, proto.UserNotFound, detail, "")
	}
}

// repeatLocked answers a keyed request u has made before, if Central knows
// it (pending, or its outcome kept), and reports whether it did. A
// request under the same key to other invitees is no repeat: ok with the
// earlier request's invitees, for the caller to refuse it.
func (c *Central) repeatLocked(u *user, id string, to []string) (prev []string, ok bool) {
	if q := c.reqs[id]; q != nil && q.from == u {
		if inv := q.invitees(); !sameNames(to, inv) {
			return inv, true
		}
		c.statusLocked(u, id, proto.AckConn, "", "")
		c.statusLocked(u, id, proto.ReqSent, "", "")
		return nil, true
	}
	if d, ok := c.done[id]; ok && d.From == u.name {
		if d.To != nil && !sameNames(to, d.To) {
			return d.To, true
		}
		c.statusLocked(u, id, proto.AckConn, "", "")
		c.statusLocked(u, id, proto.StatusCode(d.Code), d.Detail, d.Room)
		return nil, true
	}
	return nil, false
}

// invitees are q's members but its requester, sorted.
func (q *request) invitees() []string {
	out := make([]string, 0, len(q.members)-1)
	for _, v := range q.members[1:] {
		out = append(out, v.name)
	}
	slices.Sort(out)
	return out
}

// sameNames reports whether to names the users of sorted, in any order.
func sameNames(to, sorted []string) bool {
	if len(to) != len(sorted) {
		return false
	}
	a := slices.Clone(to)
	slices.Sort(a)
	return slices.Equal(a, sorted)
}

// Outcomes of keyed requests are kept for requestMemory, at most maxDone of
// them: long enough for a client to reconnect and send its request again.
const (
	requestMemory = 2 * time.Minute
	maxDone       = 1 << 16
)

// rememberLocked keeps q's outcome for repeats of q, in the store too, so
// that the Central that takes over after a failover answers them. Only
// decisions are kept: an acceptance (the room exists), a decline, a
// timeout. A request that failed because a member went offline (the
// requester's own connection, maybe, which is why it asks again) or found
// no server is simply run again.
func (c *Central) rememberLocked(q *request, code proto.StatusCode, detail, room string) {
	if !q.keyed || (code != proto.ReqAccepted && code != proto.ReqDeclined && code != proto.ReqTimeout) {
		return
	}
	rec := store.Request{ID: q.id, From: q.from.name, To: q.invitees(), Code: uint8(code), Detail: detail, Room: room, Finished: c.now()}
	if _, ok := c.done[q.id]; !ok {
		c.doneQ = append(c.doneQ, q.id)
	}
	c.done[q.id] = rec
	c.storeErr("put request", c.st.PutRequest(rec))
	for len(c.doneQ) > maxDone {
		c.forgetDoneLocked()
	}
}

// forgetDoneLocked drops the oldest kept outcome.
func (c *Central) forgetDoneLocked() {
	id := c.doneQ[0]
	c.doneQ[0] = ""
	c.doneQ = c.doneQ[1:]
	delete(c.done, id)
	c.storeErr("delete request", c.st.DeleteRequest(id))
}

// expireDoneLocked drops the outcomes older than requestMemory.
func (c *Central) expireDoneLocked(now time.Time) {
	for len(c.doneQ) > 0 && now.Sub(c.done[c.doneQ[0]].Finished) >= requestMemory {
		c.forgetDoneLocked()
	}
}

// finishLocked ends q with a final status, told to every member still
// online (the invitees too, so they can drop the prompt).
func (c *Central) finishLocked(q *request, code proto.StatusCode, detail, room string) {
	if c.reqs[q.id] != q {
		return
	}
	delete(c.reqs, q.id)
	delete(c.reqByGroup, q.group)
	c.countRequest(code)
	c.rememberLocked(q, code, detail, room)
	for _, v := range q.members {
		delete(v.reqs, q)
		c.statusLocked(v, q.id, code, detail, room)
	}
}

// handleAnswerLocked applies u's answer to a request.
func (c *Central) handleAnswerLocked(cn *conn, u *user, m *proto.Answer) {
	if err := proto.CheckReq(m.Req); err != nil {
		c.badIDLocked(cn, err)
		return
	}
	q := c.reqs[m.Req]
	if q == nil || q.from == u || !slices.Contains(q.members, u) {
		c.sendLocked(cn, &proto.Error{Code: proto.CodeNotFound, Reason: "no pending chat request with this id for you", Ref: m.Req})
		return
	}
	if _, ok := q.waiting[u]; !ok {
		c.sendLocked(cn, &proto.Error{Code: proto.CodeConflict, Reason: "you already accepted this request", Ref: m.Req})
		return
	}
	if !m.Accept {
		c.finishLocked(q, proto.ReqDeclined, u.name+" declined", "")
		return
	}
	delete(q.waiting, u)
	if len(q.waiting) > 0 {
		return
	}
	q.settleBy = c.now().Add(c.cfg.SettleWait)
	c.tryPlaceLocked(q, false)
}

// tryPlaceLocked places q's room unless some member's vector is not
// settled yet and force is false.
func (c *Central) tryPlaceLocked(q *request, force bool) {
	r, rtt, err := c.placeLocked(q, force)
	if r == nil && err == nil {
		return // not settled: a member's report or the tick tries again
	}
	if errors.Is(err, selection.ErrUnmeasured) && c.now().Sub(q.created) < c.cfg.RequestTimeout {
		// No server that could host the room is measured by every member
		// yet: a member's first probe round can outlast SettleWait on a
		// loaded machine. Its report tries again (state.go); the request
		// fails only at RequestTimeout.
		if !q.unmeasuredSaid {
			q.unmeasuredSaid = true
			c.log.Info("new room waits for its members' measurements", "req", q.id, "err", err)
		}
		return
	}
	if err != nil {
		c.log.Warn("no server for new room", "req", q.id, "err", err)
		c.finishLocked(q, proto.ServerErr, placementDetail(err), "")
		return
	}
	c.finishLocked(q, proto.ReqAccepted, "", r.id)
	c.pushAssignLocked(r, "new room", "", 0, rtt, r.created)
}

// placementDetail is a SERVER_ERR's detail: why no server could host the
// room, worded for the people who asked for it ("no chat server can host
// this room: all 2 chat servers are full"). The error chain behind it is
// for Central's log; a cause that is Central's own says only that.
func placementDetail(err error) string {
	const why = "no chat server can host this room"
	var ne *selection.NoEligibleError
	switch {
	case errors.As(err, &ne):
		return why + ": " + ne.Sentence()
	case errors.Is(err, selection.ErrNoMembers):
		return why + ": the chat has no members"
	}
	return why + " (an error of Central's own: its log has it)"
}

// placeLocked chooses a server for q's members and creates the room at
// epoch 1.
// Unless force is set, it returns nothing (no room, no error) while some
// member has not measured some open server.
func (c *Central) placeLocked(q *request, force bool) (*room, time.Duration, error) {
	c.syncSelLocked()
	c.refreshDirtyLocked()
	now := c.now()
	r := &room{epoch: 1, members: slices.Clone(q.members), created: now, lastMove: now, unmoved: true}
	c.refreshMatrix(r)
	if !force && c.unsettledLocked(r, true) {
		return nil, 0, nil
	}
	ch, err := selection.ChooseMatrix(c.sel, r.m, c.rnd)
	if err != nil {
		return nil, 0, err
	}
	for {
		r.id = randomID("r-", 6)
		if c.roomByID[r.id] == nil {
			break
		}
	}
	r.srv = c.servers[ch.Index]
	// Provisional: some member has not measured a server that could
	// host the room (it registered after the member's last round, and
	// the member is probing it now; or the member could not reach it).
	// No dwell holds a room's first move either way (decide).
	provisional := c.unsettledLocked(r, false)
	c.insertRoomLocked(r)
	c.sel[ch.Index].Full = r.srv.full()
	c.storeErr("put room", c.st.PutRoom(r.record()))
	c.log.Info("room created", "room", r.id, "server", r.srv.rec.ID, "members", r.memberNames(), "rtt", ch.Max, "provisional", provisional)
	return r, ch.Max, nil
}

// tickRequestsLocked sends AWAITING_REQ and ends requests that timed out.
func (c *Central) tickRequestsLocked(now time.Time) {
	for _, q := range c.reqs {
		if c.reqs[q.id] != q {
			continue // ended by a member's failOfflineLocked below
		}
		for _, v := range q.members {
			if v.sess == nil && !c.awaitedLocked(v) {
				c.failOfflineLocked(v)
			}
		}
		if c.reqs[q.id] != q {
			continue
		}
		switch {
		case !q.settleBy.IsZero():
			c.tryPlaceLocked(q, !now.Before(q.settleBy))
		case now.Sub(q.created) >= c.cfg.RequestTimeout:
			names := make([]string, 0, len(q.waiting))
			for v := range q.waiting {
				names = append(names, v.name)
			}
			slices.Sort(names)
			c.finishLocked(q, proto.ReqTimeout, fmt.Sprintf("no answer within %v from %s", c.cfg.RequestTimeout, strings.Join(names, ", ")), "")
		case now.Sub(q.lastAwait) >= c.cfg.AwaitingEvery:
			q.lastAwait = now
			c.statusLocked(q.from, q.id, proto.AwaitingReq, "", "")
		}
	}
}

// unsettledLocked reports whether some open server is unmeasured by some
// member of r, whose matrix is fresh. With awaited, only a server the
// member may yet measure counts: not one missing from a vector it reported
// after Central knew the server, since a client probes every server it is
// told of and reports after, measured or not (an address no member
// reaches, a wrong -advertise say, held every new room for SettleWait).
func (c *Central) unsettledLocked(r *room, awaited bool) bool {
	for i, s := range c.sel {
		if !s.Up || s.Draining || s.Full {
			continue
		}
		for j, u := range r.members {
			if r.m.At(j, i) >= 0 {
				continue
			}
			if awaited && u.lat != nil && u.latGen > c.servers[i].knownGen {
				continue // it tried, and could not measure it
			}
			return true
		}
	}
	return false
}
