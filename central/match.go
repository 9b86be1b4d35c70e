package central

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/selection"
	"nearchat/pkg/ticket"
	"nearchat/pkg/wire"
)

// request is a chat request waiting for its invitees' answers.
type request struct {
	id        string
	key       string // sorted member names: one pending request per group
	from      *user
	members   []*user // requester first
	waiting   map[*user]struct{}
	created   time.Time
	lastAwait time.Time
}

// statusLocked sends one Status to u if it is online.
func (c *Central) statusLocked(u *user, req string, code proto.StatusCode, detail, room string) {
	if u != nil && u.sess != nil {
		c.sendLocked(u.sess, &proto.Status{Req: req, Code: code, Detail: detail, Room: room})
	}
}

// handleRequestLocked runs the first steps of a chat request from u.
func (c *Central) handleRequestLocked(u *user, m *proto.Request) {
	id := randomID("q-", 8)
	c.statusLocked(u, id, proto.AckConn, "", "")
	invalid := func(format string, args ...any) {
		c.countRequest(proto.ReqInvalid)
		c.statusLocked(u, id, proto.ReqInvalid, fmt.Sprintf(format, args...), "")
	}
	if !u.reqLimit.allow(c.now(), c.cfg.RequestRate, c.cfg.RequestBurst) {
		invalid("too many chat requests: at most %g a second (bursts of %d)", c.cfg.RequestRate, c.cfg.RequestBurst)
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
		case v.sess == nil:
			c.countRequest(proto.UserNotFound)
			c.statusLocked(u, id, proto.UserNotFound, fmt.Sprintf("user %s is not connected", to), "")
			return
		}
		members = append(members, v)
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	key := strings.Join(sorted, "\x00")
	if prev := c.reqByKey[key]; prev != nil {
		invalid("request %s between the same users is already pending", prev.id)
		return
	}
	now := c.now()
	q := &request{id: id, key: key, from: u, members: members, waiting: map[*user]struct{}{}, created: now, lastAwait: now}
	c.reqs[id] = q
	c.reqByKey[key] = q
	for _, v := range members {
		v.reqs[q] = struct{}{}
		if v != u {
			q.waiting[v] = struct{}{}
			c.sendLocked(v.sess, &proto.Incoming{Req: id, From: u.name, Members: names})
		}
	}
	c.statusLocked(u, id, proto.ReqSent, "", "")
}

// finishLocked ends q with a final status, told to every member still
// online (the invitees too, so they can drop the prompt).
func (c *Central) finishLocked(q *request, code proto.StatusCode, detail, room string) {
	if c.reqs[q.id] != q {
		return
	}
	delete(c.reqs, q.id)
	delete(c.reqByKey, q.key)
	c.countRequest(code)
	for _, v := range q.members {
		delete(v.reqs, q)
		c.statusLocked(v, q.id, code, detail, room)
	}
}

// handleAnswerLocked applies u's answer to a request.
func (c *Central) handleAnswerLocked(cn *conn, u *user, m *proto.Answer) {
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
	r, rtt, err := c.placeLocked(q)
	if err != nil {
		c.log.Warn("no server for new room", "req", q.id, "err", err)
		c.finishLocked(q, proto.ServerErr, "no chat server can host this room: "+err.Error(), "")
		return
	}
	c.finishLocked(q, proto.ReqAccepted, "", r.id)
	c.pushAssignLocked(r, "new room", "", 0, rtt, r.created)
}

// placeLocked chooses a server for q's members and creates the room at
// epoch 1.
func (c *Central) placeLocked(q *request) (*room, time.Duration, error) {
	c.syncSelLocked()
	c.refreshDirtyLocked()
	now := c.now()
	r := &room{epoch: 1, members: slices.Clone(q.members), created: now, lastMove: now}
	c.refreshMatrix(r)
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
	c.insertRoomLocked(r)
	c.sel[ch.Index].Full = r.srv.full()
	c.storeErr("put room", c.st.PutRoom(r.record()))
	c.log.Info("room created", "room", r.id, "server", r.srv.rec.ID, "members", r.memberNames(), "rtt", ch.Max)
	return r, ch.Max, nil
}

// tickRequestsLocked sends AWAITING_REQ and ends requests that timed out.
func (c *Central) tickRequestsLocked(now time.Time) {
	for _, q := range c.reqs {
		switch {
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

// push is an Assign that a member has not acknowledged yet.
type push struct {
	u     *user
	room  string
	epoch uint64
	frame []byte // immutable once built: AsyncWrite may still hold it
	first time.Time
	next  time.Time
	tries int
}

// pushAssignLocked sends r's placement to every member and keeps it until
// acknowledged. A newer epoch replaces an older pending push for the room.
func (c *Central) pushAssignLocked(r *room, reason, prev string, prevRTT, rtt time.Duration, now time.Time) {
	m := &proto.Assign{
		Room: r.id, Epoch: r.epoch, Server: proto.ServerRef{ID: r.srv.rec.ID, Addr: r.srv.rec.Addr},
		Members: r.memberNames(), Reason: reason, Prev: prev, PrevRTT: prevRTT, RTT: rtt,
	}
	for _, u := range r.members {
		c.dropPushLocked(u, r.id)
		frame, err := c.assignFrame(m, u.name, now)
		if err != nil {
			c.log.Error("encode assign", "room", r.id, "err", err)
			return
		}
		p := &push{u: u, room: r.id, epoch: r.epoch, frame: frame, first: now, next: now}
		u.pushes[r.id] = p
		c.pushes[p] = struct{}{}
		c.sendPushLocked(p, now)
	}
}

// assignFrame encodes m for one member, with that member's own ticket when
// Central signs tickets. Each frame is built fresh: pushes keep theirs
// immutable while AsyncWrite may hold it.
func (c *Central) assignFrame(m *proto.Assign, user string, now time.Time) ([]byte, error) {
	m.Ticket = nil
	if c.cfg.TicketKey != nil {
		t, err := ticket.Sign(c.cfg.TicketKey, ticket.Claims{Room: m.Room, User: user, Epoch: m.Epoch,
			Expires: now.Add(c.cfg.TicketTTL).Unix()})
		if err != nil {
			return nil, err
		}
		m.Ticket = t
	}
	return wire.AppendFrame(nil, m)
}

func (c *Central) sendPushLocked(p *push, now time.Time) {
	if p.u.sess == nil {
		return
	}
	p.tries++
	p.next = now.Add(c.cfg.AssignRetry)
	c.writeLocked(p.u.sess, p.frame)
}

func (c *Central) dropPushLocked(u *user, room string) {
	if p := u.pushes[room]; p != nil {
		delete(u.pushes, room)
		delete(c.pushes, p)
	}
}

// ackLocked clears u's push for the room once it follows that epoch.
func (c *Central) ackLocked(u *user, m *proto.AssignAck) {
	if p := u.pushes[m.Room]; p != nil && m.Epoch >= p.epoch {
		c.dropPushLocked(u, m.Room)
	}
}

// tickPushesLocked resends due pushes and gives up on old ones.
func (c *Central) tickPushesLocked(now time.Time) {
	for p := range c.pushes {
		switch {
		case now.Sub(p.first) >= c.cfg.AssignGiveUp:
			c.log.Warn("assign never acknowledged; giving up", "user", p.u.name, "room", p.room, "epoch", p.epoch, "tries", p.tries)
			c.dropPushLocked(p.u, p.room)
		case !now.Before(p.next):
			c.sendPushLocked(p, now)
		}
	}
}
