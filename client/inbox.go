package client

import (
	"slices"
	"time"

	"nearchat/pkg/proto"
)

// inbox restores each sender's order and removes duplicates. Messages are
// numbered per sender incarnation, so (sender, incarnation, number)
// identifies one exactly; a message that arrives ahead of a gap is held
// until the gap fills, for at most gapTimeout and maxHeld messages. Every
// number the inbox gives up on comes back as a gap for the user to be told
// about: nothing is ever skipped silently, and nothing held is discarded.
// Loop-owned; not safe for concurrent use.
type inbox struct {
	holdBack   time.Duration // a gap this old triggers a Resend
	gapTimeout time.Duration // a gap this old is given up
	maxHeld    int
	peers      map[string]*sender
	// gaps is false only when no sender has a gap (gapSince zero for all):
	// next and tick, called on every turn of the session loop, then skip
	// the senders. Set whenever a gap opens, cleared by next when it
	// finds none (iterating the map each turn was 3% of the CPU of a
	// process of 2,400 members, none of them with a gap).
	gaps bool
}

type sender struct {
	inc      uint64 // incarnation the numbers below belong to
	cursor   uint64 // last number delivered in order
	known    uint64 // highest number the sender is known to have sent
	held     map[uint64]proto.Deliver
	gapSince time.Time     // when the current gap was noticed or last made progress; zero if none
	asked    time.Time     // when we last asked for it again
	wait     time.Duration // how long after asked to ask again; doubles while nothing arrives

	// The incarnation before inc, closed out up to prevCursor: its frames
	// that still arrive (a history replay) are delivered past it, in order.
	prevInc, prevCursor uint64
}

// Reasons a gap is given up, as the user is told them.
const (
	reasonGone    = "the sender no longer has them"
	reasonTimeout = "not received in time"
	reasonHeld    = "too many later messages held behind them"
	reasonRestart = "the sender restarted before they arrived"
)

// gap is a range of a sender's messages given up as lost, and why.
type gap struct {
	from        string
	inc         uint64
	first, last uint64
	reason      string
}

// ask is a Resend to request.
type ask struct {
	of    string
	inc   uint64
	after uint64
}

func newInbox(holdBack, gapTimeout time.Duration, maxHeld int) *inbox {
	return &inbox{holdBack: holdBack, gapTimeout: gapTimeout, maxHeld: maxHeld, peers: make(map[string]*sender)}
}

// peer returns user's state, made if new, or nil for a new one past
// maxPeers.
func (in *inbox) peer(user string) *sender {
	p := in.peers[user]
	if p == nil {
		if len(in.peers) >= maxPeers {
			return nil // see maxPeers
		}
		p = &sender{}
		in.peers[user] = p
	}
	return p
}

// maxPeers bounds the senders an inbox learns of, from announcements
// (Joined, Presence) and from messages alike, and the members a link
// keeps: a chat server announcing made-up members by the thousand (500 a
// frame, 1,000 frames a second) grew a client to 3.7 GB in 45 s, and each
// announced member's tail gap sent a Resend; later, 3 million made-up
// members, or 538,000 made-up senders, still grew one past 400 MB (abuse
// probe, 2026-12-03). A room holds at most 10,000 members (the chat
// server's default).
const maxPeers = 1 << 16

// cursor returns the last number of user delivered in order.
func (in *inbox) cursor(user string) uint64 {
	if p := in.peers[user]; p != nil {
		return p.cursor
	}
	return 0
}

// maxNumJump bounds how far past the cursor a sender's number may be
// taken: no sender sends 2^32 messages while it is not delivered, and a
// number near 2^64 made every number below it a hole and, once its next
// was computed, wrapped to 0 and spun the session forever (abuse probe,
// 2026-12-03). Such a Deliver, or announcement, is dropped.
const maxNumJump = 1 << 32

// incarnation moves p to incarnation inc if that is newer than the one it
// follows: whatever the old incarnation still owed is given up (held
// messages delivered, holes reported) and numbering starts afresh. It
// reports false for an older incarnation.
func (in *inbox) incarnation(from string, p *sender, inc uint64, now time.Time) (ok bool, ready []proto.Deliver, gaps []gap) {
	switch {
	case inc == p.inc:
		return true, nil, nil
	case inc < p.inc:
		return false, nil, nil
	}
	for p.known > p.cursor || len(p.held) > 0 {
		ready = append(ready, in.giveUp(from, p, now, &gaps, reasonRestart)...)
	}
	*p = sender{inc: inc, prevInc: p.inc, prevCursor: p.cursor}
	return true, ready, gaps
}

