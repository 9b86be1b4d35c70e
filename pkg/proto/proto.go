// Package proto defines the messages that nearchat's programs exchange over
// the frame codec of package wire. Each type's comment gives its type byte,
// who sends it, and its fields as they appear in the msgpack map (the key in
// brackets). Every field is always present on the wire, zero or not, which
// keeps encoding free of allocations.
//
// Every connection opens with Hello and Welcome (see package wire). After
// that, a chat-server connection is used for one room membership (the
// client sends Join right behind its Hello, without waiting for the
// Welcome: the server answers Welcome, then Joined):
//
//	client                       chat server
//	Join{room,user,ticket,...} ->
//	                            <- Joined{room,seq,members,...}
//	                            <- Deliver...   (history the member missed)
//	Chat{num,at,text}          ->
//	                            <- Ack{num,seq}           (to the sender)
//	                            <- Deliver{seq,from,...}  (to every other member)
//	Ping{id,at}                ->
//	                            <- Pong{id,at}
//	Beat{every}                ->   (version 6)
//	                            <- Pong{0,0}   (after every ms of silence)
//
// and the control connection to Central carries chat requests, their status
// stream, and room assignments:
//
//	requester            Central              peer
//	Request{to}      ->
//	                 <- Status{ACK_CONN}
//	                 <- Status{REQ_SENT}   -> Incoming{req,from}
//	                 <- Status{AWAITING_REQ} (periodic)
//	                                       <- Answer{req,accept}
//	                 <- Status{REQ_ACCEPTED}
//	                 <- Assign{room,server,epoch,ticket} -> Assign{...}
//	AssignAck{room,epoch} ->               <- AssignAck{room,epoch}
//
// Relocations are further Assign frames with a higher epoch; clients answer
// each with AssignAck, and Central repeats an unacknowledged Assign.
// Placement is level-triggered: a member states what it holds (Holding,
// after every Welcome and periodically), Central answers every difference
// from the desired placement with an Assign, and a member follows an
// Assign whose (epoch, server) differs from its own, never the epoch alone.
// Right after its Welcome, Central lists the servers up (ServerList,
// version 9), and from then on tells connected clients of servers that
// come up, drain or go down (ServerEvent), so they measure a new server at
// once, and members report their latency vectors on the same connection
// (Latency).
package proto

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"nearchat/pkg/wire"
)

// Frame type bytes. Values are part of the protocol: never renumber.
const (
	// Both directions, every connection.
	THello   wire.Type = 0x01
	TWelcome wire.Type = 0x02
	TError   wire.Type = 0x03
	TPing    wire.Type = 0x04
	TPong    wire.Type = 0x05
	TBeat    wire.Type = 0x06

	// Client <-> chat server.
	TJoin      wire.Type = 0x10
	TJoined    wire.Type = 0x11
	TLeave     wire.Type = 0x12
	TChat      wire.Type = 0x13
	TAck       wire.Type = 0x14
	TDeliver   wire.Type = 0x15
	TPresence  wire.Type = 0x16
	TResend    wire.Type = 0x17
	TMissed    wire.Type = 0x18
	TPresences wire.Type = 0x19

	// Client <-> Central control port.
	TRequest     wire.Type = 0x20
	TStatus      wire.Type = 0x21
	TIncoming    wire.Type = 0x22
	TAnswer      wire.Type = 0x23
	TAssign      wire.Type = 0x24
	TAssignAck   wire.Type = 0x25
	TUnreachable wire.Type = 0x26
	TLeaveRoom   wire.Type = 0x27
	TRoomClosed  wire.Type = 0x28
	THolding     wire.Type = 0x29
	TServerEvent wire.Type = 0x2a
	TLatency     wire.Type = 0x2b
	TServerList  wire.Type = 0x2c
)

// Hello (0x01, dialer -> listener, first frame). V is the protocol version
// the dialer speaks; Agent names the program ("chat/1", "bot/1"), in at
// most MaxAgent bytes of printable UTF-8; Token is
// the session token on Central's control port and empty elsewhere.
type Hello struct {
	V     int    `msgpack:"v"`
	Agent string `msgpack:"agent"`
	Token string `msgpack:"token"`
}

