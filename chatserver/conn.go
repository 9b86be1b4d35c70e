package chatserver

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/time/rate"

	"nearchat/pkg/proto"
	"nearchat/pkg/ticket"
	"nearchat/pkg/unsent"
	"nearchat/pkg/wire"
)

// member is the state of one connection. It is owned by the connection's
// event loop: only code running there reads or writes it, except room,
// user and lastSent, which are set before the member is published to its
// room and not changed after.
type member struct {
	c     gnet.Conn
	rec   *recordLayer // TLS: protects what is read and written; nil for plaintext
	loop  *loop
	hello bool
	v2    bool // speaks protocol version 2: no Presences frames
	v4    bool // speaks protocol version 4 or later: its resends are acknowledged
	v6    bool // speaks protocol version 6 or later: may ask for beats
	dead  bool // nothing more is written: closed, or closing
	gone  bool // OnClose has run

	doomedAt time.Time // when a cut-off member is closed even if unread

	guardState
	guard *guardSet

	room     *room
	user     string
	lastSent uint64
	inc      uint64        // the member's incarnation, from its Join
	relayed  uint64        // the highest Num this connection broadcast (onChat)
	issued   int64         // when its ticket was issued (Central's clock, Unix ns); 0 without tickets
	resends  *rate.Limiter // Resend asks forwarded for this member; nil until its first
	sends    sendBucket    // Chat frames accepted from this member (flow.go, pace)
	paced    bool          // its input waits for sends (flow.go)
	noHold   bool          // cut off as slow in this room lately: never behind (flow.go, slowCuts)

	behind      *room        // set while the member's backlog is past HighWater (flow.go)
	behindSince time.Time    // when it fell behind
	acksQueued  atomic.Int32 // released Acks (releaseAcks) on its loop's queue, not yet written
	withheld    atomic.Int64 // bytes of its messages whose Acks its room withholds (flow.go, overWindow)
	asked       atomic.Int32 // Resend asks forwarded to it: the Missed frames it may send (onMissed), at most maxAsked
	lastRead    atomic.Int64 // Server.now when a frame last came in; read by the idle sweep
	outb        int          // OutboundBuffered and held bytes when last looked at, counted in Server.outBytes
	joinEv      uint64       // fan-out items numbered up to this predate the join
	shard       *shard
	idx         int // position in shard.members, -1 when not in one

	partial []byte // TLS only: the decrypted start of a frame not yet whole

	// Deliveries held while the member streams (fanout.go, holdDelay):
	// when a delivery was last written to it (its loop's time), and the
	// frames held since, set while the member is in loop.holding.
	wroteAt time.Time
	held    *bytebufferpool.ByteBuffer
	nheld   int

	// Beats (beat.go): the interval the member asked for (0: none; kept
	// from a Beat before the Join, beaten on once joined) and
	// its loop's time when anything was last written to it.
	beat  time.Duration
	outAt time.Time
}

// send writes b to the member's connection, encrypted if it is TLS. Event
// loop only.
func (m *member) send(b []byte) {
	m.outAt = m.loop.now
	if m.rec != nil {
		m.loop.sealTo(m, b)
		return
	}
	_, _ = m.c.Write(b)
}

// write sends b to the member, or cuts it off if it is not keeping up.
// Event loop only.
func (m *member) write(b []byte, max int) { m.writeN(b, max, 1) }

// deliverN is writeN for b holding frames broadcast to m's room: held
// while a delivery was written to m less than holdDelay ago (see
// holdDelay), and written at once otherwise. Event loop only.
func (m *member) deliverN(b []byte, max, frames int) {
	if m.dead {
		return
	}
	l := m.loop
	if l.ackTo == m {
		// Acks are owed to m, newer than anything held for it: b goes
		// with them, in order.
		m.wroteAt = l.now
		m.writeN(b, max, frames)
		return
	}
	if m.held == nil {
		if l.now.Sub(m.wroteAt) >= l.srv.cfg.holdDelay {
			m.wroteAt = l.now
			m.writeN(b, max, frames)
			return
		}
		m.held = getHeld()
		l.holding = append(l.holding, m)
	}
	m.held.B = append(m.held.B, b...)
	m.nheld += frames
	// Held bytes count in the outbound budget, as unsent ones do: up to
	// holdBytes and a batch per member.
	m.outb += len(b)
	l.srv.outBytes.Add(int64(len(b)))
	if len(m.held.B) >= holdBytes || m.nheld >= holdFrames {
		m.writeN(nil, max, 0)
	}
}

