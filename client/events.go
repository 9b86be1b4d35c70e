package client

import (
	"time"

	"nearchat/pkg/proto"
)

// Event is one of Message, Presence, Moved, Drained, Missed, Broken or Error, as
// received from Session.Events.
type Event interface{ event() }

// Message is a chat message of another member, delivered exactly once and
// in its sender's order.
type Message struct {
	From string
	Inc  uint64 // the sender's incarnation: a restarted sender numbers from 1 again in a larger one
	Num  uint64 // the sender's message number
	Seq  uint64 // room sequence on the server that relayed it
	At   time.Time
	Text string
	// Latency is the receive time minus the sender's wall-clock At: the
	// end-to-end latency when both clocks agree (same host, or NTP).
	Latency time.Duration
	Server  string // ID of the server that relayed it
}

// Presence reports a member joining (Here) or leaving the room's current
// server. A member moving servers shows up as joining the new one.
type Presence struct {
	User     string
	Here     bool
	LastSent uint64
	Server   string
}

// Moved reports a completed join: the first one (From is zero) and every
// move. Took runs from the start of the join to Joined.
type Moved struct {
	From, To proto.ServerRef
	Epoch    uint64
	Took     time.Duration
	Members  []string
}

// Drained reports that the connection to the server the room left has been
// closed, After the switch: because nothing more could arrive on it, or
// because DrainTimeout passed (TimedOut), or because it broke (Err).
type Drained struct {
	Server   proto.ServerRef
	After    time.Duration
	TimedOut bool
	Err      error
}

// Missed reports messages of From (incarnation Inc), numbers First to
// Last, that will never arrive, and why: the sender no longer had them,
// the gap outlived GapTimeout, more than MaxHeld later messages waited
// behind it, or the sender restarted before they arrived. It is the only
// way a message is ever not delivered.
type Missed struct {
	From        string
	Inc         uint64
	First, Last uint64
	Reason      string
}

// Broken reports that the connection to the room's server ended without
// being asked to. The session keeps unacknowledged messages and waits for
// Move; the controller should tell Central (Unreachable).
type Broken struct {
	Server proto.ServerRef
	Epoch  uint64
	Err    error
}

// Error reports a problem that does not end the session, such as an Error
// frame from the server.
type Error struct {
	Err error
}

func (Message) event()  {}
func (Presence) event() {}
func (Moved) event()    {}
func (Missed) event()   {}
func (Drained) event()  {}
func (Broken) event()   {}
func (Error) event()    {}
