package client

import "nearchat/pkg/proto"

// outbox numbers this member's messages and keeps what a Resend or a move
// may need again: every unacknowledged message, and the last window
// acknowledged ones. Loop-owned; not safe for concurrent use.
type outbox struct {
	window int
	last   uint64 // highest number handed out
	base   uint64 // msgs[0] has number base+1
	msgs   []proto.Chat
	acked  []bool
	upTo   uint64 // every number <= upTo is acknowledged
	nAck   int    // acknowledged messages among msgs above upTo
	keep   uint64 // messages numbered from keep on stay past the window (0: none)
}

func newOutbox(window int) *outbox { return &outbox{window: window} }

// add numbers a new message.
func (o *outbox) add(text string, at int64) proto.Chat {
	o.last++
	c := proto.Chat{Num: o.last, At: at, Text: text}
	o.msgs = append(o.msgs, c)
	o.acked = append(o.acked, false)
	return c
}

// ack marks num acknowledged and forgets what falls out of the window. It
// returns the message newly acknowledged (valid until the next call), or
// nil for a number it never handed out, forgot, or had acknowledged.
func (o *outbox) ack(num uint64) *proto.Chat {
	if num <= o.upTo || num > o.last || num <= o.base {
		return nil
	}
	i := int(num - o.base - 1)
	if o.acked[i] {
		return nil
	}
	o.acked[i] = true
	c := o.msgs[i]
	o.nAck++
	for o.upTo < o.last && o.acked[o.upTo-o.base] {
		o.upTo++
		o.nAck--
	}
	o.trim()
	return &c
}

// hold keeps the messages numbered from n on (0: none) past the window,
// until hold is called again: a Resend answer has yet to write them.
func (o *outbox) hold(n uint64) {
	o.keep = n
	o.trim()
}

// trim forgets the acknowledged messages that fall out of the window and
// are not held.
func (o *outbox) trim() {
	for o.upTo > o.base && int(o.upTo-o.base) > o.window && (o.keep == 0 || o.base+1 < o.keep) {
		o.msgs[0] = proto.Chat{}
		o.msgs, o.acked = o.msgs[1:], o.acked[1:]
		o.base++
	}
}

// get returns message num, which must be unacknowledged (so still kept).
func (o *outbox) get(num uint64) *proto.Chat { return &o.msgs[num-o.base-1] }

// unacked returns the messages not yet acknowledged, in order.
func (o *outbox) unacked() []proto.Chat {
	var out []proto.Chat
	for i := int(o.upTo - o.base); i < len(o.msgs); i++ {
		if !o.acked[i] {
			out = append(out, o.msgs[i])
		}
	}
	return out
}

// pending counts unacknowledged messages.
func (o *outbox) pending() int { return int(o.last-o.upTo) - o.nAck }