// MaxHelloFrame bounds the frames a listener takes before the Hello: a
// Hello is some hundred bytes, and a peer nobody knows yet must not make
// it buffer a whole MaxFrame (abuse probe, 2026-12-03: 2,000 connections
// each sending 64 KiB of a first frame held 130 MB of a chat server's and
// of Central's memory).
const MaxHelloFrame = 4 << 10

// Welcome (0x02, listener -> dialer, answers Hello). Server is the
// listener's name (a chat server's ID, or CentralName); Max its frame limit;
// User, on the control port, the user the token belongs to.
type Welcome struct {
	V      int    `msgpack:"v"`
	Server string `msgpack:"server"`
	Max    int    `msgpack:"max"`
	User   string `msgpack:"user"`
}

// CentralName is the Server a Welcome from Central's control port carries.
// A client checks it, so an address that turns out to be a chat server is
// passed over rather than taken for Central.
const CentralName = "central"

// Error (0x03, either direction). Code is one of the Code constants; Reason
// is for humans; Fatal means the sender closes the connection after it. Ref
// names what failed when that is not obvious (a request id, a room).
type Error struct {
	Code   Code   `msgpack:"code"`
	Reason string `msgpack:"reason"`
	Fatal  bool   `msgpack:"fatal"`
	Ref    string `msgpack:"ref"`
}

