// Relocation: the scan and the decisions it makes, the pushes that carry
// a room's placement to its members until they acknowledge it, and the
// members' reports that a room's server is unreachable.

package central

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/rtt"
	"nearchat/pkg/selection"
	"nearchat/pkg/ticket"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

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
func (c *Central) decide(r *room, now time.Time, rnd *rand.Rand) (move, bool) {
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
func (c *Central) evaluateLocked(r *room, now time.Time, rnd *rand.Rand) {
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

func (c *Central) scanRange(lo, hi int, now time.Time, rnd *rand.Rand, out []move) []move {
	for _, r := range c.rooms[lo:hi] {
		if mv, ok := c.decide(r, now, rnd); ok {
			out = append(out, mv)
		}
	}
	return out
}

// chunkCounter hands out consecutive ranges of the room slice to scan
// workers.
type chunkCounter struct{ n atomic.Int64 }

func (k *chunkCounter) take(size int) int { return int(k.n.Add(int64(size))) - size }

// kickScan asks the scan loop to run now; it never blocks.
func (c *Central) kickScan() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Central) scanLoop() {
	t := time.NewTicker(c.cfg.ScanInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		c.mu.Lock()
		c.scanLocked()
		c.mu.Unlock()
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

// unreachableLocked handles a member's report that its room's server is
// gone: a member behind the room's current placement is simply told it
// again; otherwise Central checks the server itself.
func (c *Central) unreachableLocked(cn *conn, u *user, m *proto.Unreachable) {
	r := c.roomByID[m.Room]
	if r == nil || !r.hasMember(u) {
		c.sendLocked(cn, &proto.Error{Code: proto.CodeNotFound, Reason: "you are not a member of this room", Ref: m.Room})
		return
	}
	if r.srv == nil || r.epoch != m.Epoch || r.srv.rec.ID != m.Server {
		if p := u.pushes[r.id]; p != nil {
			c.sendPushLocked(p, c.now())
		} else if r.srv != nil {
			c.resendPlacementLocked(u, r)
		}
		return
	}
	r.srv.reporters = append(r.srv.reporters, reporter{u, r})
	c.probeLocked(r.srv)
}

// resendPlacementLocked pushes r's current placement to u alone.
func (c *Central) resendPlacementLocked(u *user, r *room) {
	now := c.now()
	frame, err := c.assignFrame(&proto.Assign{
		Room: r.id, Epoch: r.epoch, Server: proto.ServerRef{ID: r.srv.rec.ID, Addr: r.srv.rec.Addr},
		Members: r.memberNames(), Reason: "current placement",
	}, u.name, now)
	if err != nil {
		return
	}
	p := &push{u: u, room: r.id, epoch: r.epoch, frame: frame, first: now, next: now}
	u.pushes[r.id] = p
	c.pushes[p] = struct{}{}
	c.sendPushLocked(p, now)
}

// probeLocked starts one echo check of s unless one is running.
func (c *Central) probeLocked(s *serverRec) {
	if s.probing || s.rec.Down || s.gone {
		return
	}
	s.probing = true
	addr, id := s.rec.Addr, s.rec.ID
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ProbeTimeout)
		err := echo(ctx, addr, c.cfg.ChatTLS)
		cancel()
		c.mu.Lock()
		s.probing = false
		down := err != nil && c.ctx.Err() == nil && c.srvByID[id] == s
		if down {
			c.markDownLocked(s, "reported unreachable and failed Central's echo check: "+err.Error())
		} else if err == nil {
			for _, rep := range s.reporters {
				if rep.r.srv == s && rep.r.hasMember(rep.u) && c.roomByID[rep.r.id] == rep.r {
					c.resendPlacementLocked(rep.u, rep.r)
				}
			}
		}
		s.reporters = nil
		c.mu.Unlock()
		if down {
			c.kickScan()
		} else if err == nil {
			c.log.Info("server reported unreachable answers Central's echo", "server", id)
		}
	}()
}

// echo checks that a chat server answers Hello and one Ping.
func echo(ctx context.Context, addr string, tc *tls.Config) error {
	var d rtt.Dialer = &net.Dialer{}
	if tc != nil {
		d = &tlsconfig.Dialer{Config: tc}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	var out []byte
	out, _ = wire.AppendFrame(out, &proto.Hello{V: wire.Version, Agent: "central/1"})
	out, _ = wire.AppendFrame(out, &proto.Ping{ID: 1, At: time.Now().UnixNano()})
	if _, err := nc.Write(out); err != nil {
		return err
	}
	var buf []byte
	tmp := make([]byte, 4096)
	for welcomed := false; ; {
		t, body, n, err := wire.ParseFrame(buf, wire.MaxFrame)
		if errors.Is(err, wire.ErrIncomplete) {
			k, rerr := nc.Read(tmp)
			if rerr != nil {
				return rerr
			}
			buf = append(buf, tmp[:k]...)
			continue
		}
		if err != nil {
			return err
		}
		msg, err := proto.Decode(t, body)
		if err != nil {
			return err
		}
		buf = buf[n:]
		switch m := msg.(type) {
		case *proto.Welcome:
			welcomed = true
		case *proto.Pong:
			if welcomed && m.ID == 1 {
				return nil
			}
		case *proto.Error:
			return m
		}
	}
}