// writeN is write for b holding frames frames, for the counters: what is
// held for m goes first, then the Acks owed to it, then b, all in one
// write. Event loop only.
func (m *member) writeN(b []byte, max, frames int) {
	if m.dead {
		return
	}
	l := m.loop
	acked := l.ackTo == m
	var h *bytebufferpool.ByteBuffer
	if m.heldBytes() > 0 {
		// Deliveries held for m predate its Acks (deliverN holds none
		// while Acks are owed to it), and b.
		h = m.held
		if acked {
			l.ackTo = nil
			h.B = append(h.B, l.acks...)
			frames += l.nacks
		}
		h.B = append(h.B, b...)
		b, frames = h.B, frames+m.nheld
		m.wroteAt = l.now
	} else if acked {
		// The Acks queued for m keep their place in the stream, ahead of
		// b, and leave in the same write.
		l.ackTo = nil
		l.acks = append(l.acks, b...)
		b, frames = l.acks, frames+l.nacks
	}
	if len(b) == 0 {
		return
	}
	if h != nil {
		// b is h's bytes: held no longer, whether written or dropped, so
		// the backlog noteBacklog sees counts what of them is unsent once.
		// Untouched after the write: a write that fails closes m, and the
		// close may give h back to the pool.
		h.B, m.nheld = h.B[:0], 0
	}
	backlog := m.c.OutboundBuffered()
	if backlog > max {
		l.st.cutOff()
		m.kill(proto.CodeSlowConsumer, fmt.Sprintf("more than %d bytes unread", max))
	} else {
		m.send(b)
		l.st.wrote(b, frames, backlog)
		m.noteBacklog()
	}
	if acked {
		l.sentAcks(m)
	}
}

// heldPool has the buffers of held deliveries, apart from the frames'
// (a room's history keeps its frames, and a frame's buffer is sized for
// one frame). A plain sync.Pool, not a
// bytebufferpool.Pool: a held buffer comes back empty (writeN wrote what
// it held), and bytebufferpool, which keeps only buffers no bigger than
// the lengths it is given back, dropped every one after its first
// 42,000 returns, so each hold allocated and grew a new buffer.
var heldPool = sync.Pool{New: func() any { return new(bytebufferpool.ByteBuffer) }}

// maxHeldCap bounds the buffers heldPool keeps. A held buffer holds at
// most about holdBytes, a run of broadcasts (maxBatch) and a member's
// Acks, so this only drops one that something grew past that.
const maxHeldCap = 256 << 10

func getHeld() *bytebufferpool.ByteBuffer { return heldPool.Get().(*bytebufferpool.ByteBuffer) }

func putHeld(b *bytebufferpool.ByteBuffer) {
	if cap(b.B) > maxHeldCap {
		return
	}
	b.B = b.B[:0]
	heldPool.Put(b)
}

// flushHeld writes what is held for m (unless it is dead) and gives the
// buffer back; the caller takes m out of its loop's holding. Event loop
// only.
func (m *member) flushHeld() {
	m.writeN(nil, m.loop.srv.cfg.MaxOutbound, 0)
	putHeld(m.held)
	m.held, m.nheld = nil, 0
}