// accept takes one Deliver. It returns the messages now deliverable, in
// order, the gaps given up on the way, and whether d was a duplicate (and
// dropped).
func (in *inbox) accept(d proto.Deliver, now time.Time) (ready []proto.Deliver, gaps []gap, dup bool) {
	p := in.peer(d.From)
	if p == nil {
		return nil, nil, true // see maxPeers: senders count, not only announcements
	}
	ok, ready, gaps := in.incarnation(d.From, p, d.Inc, now)
	if !ok {
		return in.late(p, d)
	}
	if d.Num > p.cursor && d.Num-p.cursor > maxNumJump {
		return ready, gaps, true // see maxNumJump
	}
	if d.Num > p.known {
		p.known = d.Num
	}
	if d.Num <= p.cursor {
		return ready, gaps, true
	}
	if _, ok := p.held[d.Num]; ok {
		return ready, gaps, true
	}
	if d.Num != p.cursor+1 {
		if p.held == nil {
			p.held = make(map[uint64]proto.Deliver)
		}
		p.held[d.Num] = d
		if p.gapSince.IsZero() {
			p.gapSince, in.gaps = now, true
		}
		if len(p.held) > in.maxHeld {
			ready = append(ready, in.giveUp(d.From, p, now, &gaps, reasonHeld)...)
		}
		return ready, gaps, false
	}
	p.cursor = d.Num
	ready = append(ready, d)
	return in.release(p, now, ready), gaps, false
}

// late takes a Deliver of an incarnation older than the sender's current
// one: one of the incarnation just closed out and past what was delivered
// or reported of it is delivered, after a report of any hole before it;
// anything else is a duplicate.
func (in *inbox) late(p *sender, d proto.Deliver) ([]proto.Deliver, []gap, bool) {
	if d.Inc != p.prevInc || d.Num <= p.prevCursor {
		return nil, nil, true
	}
	var gaps []gap
	if d.Num > p.prevCursor+1 {
		gaps = append(gaps, gap{from: d.From, inc: d.Inc, first: p.prevCursor + 1, last: d.Num - 1, reason: reasonRestart})
	}
	p.prevCursor = d.Num
	return []proto.Deliver{d}, gaps, false
}

// release appends the held messages that follow the cursor. Any progress
// restarts the gap clocks: an answer still arriving is not asked for again.
func (in *inbox) release(p *sender, now time.Time, ready []proto.Deliver) []proto.Deliver {
	for len(p.held) > 0 {
		d, ok := p.held[p.cursor+1]
		if !ok {
			break
		}
		delete(p.held, d.Num)
		p.cursor = d.Num
		ready = append(ready, d)
	}
	p.gapSince, p.wait = time.Time{}, 0
	if len(p.held) > 0 || p.known > p.cursor {
		p.gapSince, in.gaps = now, true
	}
	return ready
}

// giveUp skips the cursor over the first gap of p, recording it in *gaps
// with reason, and returns what that releases.
func (in *inbox) giveUp(from string, p *sender, now time.Time, gaps *[]gap, reason string) []proto.Deliver {
	next := p.known + 1
	for n := range p.held {
		if n < next {
			next = n
		}
	}
	if next > p.cursor+1 {
		*gaps = append(*gaps, gap{from: from, inc: p.inc, first: p.cursor + 1, last: next - 1, reason: reason})
	}
	p.cursor = next - 1
	return in.release(p, now, nil)
}

// announce records that user, in incarnation inc, has sent up to last
// (from Joined or Presence). A last beyond the cursor opens a tail gap; a
// newer incarnation closes out the old one first.
func (in *inbox) announce(user string, inc, last uint64, now time.Time) (ready []proto.Deliver, gaps []gap) {
	p := in.peer(user)
	if p == nil {
		return nil, nil // see maxPeers
	}
	ok, ready, gaps := in.incarnation(user, p, inc, now)
	if !ok {
		return nil, nil
	}
	if last > p.known && last-p.cursor <= maxNumJump {
		p.known = last
	}
	if p.known > p.cursor && p.gapSince.IsZero() {
		p.gapSince, in.gaps = now, true
	}
	return ready, gaps
}

