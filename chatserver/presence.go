package chatserver

import (
	"slices"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// presBatch is a run of a room's joins and leaves on their way to one
// shard's members: Presence frames, encoded once, with the fan-out number
// of each and the member it is not for (the one joining or leaving). It is
// open (its shard's pres) until its loop takes it or something else is
// queued for the shard; while open, changes are appended under the room's
// mutex, so the loop takes it under that mutex too.
type presBatch struct {
	frames []byte // Presence frames, concatenated
	offs   []int  // where each change's frame starts in frames
	evs    []uint64
	skips  []*member
	about  []string // the user each change is about
	queued bool     // an item for it is on the loop's queue
	timed  bool     // a timer will queue it
}

// add appends one change about user. A change about the same user already
// in the batch is taken out first: the members learn where the user is
// now, and a user that rejoins in a loop (or a client reconnecting, whose
// Join replaces its old connection, a leave and a join at once) costs
// each member at most one change a batch however fast it loops. The
// changes stay in event order, so a member that joined in between (its
// Joined listed the older state) still gets the newer.
func (b *presBatch) add(user string, enc []byte, ev uint64, skip *member) {
	if k := slices.Index(b.about, user); k >= 0 {
		end := len(b.frames)
		if k+1 < len(b.offs) {
			end = b.offs[k+1]
		}
		cut := end - b.offs[k]
		b.frames = slices.Delete(b.frames, b.offs[k], end)
		for i := k + 1; i < len(b.offs); i++ {
			b.offs[i] -= cut
		}
		b.offs = slices.Delete(b.offs, k, k+1)
		b.evs = slices.Delete(b.evs, k, k+1)
		b.skips = slices.Delete(b.skips, k, k+1)
		b.about = slices.Delete(b.about, k, k+1)
	}
	b.offs = append(b.offs, len(b.frames))
	b.frames = append(b.frames, enc...)
	b.evs = append(b.evs, ev)
	b.skips = append(b.skips, skip)
	b.about = append(b.about, user)
}

// A change after a quiet spell goes out at once. A change that comes
// within the shard's gap of its last batch waits for the gap to pass,
// gathering the changes meanwhile, and each batch that waited doubles the
// gap, from presenceGap up to maxPresenceGap; a batch that did not wait
// resets it. So a burst of joins (a room forming, a server's rooms moving
// in) costs each member a few frames, one per gap, however fast or slowly
// the joiners' connections reach the loops, and a lone change is never
// held back.
const (
	presenceGap    = 10 * time.Millisecond
	maxPresenceGap = time.Second
)

// maxPresBatch bounds the changes a batch gathers: one that holds this
// many is queued at once, whatever the gap, so a flood of joins and
// leaves (a member reconnecting in a loop) cannot grow it. A variable so
// tests can hit it with few members.
var maxPresBatch = presencesMembers

// presence tells every member of r but skip of a join or leave. Caller
// holds r.mu. from is the loop the caller runs on.
func (r *room) presence(p *proto.Presence, skip *member, from *loop) {
	r.ev++
	var now time.Time
	var enc []byte
	for _, sh := range r.shards {
		n := sh.count
		if skip != nil && skip.shard == sh {
			n--
		}
		if n <= 0 {
			continue
		}
		if enc == nil {
			enc, _ = wire.AppendFrame(nil, p)
			now = time.Now()
		}
		b := sh.pres
		if b == nil {
			b = new(presBatch)
			sh.pres = b
		}
		b.add(p.User, enc, r.ev, skip)
		switch wait := sh.presAt.Add(sh.presGap).Sub(now); {
		case b.queued:
		case len(b.evs) >= maxPresBatch:
			sh.pres = nil // the changes after these start a new batch
			b.queued = true
			sh.loop.push(item{sh: sh, pb: b, at: r.srv.stamp(from)}, from)
		case b.timed:
		case wait <= 0:
			sh.presGap = presenceGap
			b.queued = true
			sh.loop.push(item{sh: sh, pb: b, at: r.srv.stamp(from)}, from)
		default:
			b.timed = true
			time.AfterFunc(wait, func() {
				r.mu.Lock()
				if sh.pres == b && !b.queued {
					b.queued = true
					sh.loop.push(item{sh: sh, pb: b, at: r.srv.stamp(nil)}, nil)
				}
				r.mu.Unlock()
			})
		}
	}
}

// closePres queues sh's open batch of joins and leaves, if any, so that
// what the caller queues next for sh comes after it. Caller holds the
// room's mutex.
func (sh *shard) closePres(from *loop) {
	b := sh.pres
	if b == nil {
		return
	}
	sh.pres = nil
	if !b.queued {
		b.queued = true
		sh.loop.push(item{sh: sh, pb: b, at: sh.room.srv.stamp(from)}, from)
	}
}

// deliverPresence writes a batch of joins and leaves to its shard's
// members: one Presences frame to a member that speaks version 3 or later (more
// only when they would not fit in one frame), the Presence frames as they
// are to one that speaks version 2. A member the batch names as joining or
// leaving, or that joined after some of the changes (its Joined listed
// those), gets its own selection. Event loop only.
func (l *loop) deliverPresence(it *item) {
	sh, b := it.sh, it.pb
	r := sh.room
	r.mu.Lock()
	if sh.pres == b {
		sh.pres = nil
	}
	sh.presAt = time.Now()
	if b.timed {
		sh.presGap = min(2*sh.presGap, maxPresenceGap)
	}
	r.mu.Unlock()

	max := l.srv.cfg.MaxOutbound
	var common []byte // the whole batch in one Presences frame
	ncommon := 0
	members := &sh.members
	for i := 0; i < len(*members); i++ {
		m := (*members)[i]
		switch {
		case m.joinEv >= b.evs[0] || b.names(m):
			var n int
			if l.own, n = l.encodePres(l.own[:0], b, m, m.v2); n > 0 {
				m.writeN(l.own, max, n)
			}
		case m.v2:
			m.writeN(b.frames, max, len(b.evs))
		default:
			if common == nil {
				common, ncommon = l.encodePres(l.batch[:0], b, nil, false)
				l.batch = common
			}
			m.writeN(common, max, ncommon)
		}
		// A failed write closes m on the spot and OnClose moves the last
		// member into its slot: look at the slot again.
		if i < len(*members) && (*members)[i] != m {
			i--
		}
	}
}

// names reports whether m is the member one of b's changes is about.
func (b *presBatch) names(m *member) bool {
	for _, x := range b.skips {
		if x == m {
			return true
		}
	}
	return false
}

// encodePres appends to dst the changes of b that m is to get (all of
// them when m is nil; else those not about m and after it joined), as
// Presence frames when v2, else in Presences frames, and returns dst and
// the number of frames appended. Event loop only.
func (l *loop) encodePres(dst []byte, b *presBatch, m *member, v2 bool) ([]byte, int) {
	frames, n, rest := 0, 0, b.frames
	l.pres = l.pres[:0] // the Presence frames gathered for the next Presences
	flush := func() {
		switch {
		case n == 0:
		case v2 || n == 1:
			dst = append(dst, l.pres...)
			frames += n
		default:
			dst = proto.AppendPresences(dst, n, l.pres)
			frames++
		}
		l.pres, n = l.pres[:0], 0
	}
	for k, ev := range b.evs {
		size, _ := wire.FrameLen(rest, wire.MaxFrame)
		f := rest[:size]
		rest = rest[size:]
		if m != nil && (b.skips[k] == m || ev <= m.joinEv) {
			continue
		}
		if len(l.pres)+len(f) > wire.MaxFrame-64 {
			flush()
		}
		l.pres = append(l.pres, f...)
		n++
	}
	flush()
	return dst, frames
}