// kill sends a fatal error frame and closes the connection. When the frame
// cannot leave at once (a slow consumer's backlog is ahead of it), the
// connection stays open, written to no more, until its backlog drains or
// doomGrace passes, so the peer can still learn why it was cut off. What
// is held for m (deliveries, Acks) was queued before the error and goes
// ahead of it, unless m is cut off for its backlog, of which it is part.
// Event loop only.
func (m *member) kill(code proto.Code, reason string) {
	if m.dead {
		return
	}
	if code != proto.CodeSlowConsumer {
		m.writeN(nil, m.loop.srv.cfg.MaxOutbound, 0)
		if m.dead {
			return // cut off by that write after all, or closed
		}
	}
	if code == proto.CodeSlowConsumer {
		m.loop.srv.log.Info("cutting off a slow consumer", "user", m.user, "remote", m.c.RemoteAddr(), "reason", reason,
			"unsent", m.c.OutboundBuffered(), "queued", m.backlog(0), "behind", m.behind != nil, "slow-before", m.noHold)
		if m.room != nil {
			m.loop.srv.slowCuts.remember(slowKey{m.room.id, m.user}, time.Now())
		}
	}
	m.dead = true
	m.send(errorFrame(code, reason))
	if m.rec != nil {
		// TLS ends with our close_notify, so the peer can tell this close
		// from a cut made on the way (RFC 8446, 6.1).
		m.loop.sealAlert(m, 1, alertCloseNotify)
	}
	if m.gone {
		_ = m.c.Close()
		return
	}
	// A member waits for its backlog to leave the kernel too; a connection
	// in no room is closed at once (an eviction must free its place), as
	// is one with nothing left to send.
	if m.c.OutboundBuffered() == 0 && (m.room == nil || unsent.Bytes(m.c.Fd()) == 0) {
		m.cut()
		return
	}
	m.doomedAt = time.Now().Add(doomGrace)
	m.loop.doom(m)
}

// doomGrace bounds how long a cut-off member's backlog may take to drain.
const doomGrace = 2 * time.Second

// cut closes a connection cut off, resetting it if its kernel still holds
// bytes it could not send: the peer is not reading, and a graceful close
// would leave them to an orphan socket for as long as the peer keeps its
// own (abuse sweep, 2026-12-03: 2.2 MB for 6 minutes, outside every
// budget). Event loop only.
func (m *member) cut() {
	unsent.Abort(m.c)
	_ = m.c.Close()
}

// handle dispatches one frame from m to the method for its type. The first
// frame must be Hello (an Error may come before it); Chat, Leave, Resend
// and Missed need a joined room. An error it returns is fatal to the
// connection. Event loop only.
func (s *Server) handle(m *member, t wire.Type, body []byte) error {
	if t == proto.TError {
		return s.onPeerError(m, body)
	}
	if !m.hello {
		return s.onHello(m, t, body)
	}
	switch t {
	case proto.TPing:
		return s.onPing(m, body)
	case proto.TBeat:
		return s.onBeat(m, body)
	case proto.TJoin:
		return s.onJoin(m, body)
	case proto.THello:
		return proto.Fatalf(proto.CodeBadFrame, "second hello")
	case proto.TPong:
		var p proto.Pong
		if err := proto.Unmarshal(body, &p); err != nil {
			return proto.Fatalf(proto.CodeBadBody, "pong: %v", err)
		}
		return nil // we ping no client: nothing to match it to
	}
	var on func(*member, []byte) error
	switch t {
	case proto.TChat:
		on = s.onChat
	case proto.TLeave:
		on = s.onLeave
	case proto.TResend:
		on = s.onResend
	case proto.TMissed:
		on = s.onMissed
	default:
		if proto.New(t) == nil {
			return proto.Fatalf(proto.CodeUnknownType, "unknown frame type 0x%02x", byte(t))
		}
		return proto.Fatalf(proto.CodeUnknownType, "frame type 0x%02x is not accepted by a chat server", byte(t))
	}
	if m.room == nil {
		return proto.Fatalf(proto.CodeNotJoined, "%s before join", roomFrames[t])
	}
	return on(m, body)
}

// roomFrames names the frames that need a joined room, for error reasons.
var roomFrames = map[wire.Type]string{
	proto.TChat:   "chat",
	proto.TLeave:  "leave",
	proto.TResend: "resend",
	proto.TMissed: "missed",
}

// onHello answers the connection's first frame, which must be a Hello in
// a version spoken here, with a Welcome.
func (s *Server) onHello(m *member, t wire.Type, body []byte) error {
	if t != proto.THello {
		return proto.Fatalf(proto.CodeNoHello, "the first frame must be Hello, got type 0x%02x", byte(t))
	}
	var h proto.Hello
	if err := proto.Unmarshal(body, &h); err != nil {
		return proto.Fatalf(proto.CodeBadBody, "hello: %v", err)
	}
	v, err := proto.CheckHello(&h, "this server")
	if err != nil {
		return err
	}
	m.hello, m.v2, m.v4, m.v6 = true, v < 3, v >= 4, v >= 6
	s.reply(m, &proto.Welcome{V: v, Server: s.cfg.ID, Max: s.cfg.MaxFrame})
	return nil
}