// missed applies a Missed: user, in incarnation inc, no longer holds
// first..last. Messages of that range already held are delivered, never
// discarded; the holes among them are returned as gaps. A Missed that
// does not start at the cursor (stale, or for another incarnation) is
// ignored.
func (in *inbox) missed(user string, inc, first, last uint64, now time.Time) ([]proto.Deliver, []gap) {
	p := in.peers[user]
	if p == nil {
		return nil, nil // nothing of user was expected, so nothing is missed
	}
	if inc != p.inc || last <= p.cursor || first > p.cursor+1 || last-p.cursor > maxNumJump {
		return nil, nil
	}
	var keys []uint64
	for n := range p.held {
		if n <= last {
			keys = append(keys, n)
		}
	}
	slices.Sort(keys)
	var ready []proto.Deliver
	var gaps []gap
	next := p.cursor + 1
	for _, n := range keys {
		if n > next {
			gaps = append(gaps, gap{from: user, inc: inc, first: next, last: n - 1, reason: reasonGone})
		}
		ready = append(ready, p.held[n])
		delete(p.held, n)
		next = n + 1
	}
	if next <= last {
		gaps = append(gaps, gap{from: user, inc: inc, first: next, last: last, reason: reasonGone})
	}
	p.cursor = last
	if last > p.known {
		p.known = last
	}
	return in.release(p, now, ready), gaps
}

// lagging lists the senders known to have sent past the cursor, and
// counts them as asked now. Every open gap's clock restarts: lagging is
// called when gaps become recoverable again, and the time spent waiting
// for that must not count against them.
func (in *inbox) lagging(now time.Time) []ask {
	var out []ask
	for u, p := range in.peers {
		out = in.lagOne(u, p, now, out)
	}
	return out
}

// laggingOf is lagging for sender u alone.
func (in *inbox) laggingOf(u string, now time.Time) []ask {
	if p := in.peers[u]; p != nil {
		return in.lagOne(u, p, now, nil)
	}
	return nil
}

func (in *inbox) lagOne(u string, p *sender, now time.Time, out []ask) []ask {
	if !p.gapSince.IsZero() {
		p.gapSince = now
	}
	if p.known > p.cursor {
		p.asked, p.gapSince, p.wait = now, now, 2*in.holdBack
		in.gaps = true
		out = append(out, ask{of: u, inc: p.inc, after: p.cursor})
	}
	return out
}

// restart starts every open gap's clock afresh, as if just asked for:
// for the time the session did not read, which must not count against them.
func (in *inbox) restart(now time.Time) {
	for _, p := range in.peers {
		if !p.gapSince.IsZero() {
			p.gapSince, p.asked = now, now
		}
	}
}

// tick runs the timers: a gap without progress for holdBack is asked for
// again, after holdBack, then twice that, and so on while nothing arrives
// (an answer over a slow link is not asked for twice); one without
// progress for gapTimeout is given up. With quiet set (the old server may
// still deliver) nothing is asked or given up yet.
func (in *inbox) tick(now time.Time, quiet bool) (asks []ask, gaps []gap, ready []proto.Deliver) {
	if quiet || !in.gaps {
		return nil, nil, nil
	}
	for u, p := range in.peers {
		if p.gapSince.IsZero() {
			continue
		}
		if now.Sub(p.gapSince) >= in.gapTimeout {
			ready = append(ready, in.giveUp(u, p, now, &gaps, reasonTimeout)...)
			continue
		}
		if now.Sub(p.gapSince) >= in.holdBack && now.Sub(p.asked) >= max(p.wait, in.holdBack) {
			p.asked = now
			p.wait = 2 * max(p.wait, in.holdBack)
			asks = append(asks, ask{of: u, inc: p.inc, after: p.cursor})
		}
	}
	return asks, gaps, ready
}

// next returns when tick has work to do, zero if never.
func (in *inbox) next() time.Time {
	var t time.Time
	if !in.gaps {
		return t
	}
	for _, p := range in.peers {
		if p.gapSince.IsZero() {
			continue
		}
		a := p.gapSince.Add(in.holdBack)
		if again := p.asked.Add(max(p.wait, in.holdBack)); again.After(a) {
			a = again
		}
		w := p.gapSince.Add(in.gapTimeout)
		if a.Before(w) {
			w = a
		}
		if t.IsZero() || w.Before(t) {
			t = w
		}
	}
	in.gaps = !t.IsZero()
	return t
}

// held counts messages waiting for a gap to fill.
func (in *inbox) held() int {
	n := 0
	for _, p := range in.peers {
		n += len(p.held)
	}
	return n
}
