package client

import (
	"time"

	"nearchat/pkg/proto"
)

// Event is one of the events below. Client.Events delivers all of them on
// one channel: the controller's (Status, Incoming, RoomReady, RoomClosed,
// Connected, Disconnected, Error) and every room's, each carrying its Room.
// Session.Events delivers a single room's (Message, Presence, Moved,
// Drained, Missed, Broken, Error) to a Session opened without a Client.
type Event interface{ event() }

// Controller events: the user's presence in nearchat.

// Status is one step of a chat request this client made.
type Status struct{ proto.Status }

// Incoming is a chat request from another user, to Answer.
type Incoming struct{ proto.Incoming }

// RoomReady announces a room this client is now a member of: its first
// join is complete. Every later move arrives as Moved. The Session is
// there to Send on; its events arrive on Client.Events.
type RoomReady struct {
	Room    string
	Session *Session
	Assign  proto.Assign
	Present []string // the other members on the server when we joined
}

// RoomClosed reports that Central ended a room.
type RoomClosed struct{ proto.RoomClosed }

// Connected reports that the control connection to Central is (re)established.
type Connected struct{ Central string }

// Disconnected reports that the control connection dropped; the client
// reconnects by itself.
type Disconnected struct{ Err error }

// Room events: one room's session. Room is the room's id; Session.Events
// leaves it to the caller, who knows the room, and Client.Events sets it.

// Message is a chat message of another member, delivered exactly once and
// in its sender's order.
type Message struct {
	Room string
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
	Room     string
	User     string
	Here     bool
	LastSent uint64
	Server   string
}

// Moved reports a completed join: on Session.Events the first one (From is
// zero) and every move; on Client.Events only the moves, one event each,
// with the Assign that caused it (its Reason, RTT, PrevRTT). Took runs from
// the start of the join to Joined.
type Moved struct {
	Room     string
	From, To proto.ServerRef
	Epoch    uint64
	Took     time.Duration
	Members  []string
	Assign   proto.Assign // set by Client; zero on Session.Events
}

// Drained reports that the connection to the server the room left has been
// closed, After the switch: because nothing more could arrive on it, or
// because DrainTimeout passed (TimedOut), or because it broke (Err).
type Drained struct {
	Room     string
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
	Room        string
	From        string
	Inc         uint64
	First, Last uint64
	Reason      string
}

// Broken reports that the connection to the room's server ended without
// being asked to, or fell silent past the liveness deadline (Err wraps
// ErrSilent; the connection stays open and serves again if the server
// answers). The session keeps unacknowledged messages and waits for Move;
// the controller should tell Central (Unreachable).
type Broken struct {
	Room   string
	Server proto.ServerRef
	Epoch  uint64
	Err    error
}

// Resumed reports that a connection reported Broken for falling silent
// (ErrSilent) answered again before any move: the server was only slow,
// and the session serves on it as before. After is how long it was
// silent past the liveness deadline.
type Resumed struct {
	Room   string
	Server proto.ServerRef
	Epoch  uint64
	After  time.Duration
}

// Error reports a problem that does not end the session or the client,
// such as an Error frame from a chat server (Room set) or from Central
// (Room empty).
type Error struct {
	Room string
	Err  error
}

func (Status) event()       {}
func (Incoming) event()     {}
func (RoomReady) event()    {}
func (RoomClosed) event()   {}
func (Connected) event()    {}
func (Disconnected) event() {}
func (Message) event()      {}
func (Presence) event()     {}
func (Moved) event()        {}
func (Missed) event()       {}
func (Drained) event()      {}
func (Broken) event()       {}
func (Resumed) event()      {}
func (Error) event()        {}

// inRoom returns ev with its Room set.
func inRoom(ev Event, room string) Event {
	switch e := ev.(type) {
	case Message:
		e.Room = room
		return e
	case Presence:
		e.Room = room
		return e
	case Moved:
		e.Room = room
		return e
	case Drained:
		e.Room = room
		return e
	case Missed:
		e.Room = room
		return e
	case Broken:
		e.Room = room
		return e
	case Resumed:
		e.Room = room
		return e
	case Error:
		e.Room = room
		return e
	}
	return ev
}