// onPing echoes a Ping as a Pong: the RTT probe clients measure with.
func (s *Server) onPing(m *member, body []byte) error {
	var p proto.Ping
	if err := proto.Unmarshal(body, &p); err != nil {
		return proto.Fatalf(proto.CodeBadBody, "ping: %v", err)
	}
	s.reply(m, (*proto.Pong)(&p))
	return nil
}

// onPeerError takes an Error from the client: a non-fatal one is logged,
// a fatal one means the client is closing, so the connection is closed as
// though it had gone, with no Error of ours in reply (two peers that answer
// an Error with an Error would trade them forever).
func (s *Server) onPeerError(m *member, body []byte) error {
	var e proto.Error
	err := proto.Unmarshal(body, &e)
	if err != nil {
		s.log.Debug("unreadable error frame from a client", "user", m.user, "remote", m.c.RemoteAddr(), "err", err)
	} else {
		s.log.Debug("error from a client", "user", m.user, "remote", m.c.RemoteAddr(), "code", e.Code, "reason", e.Reason, "fatal", e.Fatal)
	}
	if e.Fatal || err != nil {
		// An Error we cannot read may have been fatal: take it as the
		// client closing, since it must not be answered either.
		m.dead = true
		if m.rec != nil {
			m.loop.sealAlert(m, 1, alertCloseNotify)
		}
		_ = m.c.Close()
	}
	return nil
}

// onJoin checks a Join (names, and the ticket when tickets are required)
// and makes m a member of the room.
func (s *Server) onJoin(m *member, body []byte) error {
	if m.room != nil {
		return proto.Fatalf(proto.CodeBadJoin, "already joined room %q on this connection", m.room.id)
	}
	var j proto.Join
	if err := proto.Unmarshal(body, &j); err != nil {
		return proto.Fatalf(proto.CodeBadBody, "join: %v", err)
	}
	if err := proto.CheckRoom(j.Room); err != nil {
		return proto.Fatalf(proto.CodeBadJoin, "%v", err)
	}
	if err := proto.CheckUser(j.User); err != nil {
		return proto.Fatalf(proto.CodeBadJoin, "%v", err)
	}
	var c ticket.Claims
	if s.cfg.TicketKey != nil {
		var err error
		c, err = ticket.Verify(s.cfg.TicketKey, j.Ticket, j.Room, j.User, time.Now())
		if err != nil {
			return proto.Fatalf(proto.CodeUnauthorized, "%v", err)
		}
		if c.Epoch != j.Epoch {
			return proto.Fatalf(proto.CodeUnauthorized, "ticket is for epoch %d, join says %d", c.Epoch, j.Epoch)
		}
		// A ticket admits to the room's placement, not to any server: one
		// for another server (the room's old or future home) is refused.
		if c.Server != s.cfg.ID {
			return proto.Fatalf(proto.CodeUnauthorized, "ticket is for server %q, this is %q", c.Server, s.cfg.ID)
		}
		if why := s.revoked.revoked(c); why != "" {
			return proto.Fatalf(proto.CodeUnauthorized, "%s", why)
		}
		m.issued = c.Issued
	}
	// A member: no longer evictable for a newcomer, only for a fair share
	// (guard.go). Settled before join writes the Joined: a client that
	// has its Joined is settled, and members settle in the order they
	// learn they joined (the newest is the first to give way). A join
	// that fails closes the connection.
	m.newcomer.Settle()
	if err := s.join(m, &j); err != nil {
		return err
	}
	// A revocation that arrived while we joined found no member to drop:
	// look again now that m is one.
	if s.cfg.TicketKey != nil {
		if why := s.revoked.revoked(c); why != "" {
			return proto.Fatalf(proto.CodeUnauthorized, "%s", why)
		}
	}
	m.joined = true
	if m.beat != 0 {
		m.loop.startBeats(m) // asked for before the Join
	}
	return nil
}