func (e *Error) Error() string {
	if e.Ref != "" {
		return fmt.Sprintf("%s (%s): %s", e.Code, e.Ref, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Reason)
}

// Ping (0x04, either direction): an echo request, used for RTT probes on
// chat servers and for keepalive on the control port. At is the sender's
// monotonic clock reading in nanoseconds; the receiver echoes both fields.
type Ping struct {
	ID uint64 `msgpack:"id"`
	At int64  `msgpack:"at"`
}

// Pong (0x05): the answer to Ping, with ID and At copied unchanged.
type Pong struct {
	ID uint64 `msgpack:"id"`
	At int64  `msgpack:"at"`
}

// Beat (0x06, client -> chat server, version 6): from now on, whenever
// the server has written nothing to this connection for Every
// milliseconds (BeatMin to BeatMax; 0 stops it), it writes an empty Pong
// (ID and At 0), once the connection is a member of a room (a Beat before
// the Join takes effect with it). A client that watches its connection
// for silence needs no Pings for it then: one frame, server to client,
// instead of a Ping and its Pong, and none at all while the room is busy.
// Every is 64 bits wide so that a value past 32 bits is refused as out
// of range rather than cut to its low bits by the decoder.
type Beat struct {
	Every uint64 `msgpack:"every"`
}

// Bounds of Beat.Every, in milliseconds.
const (
	BeatMin = 20
	BeatMax = 60000
)

// Join (0x10, client -> chat server): become a member of Room as User.
// Ticket is Central's signed admission for (room, user, epoch). LastSent is
// the highest message number this member has sent in the room (0 if none),
// announced to the others so they can detect a lost tail. Since is the room
// sequence number of the last Deliver this member saw from this same server
// (0 if none): the server replays what came after it from its history.
// Inc is the member's incarnation: its numbering starts again at 1 with
// every incarnation, and a later incarnation is a larger number (the
// client uses the Unix nanosecond its Session started), so receivers tell
// a restarted member's new message 1 from its old one. Move says the
// member brings the room here from another server: with Since 0 the
// server then replays its whole history, which holds exactly what was
// sent here before the member arrived.
type Join struct {
	Room     string `msgpack:"room"`
	User     string `msgpack:"user"`
	Ticket   []byte `msgpack:"ticket"`
	Epoch    uint64 `msgpack:"epoch"`
	LastSent uint64 `msgpack:"last"`
	Since    uint64 `msgpack:"since"`
	Inc      uint64 `msgpack:"inc"`
	Move     bool   `msgpack:"move"`
}

// Member describes one room member in Joined.
// Inc is the incarnation the member announced in its Join.
type Member struct {
	User     string `msgpack:"user"`
	LastSent uint64 `msgpack:"last"`
	Inc      uint64 `msgpack:"inc"`
}

// Joined (0x11, chat server -> client): the Join succeeded. Seq is the
// room's latest sequence number; Members the members now present, the
// joiner first. A very large room lists its first 900 members here and
// sends the others in Presences frames right after. Truncated means the history no longer reaches back to
// Since: messages between Since and Oldest are gone from this server.
// Replayed Deliver frames follow.
type Joined struct {
	Room      string   `msgpack:"room"`
	Epoch     uint64   `msgpack:"epoch"`
	Seq       uint64   `msgpack:"seq"`
	Members   []Member `msgpack:"members"`
	Truncated bool     `msgpack:"trunc"`
	Oldest    uint64   `msgpack:"oldest"`
}

// Leave (0x12, client -> chat server): leave the room; the server closes
// the connection after flushing what it owes.
type Leave struct{}

// Chat (0x13, client -> chat server): a message to the room. Num is the
// sender's own message number, 1, 2, 3... with no gaps (a chat server
// refuses one that does not rise on its connection); At the sender's
// wall clock in Unix nanoseconds; Text the message. To, when set, makes it
// a resend for that one member (the answer to its Resend): the server
// hands it to To only, gives it no room sequence (Deliver.Seq 0), keeps it
// out of the history, and (version 4) acknowledges it with Ack.Seq 0, so
// that the sender paces its answer by its SendWindow like its live
// messages.
type Chat struct {
	Num  uint64 `msgpack:"num"`
	At   int64  `msgpack:"at"`
	Text string `msgpack:"text"`
	To   string `msgpack:"to"`
}

// Ack (0x14, chat server -> sender): message Num was handed to every member
// present and got room sequence Seq; with Seq 0 (version 4), a resend of
// Num (Chat.To) was handed to its one member (or that member was gone).
// Acks come back in the order of the Chat frames they answer, resends and
// live messages alike, and are withheld together while a member of the
// room is behind.
type Ack struct {
	Num uint64 `msgpack:"num"`
	Seq uint64 `msgpack:"seq"`
}

// Deliver (0x15, chat server -> members): a message of the room. Seq is the
// room sequence on this server (0 for a resend to one member); From, Num,
// At and Text are the sender's; Inc is the sender's incarnation (see Join).
type Deliver struct {
	Seq  uint64 `msgpack:"seq"`
	From string `msgpack:"from"`
	Num  uint64 `msgpack:"num"`
	At   int64  `msgpack:"at"`
	Text string `msgpack:"text"`
	Inc  uint64 `msgpack:"inc"`
}

// Presence (0x16, chat server -> members): User joined (Here) or left the
// room. LastSent and Inc are what the joiner announced in its Join.
type Presence struct {
	User     string `msgpack:"user"`
	Here     bool   `msgpack:"here"`
	LastSent uint64 `msgpack:"last"`
	Inc      uint64 `msgpack:"inc"`
}

// Presences (0x19, chat server -> members, version 3): several Presence
// changes in the order they happened, each exactly as a Presence frame
// would carry it [changes]. The server gathers a room's joins and leaves
// and sends them in one Presences frame per member (a lone change goes as
// a Presence), and lists the members a very large room's Joined has no
// room for in them, so M members joining together cost each member a few
// frames rather than M. A gathering keeps the latest change per user
// only, so a user that joined and left meanwhile may come as a leave
// alone, of a user the member never saw: receivers ignore such a leave.
// A version-2 member gets Presence frames instead.
type Presences struct {
	Changes []Presence `msgpack:"changes"`
}

// Resend (0x17): a member asks the room's member Of to send again its
// messages numbered after After of its incarnation Inc (an asker that
// knows another incarnation than Of's current one is sent everything Of
// still holds). The server forwards the frame to Of with By set to the
// asking member, at a bounded rate per asker; Of answers
// with Chat frames addressed To the asker alone.
type Resend struct {
	Of    string `msgpack:"of"`
	After uint64 `msgpack:"after"`
	By    string `msgpack:"by"`
	Inc   uint64 `msgpack:"inc"`
}

// Missed (0x18): the answer to a Resend that cannot be met in full: member
// From no longer holds its messages First..Last for member To. The server
// forwards it to To, which tells its user plainly. Inc is From's
// incarnation the numbers belong to.
type Missed struct {
	To    string `msgpack:"to"`
	From  string `msgpack:"from"`
	First uint64 `msgpack:"first"`
	Last  uint64 `msgpack:"last"`
	Inc   uint64 `msgpack:"inc"`
}

// Request (0x20, client -> Central): ask To (one or more users) to chat.
//
// Key, when set, is the requester's own name for the request (valid as by
// CheckKey). Central then takes RequestID(requester, Key) as the request
// id, the same on every Central, and the Request becomes idempotent: sent
// again (after the control connection broke, or to another Central after
// a failover) it gets the running request's status stream again, from
// ACK_CONN, or the final status of the request if it has ended, never a
// second request. Without Key the id is random and a Request sent twice
// is two requests.
type Request struct {
	To  []string `msgpack:"to"`
	Key string   `msgpack:"key,omitempty"`
}

// RequestID is the id Central gives the request user made with key: "q-"
// and 20 hex digits of SHA-256 over both, so that users cannot pick each
// other's ids and every Central derives the same one.
func RequestID(user, key string) string {
	h := sha256.Sum256([]byte(user + "\x00" + key))
	return "q-" + hex.EncodeToString(h[:10])
}

// Status (0x21, Central -> requester): one step of a request. Req is the
// request id Central assigned (given from ACK_CONN on); Room is set with
// REQ_ACCEPTED; Detail is for humans. The final status also goes to every
// invitee still connected, so an invitee can drop a request that ended.
type Status struct {
	Req    string     `msgpack:"req"`
	Code   StatusCode `msgpack:"code"`
	Detail string     `msgpack:"detail"`
	Room   string     `msgpack:"room"`
}

// Incoming (0x22, Central -> invitee): From asks you to chat; Members is
// everyone invited, From included.
type Incoming struct {
	Req     string   `msgpack:"req"`
	From    string   `msgpack:"from"`
	Members []string `msgpack:"members"`
}

// Answer (0x23, invitee -> Central): accept or decline request Req.
type Answer struct {
	Req    string `msgpack:"req"`
	Accept bool   `msgpack:"accept"`
}

// ServerRef names a chat server and where to reach it.
type ServerRef struct {
	ID   string `msgpack:"id"`
	Addr string `msgpack:"addr"`
}

// Assign (0x24, Central -> members): the room lives on Server from Epoch on.
// Epoch 1 is the first placement; every move increments it. Ticket admits
// this member (the security issue makes chat servers check it). Reason says
// why a move happened; Prev names the server the room leaves; PrevRTT and
// RTT are the room's worst member RTT before and after, when known.
type Assign struct {
	Room    string        `msgpack:"room"`
	Epoch   uint64        `msgpack:"epoch"`
	Server  ServerRef     `msgpack:"server"`
	Members []string      `msgpack:"members"`
	Ticket  []byte        `msgpack:"ticket"`
	Reason  string        `msgpack:"reason"`
	Prev    string        `msgpack:"prev"`
	PrevRTT time.Duration `msgpack:"prev_rtt"`
	RTT     time.Duration `msgpack:"rtt"`
}

// AssignAck (0x25, member -> Central): the member follows Room's Epoch.
type AssignAck struct {
	Room  string `msgpack:"room"`
	Epoch uint64 `msgpack:"epoch"`
}

// Unreachable (0x26, member -> Central): the member lost its connection to
// Server, which hosts Room at Epoch. Central checks the server at once.
// Silent says the connection is still open but left a ping unanswered past
// the member's liveness deadline: weaker evidence than a connection that
// broke (a starved server or member looks the same), so Central counts it
// only against a server its own check cannot even connect to.
type Unreachable struct {
	Room   string `msgpack:"room"`
	Server string `msgpack:"server"`
	Epoch  uint64 `msgpack:"epoch"`
	Silent bool   `msgpack:"silent,omitempty"`
}

// LeaveRoom (0x27, member -> Central): the member has left Room for good.
type LeaveRoom struct {
	Room string `msgpack:"room"`
}

// RoomClosed (0x28, Central -> members): Room no longer exists.
type RoomClosed struct {
	Room   string `msgpack:"room"`
	Reason string `msgpack:"reason"`
}

// Held is one room a member holds: the placement its session follows, and
// the ticket of that placement's Assign (none where Central signs no
// tickets). A Central that signs tickets believes a report that would make
// the member a member, or move the room to a placement it does not know
// (both happen only after it restarted), only with the ticket it signed
// for that room, member and placement.
type Held struct {
	Room   string `msgpack:"room"`
	Epoch  uint64 `msgpack:"epoch"`
	Server string `msgpack:"server"`
	Ticket []byte `msgpack:"ticket,omitempty"`
}

// Holding (0x29, member -> Central): every room the member holds, with the
// placement it follows. A member sends it right after Welcome and again
// every few seconds; Central compares each entry with the room's desired
// placement and sends an Assign wherever they differ, so a lost Assign, a
// missed move or a Central restart heals without any edge being seen.
// Rooms Central does not know are adopted from it (Central restarted).
//
// Left (version 8) lists the rooms the member left that Central may not
// have taken in: a LeaveRoom is neither acknowledged nor resent, and one
// lost with the connection or the Central that was to read it would leave
// the member listed, and pushed the room, by the next Central. Central
// removes the member from any room listed there, as a LeaveRoom would. The
// client lists a room until Central answers a Ping sent behind a Holding
// that carried it, and for ten minutes after.
type Holding struct {
	Rooms []Held   `msgpack:"rooms"`
	Left  []string `msgpack:"left,omitempty"`
}

// Server states of a ServerEvent.
const (
	ServerUp       = "up"
	ServerDraining = "draining"
	ServerDown     = "down"
)

// ServerEvent (0x2a, Central -> every connected client): Server has just
// come up, started draining or gone down (State, one of the Server*
// constants). A client measures a server that came up at once and reports
// its vector, so the room can move there without waiting for the next
// probe round.
type ServerEvent struct {
	Server ServerRef `msgpack:"server"`
	State  string    `msgpack:"state"`
}

// ServerList (0x2c, Central -> client, version 9): the chat servers up,
// draining ones marked, when Central took the client's Hello. Central
// sends it right after the Welcome, in as many frames as the frame limit
// needs (Last set on the final one), and every ServerEvent on the
// connection after it changes this list. So a client knows every server
// from the moment its control connection is up: a server that registered
// while the client had none (starting, or reconnecting to a restarted
// Central) is not missed until the client's next list fetch.
type ServerList struct {
	Servers []ListedServer `msgpack:"servers"`
	Last    bool           `msgpack:"last"`
}

// ListedServer is one server of a ServerList.
type ListedServer struct {
	ID       string `msgpack:"id"`
	Addr     string `msgpack:"addr"`
	Draining bool   `msgpack:"draining"`
}

// Latency (0x2b, member -> Central, version 7): the member's latency
// vector, replacing the last one it reported, as PUT
// /v1/clients/{name}/latency does but without a REST connection. Central
// answers nothing when it takes the vector, and a non-fatal Error with Ref
// LatencyRef when it refuses it (a figure over an hour, a malformed or
// repeated server id, more than its rate; a negative figure is a malformed
// body, as any negative integer is). Servers Central does not know (one
// deregistered since the probe) are left out of the vector, not refused.
type Latency struct {
	Servers []ServerRTT `msgpack:"servers"`
}

// ServerRTT is one server's RTT in a Latency vector: the median and the
// spread (interquartile range) of Count probes, in microseconds.
type ServerRTT struct {
	Server   string `msgpack:"server"`
	MedianUS int64  `msgpack:"median_us"`
	SpreadUS int64  `msgpack:"spread_us"`
	Count    int    `msgpack:"count"`
}

// LatencyRef is the Ref of an Error that refuses a Latency frame.
const LatencyRef = "latency"

func (*Hello) FrameType() wire.Type       { return THello }
func (*Welcome) FrameType() wire.Type     { return TWelcome }
func (*Error) FrameType() wire.Type       { return TError }
func (*Ping) FrameType() wire.Type        { return TPing }
func (*Pong) FrameType() wire.Type        { return TPong }
func (*Beat) FrameType() wire.Type        { return TBeat }
func (*Join) FrameType() wire.Type        { return TJoin }
func (*Joined) FrameType() wire.Type      { return TJoined }
func (*Leave) FrameType() wire.Type       { return TLeave }
func (*Chat) FrameType() wire.Type        { return TChat }
func (*Ack) FrameType() wire.Type         { return TAck }
func (*Deliver) FrameType() wire.Type     { return TDeliver }
func (*Presence) FrameType() wire.Type    { return TPresence }
func (*Resend) FrameType() wire.Type      { return TResend }
func (*Missed) FrameType() wire.Type      { return TMissed }
func (*Presences) FrameType() wire.Type   { return TPresences }
func (*Request) FrameType() wire.Type     { return TRequest }
func (*Status) FrameType() wire.Type      { return TStatus }
func (*Incoming) FrameType() wire.Type    { return TIncoming }
func (*Answer) FrameType() wire.Type      { return TAnswer }
func (*Assign) FrameType() wire.Type      { return TAssign }
func (*AssignAck) FrameType() wire.Type   { return TAssignAck }
func (*Unreachable) FrameType() wire.Type { return TUnreachable }
func (*LeaveRoom) FrameType() wire.Type   { return TLeaveRoom }
func (*RoomClosed) FrameType() wire.Type  { return TRoomClosed }
func (*Holding) FrameType() wire.Type     { return THolding }
func (*ServerEvent) FrameType() wire.Type { return TServerEvent }
func (*ServerList) FrameType() wire.Type  { return TServerList }
func (*Latency) FrameType() wire.Type     { return TLatency }

// New returns an empty message of type t, ready for wire.Unmarshal, or nil
// for a type byte this protocol version does not define.
func New(t wire.Type) wire.Message {
	switch t {
	case THello:
		return new(Hello)
	case TWelcome:
		return new(Welcome)
	case TError:
		return new(Error)
	case TPing:
		return new(Ping)
	case TPong:
		return new(Pong)
	case TBeat:
		return new(Beat)
	case TJoin:
		return new(Join)
	case TJoined:
		return new(Joined)
	case TLeave:
		return new(Leave)
	case TChat:
		return new(Chat)
	case TAck:
		return new(Ack)
	case TDeliver:
		return new(Deliver)
	case TPresence:
		return new(Presence)
	case TResend:
		return new(Resend)
	case TMissed:
		return new(Missed)
	case TPresences:
		return new(Presences)
	case TRequest:
		return new(Request)
	case TStatus:
		return new(Status)
	case TIncoming:
		return new(Incoming)
	case TAnswer:
		return new(Answer)
	case TAssign:
		return new(Assign)
	case TAssignAck:
		return new(AssignAck)
	case TUnreachable:
		return new(Unreachable)
	case TLeaveRoom:
		return new(LeaveRoom)
	case TRoomClosed:
		return new(RoomClosed)
	case THolding:
		return new(Holding)
	case TServerEvent:
		return new(ServerEvent)
	case TLatency:
		return new(Latency)
	case TServerList:
		return new(ServerList)
	}
	return nil
}

// ErrUnknownType is returned by Decode for a type byte New does not know.
var ErrUnknownType = fmt.Errorf("proto: unknown frame type")

// Decode turns a parsed frame into its message.
func Decode(t wire.Type, body []byte) (wire.Message, error) {
	m := New(t)
	if m == nil {
		return nil, fmt.Errorf("%w 0x%02x", ErrUnknownType, byte(t))
	}
	if err := Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("frame 0x%02x: %w", byte(t), err)
	}
	return m, nil
}

