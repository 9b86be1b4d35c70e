package client

import (
	"time"

	"nearchat/pkg/proto"
)

// inbox restores each sender's order and removes duplicates. Messages are
// numbered per sender, so (sender, number) identifies one exactly; a message
// that arrives ahead of a gap is held until the gap fills, for at most
// gapTimeout and maxHeld messages, after which the gap is reported as missed
// and delivery goes on. Loop-owned; not safe for concurrent use.
type inbox struct {
	holdBack   time.Duration // a gap this old triggers a Resend
	gapTimeout time.Duration // a gap this old is given up
	maxHeld    int
	peers      map[string]*sender
}

type sender struct {
	cursor   uint64 // last number delivered in order
	known    uint64 // highest number the sender is known to have sent
	held     map[uint64]proto.Deliver
	gapSince time.Time // when the current gap was noticed; zero if none
	asked    time.Time // when we last asked for it again
}

// gap is a range of a sender's messages given up as lost.
type gap struct {
	from        string
	first, last uint64
}

// ask is a Resend to request.
type ask struct {
	of    string
	after uint64
}

func newInbox(holdBack, gapTimeout time.Duration, maxHeld int) *inbox {
	return &inbox{holdBack: holdBack, gapTimeout: gapTimeout, maxHeld: maxHeld, peers: make(map[string]*sender)}
}

func (in *inbox) peer(user string) *sender {
	p := in.peers[user]
	if p == nil {
		p = &sender{}
		in.peers[user] = p
	}
	return p
}

// cursor returns the last number of user delivered in order.
func (in *inbox) cursor(user string) uint64 {
	if p := in.peers[user]; p != nil {
		return p.cursor
	}
	return 0
}

// accept takes one Deliver. It returns the messages now deliverable, in
// order, and whether d was a duplicate (and dropped).
func (in *inbox) accept(d proto.Deliver, now time.Time) (ready []proto.Deliver, dup bool) {
	p := in.peer(d.From)
	if d.Num > p.known {
		p.known = d.Num
	}
	if d.Num <= p.cursor {
		return nil, true
	}
	if _, ok := p.held[d.Num]; ok {
		return nil, true
	}
	if d.Num != p.cursor+1 {
		if p.held == nil {
			p.held = make(map[uint64]proto.Deliver)
		}
		p.held[d.Num] = d
		if p.gapSince.IsZero() {
			p.gapSince = now
		}
		if len(p.held) > in.maxHeld {
			return in.giveUp(d.From, p, now, nil), false
		}
		return nil, false
	}
	p.cursor = d.Num
	ready = append(ready, d)
	return in.release(p, now, ready), false
}

// release appends the held messages that follow the cursor.
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
	p.gapSince = time.Time{}
	if len(p.held) > 0 || p.known > p.cursor {
		p.gapSince = now
	}
	return ready
}

// giveUp skips the cursor over the first gap of p, recording it in *gaps
// when gaps is not nil, and returns what that releases.
func (in *inbox) giveUp(from string, p *sender, now time.Time, gaps *[]gap) []proto.Deliver {
	next := p.known + 1
	for n := range p.held {
		if n < next {
			next = n
		}
	}
	if gaps != nil && next > p.cursor+1 {
		*gaps = append(*gaps, gap{from: from, first: p.cursor + 1, last: next - 1})
	}
	p.cursor = next - 1
	return in.release(p, now, nil)
}

// announce records that user has sent up to last (from Joined or
// Presence). A last beyond the cursor opens a tail gap.
func (in *inbox) announce(user string, last uint64, now time.Time) {
	p := in.peer(user)
	if last > p.known {
		p.known = last
	}
	if p.known > p.cursor && p.gapSince.IsZero() {
		p.gapSince = now
	}
}

// missed applies a Missed: user no longer holds first..last. The cursor
// skips over them when it has reached first-1; it returns what that
// releases and the range actually skipped.
func (in *inbox) missed(user string, first, last uint64, now time.Time) ([]proto.Deliver, gap) {
	p := in.peer(user)
	if last <= p.cursor || first > p.cursor+1 {
		return nil, gap{}
	}
	g := gap{from: user, first: p.cursor + 1, last: last}
	p.cursor = last
	for n := range p.held {
		if n <= last {
			delete(p.held, n)
		}
	}
	if last > p.known {
		p.known = last
	}
	return in.release(p, now, nil), g
}

// lagging lists the senders known to have sent past the cursor, and
// counts them as asked now. Every open gap's clock restarts: lagging is
// called when gaps become recoverable again, and the time spent waiting
// for that must not count against them.
func (in *inbox) lagging(now time.Time) []ask {
	var out []ask
	for u, p := range in.peers {
		if !p.gapSince.IsZero() {
			p.gapSince = now
		}
		if p.known > p.cursor {
			p.asked, p.gapSince = now, now
			out = append(out, ask{of: u, after: p.cursor})
		}
	}
	return out
}

// tick runs the timers: a gap older than holdBack is asked for again (every
// holdBack), one older than gapTimeout is given up. With quiet set (the old
// server may still deliver) nothing is asked or given up yet.
func (in *inbox) tick(now time.Time, quiet bool) (asks []ask, gaps []gap, ready []proto.Deliver) {
	if quiet {
		return nil, nil, nil
	}
	for u, p := range in.peers {
		if p.gapSince.IsZero() {
			continue
		}
		if now.Sub(p.gapSince) >= in.gapTimeout {
			ready = append(ready, in.giveUp(u, p, now, &gaps)...)
			continue
		}
		if now.Sub(p.gapSince) >= in.holdBack && now.Sub(p.asked) >= in.holdBack {
			p.asked = now
			asks = append(asks, ask{of: u, after: p.cursor})
		}
	}
	return asks, gaps, ready
}

// next returns when tick has work to do, zero if never.
func (in *inbox) next() time.Time {
	var t time.Time
	for _, p := range in.peers {
		if p.gapSince.IsZero() {
			continue
		}
		a := p.gapSince.Add(in.holdBack)
		if again := p.asked.Add(in.holdBack); again.After(a) {
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
