package chatserver

import (
	"fmt"
	"sync"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/ticket"
)

// revocations are the tickets Central has withdrawn before their expiry
// (centralapi.Revocation), read from its heartbeat answers: a room that
// moved on voids its older epochs here too, and a member that left the
// room may not come back with the ticket it had, nor stay.
type revocations struct {
	mu    sync.Mutex
	log   string // Central's log id
	seq   uint64 // last entry applied
	rooms map[string][]centralapi.Revocation
}

// cursor returns how much of Central's log is applied. Safe for
// concurrent use.
func (v *revocations) cursor() (string, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.log, v.seq
}

// revoked returns why the ticket c is revoked, or "". Safe for concurrent
// use.
func (v *revocations) revoked(c ticket.Claims) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range v.rooms[c.Room] {
		if r.User != "" && r.User != c.User {
			continue
		}
		if c.Epoch < r.Epoch {
			return fmt.Sprintf("ticket is for epoch %d; room %q has moved on to epoch %d", c.Epoch, c.Room, r.Epoch)
		}
		if r.Before != 0 && c.Issued <= r.Before {
			return fmt.Sprintf("ticket was withdrawn: %s left room %q after it was issued", c.User, c.Room)
		}
	}
	return ""
}

// applyRevocations takes in Central's heartbeat answer and drops the
// members it revokes. Safe for concurrent use.
func (s *Server) applyRevocations(resp *centralapi.HeartbeatResponse) {
	if s.cfg.TicketKey == nil || resp.RevokeLog == "" {
		return
	}
	v := &s.revoked
	now := time.Now().Unix()
	v.mu.Lock()
	if v.rooms == nil {
		v.rooms = map[string][]centralapi.Revocation{}
	}
	// Entries already held stay whatever log they came from: they are
	// still true.
	for id, rs := range v.rooms {
		keep := rs[:0]
		for _, r := range rs {
			if r.Until >= now {
				keep = append(keep, r)
			}
		}
		if len(keep) == 0 {
			delete(v.rooms, id)
		} else {
			v.rooms[id] = keep
		}
	}
	var drop []centralapi.Revocation
	for _, r := range resp.Revocations {
		if r.Until < now || proto.CheckRoom(r.Room) != nil {
			continue
		}
		v.rooms[r.Room] = append(v.rooms[r.Room], r)
		if r.Before != 0 {
			drop = append(drop, r)
		}
	}
	v.log, v.seq = resp.RevokeLog, resp.RevokeSeq
	v.mu.Unlock()
	for _, r := range drop {
		s.dropRevoked(r)
	}
}

// dropRevoked closes the members of r.Room admitted with a ticket r
// revokes, each told why. Safe for concurrent use.
func (s *Server) dropRevoked(rv centralapi.Revocation) {
	s.mu.Lock()
	r := s.rooms[rv.Room]
	s.mu.Unlock()
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	var out []*member
	for _, m := range r.members {
		if (rv.User == "" || m.user == rv.User) && m.issued <= rv.Before {
			out = append(out, m)
		}
	}
	for _, m := range out {
		s.log.Info("dropping a member whose ticket Central withdrew", "room", r.id, "user", m.user)
		s.detach(r, m, nil)
		r.ev++
		m.loop.push(item{target: m, f: s.sharedError(proto.CodeUnauthorized, "your ticket for this room was withdrawn: you left it"), ev: r.ev, bye: true}, nil)
	}
}