// Unmarshal is wire.Unmarshal with one check the codec cannot make: every
// signed field of the protocol (a version, a limit, a time, a duration, a
// count) is never negative, and wire.Unmarshal refuses a negative
// encoding, but msgpack's decoder puts an unsigned integer past 2^63-1
// into a signed field as a negative number. Relayed as it is, a Chat's
// time reached every member as a negative integer their decoders refuse
// (abuse probe, 2026-12-05): one member could cut off the others.
func Unmarshal(body []byte, m wire.Message) error {
	if err := wire.Unmarshal(body, m); err != nil {
		return err
	}
	if f := wrapped(m); f != "" {
		return fmt.Errorf("%w: %s is past 2^63-1", wire.ErrBody, f)
	}
	return nil
}

// wrapped names the first signed field of m that holds a negative value.
func wrapped(m wire.Message) string {
	switch m := m.(type) {
	case *Hello:
		if m.V < 0 {
			return "v"
		}
	case *Welcome:
		if m.V < 0 || m.Max < 0 {
			return "v or max"
		}
	case *Ping:
		return negative(m.At, "at")
	case *Pong:
		return negative(m.At, "at")
	case *Chat:
		return negative(m.At, "at")
	case *Deliver:
		return negative(m.At, "at")
	case *Assign:
		if m.PrevRTT < 0 || m.RTT < 0 {
			return "prev_rtt or rtt"
		}
	case *Latency:
		for _, s := range m.Servers {
			if s.MedianUS < 0 || s.SpreadUS < 0 || s.Count < 0 {
				return "a server's median_us, spread_us or count"
			}
		}
	}
	return ""
}

// negative returns name when v is negative, and "" otherwise.
func negative(v int64, name string) string {
	if v < 0 {
		return name
	}
	return ""
}