// onChat broadcasts a joined member's message to its room, or hands a
// resend (To set) to that one member (resend).
// Its rate was checked by serve (pace).
func (s *Server) onChat(m *member, body []byte) error {
	num, at, text, to, ok := proto.ScanChat(body)
	if !ok || len(to) > 0 {
		// Not the encoding the fast path knows, or a resend for one
		// member: the codec decides.
		var msg proto.Chat
		if err := proto.Unmarshal(body, &msg); err != nil {
			return proto.Fatalf(proto.CodeBadBody, "chat: %v", err)
		}
		if len(msg.Text) > proto.MaxText {
			return proto.Fatalf(proto.CodeBadBody, "chat text is %d bytes, limit %d", len(msg.Text), proto.MaxText)
		}
		if msg.To != "" {
			s.resend(m, &msg)
			return nil
		}
		num, at, text = msg.Num, msg.At, []byte(msg.Text)
	}
	if len(text) > proto.MaxText {
		return proto.Fatalf(proto.CodeBadBody, "chat text is %d bytes, limit %d", len(text), proto.MaxText)
	}
	// A message's number rises on its connection: after a move a client
	// sends what the old server did not acknowledge, oldest first, then
	// what follows. A number again was relayed as a second message for
	// every member to drop (abuse sweep nit, 2026-12-05).
	if num <= m.relayed {
		return proto.Fatalf(proto.CodeBadBody, "chat %d after chat %d on this connection: numbers start at 1 and rise (a resend for one member names it in to)", num, m.relayed)
	}
	m.relayed = num
	s.broadcast(m, num, at, text)
	return nil
}

// onLeave takes a joined member out of its room and closes the connection.
func (s *Server) onLeave(m *member, body []byte) error {
	if err := proto.Unmarshal(body, &proto.Leave{}); err != nil {
		return proto.Fatalf(proto.CodeBadBody, "leave: %v", err)
	}
	s.leave(m)
	m.dead = true
	_ = m.c.Close()
	return nil
}

// maxAsked bounds the Missed frames a member may owe: enough for every
// asker of a big room to have a few asks answered.
const maxAsked = 256

// onResend forwards a Resend to the member asked, signed with the sender.
// Asks beyond ResendRate per asker are dropped: an ask costs the member
// asked a whole answer, and an asker whose ask was dropped asks again on
// its own timer, so nothing is lost by it.
func (s *Server) onResend(m *member, body []byte) error {
	var r proto.Resend
	if err := proto.Unmarshal(body, &r); err != nil {
		return proto.Fatalf(proto.CodeBadBody, "resend: %v", err)
	}
	if m.resends == nil {
		m.resends = rate.NewLimiter(rate.Limit(s.cfg.ResendRate), s.cfg.ResendBurst)
	}
	if !m.resends.Allow() {
		s.resendsDropped.Add(1)
		return nil
	}
	r.By = m.user
	s.forward(m, r.Of, &r)
	return nil
}

// onMissed forwards a Missed to the member it answers, signed with the
// sender. A Missed answers a Resend: a member sends at most one per ask
// forwarded to it (member.asked), the rest are dropped, counted with the
// dropped asks. Before, a member could send them without bound and get
// any other member cut off for the backlog (abuse probe, 2026-12-01);
// an asker whose answer was dropped asks again on its own timer.
func (s *Server) onMissed(m *member, body []byte) error {
	var x proto.Missed
	if err := proto.Unmarshal(body, &x); err != nil {
		return proto.Fatalf(proto.CodeBadBody, "missed: %v", err)
	}
	if m.asked.Add(-1) < 0 {
		m.asked.Add(1)
		s.resendsDropped.Add(1)
		return nil
	}
	x.From = m.user
	s.forward(m, x.To, &x)
	return nil
}

// reply encodes msg into a pooled buffer and writes it to m. Event loop only.
func (s *Server) reply(m *member, msg wire.Message) {
	bb := bytebufferpool.Get()
	var err error
	bb.B, err = wire.AppendFrame(bb.B, msg)
	if err == nil {
		m.write(bb.B, s.cfg.MaxOutbound)
	} else {
		s.log.Error("encoding reply", "type", fmt.Sprintf("%T", msg), "err", err)
	}
	bytebufferpool.Put(bb)
}

// errorFrame encodes a fatal Error frame. Errors are rare, so it allocates.
func errorFrame(code proto.Code, reason string) []byte {
	b, err := wire.AppendFrame(nil, &proto.Error{Code: code, Reason: reason, Fatal: true})
	if err != nil {
		b, _ = wire.AppendFrame(nil, &proto.Error{Code: code, Fatal: true})
	}
	return b
}
