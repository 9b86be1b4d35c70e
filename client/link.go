package client

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// link is one connection to a chat server, carrying one room membership.
// Its reader goroutine hands every frame to the session loop; its writer
// goroutine drains a byte buffer, so the loop never blocks on a socket.
type link struct {
	s        *Session
	server   proto.ServerRef
	serverID string      // as the server named itself in Welcome
	pc       *proto.Conn // reads; the writer goroutine writes to conn
	conn     net.Conn

	mu      sync.Mutex
	buf     []byte
	closing bool
	wake    chan struct{}

	// Owned by the session loop.
	epoch    uint64
	started  time.Time // when the dial began
	welcomed bool
	joined   bool
	dead     bool
	suspect  bool              // silent past the liveness deadline; reported Broken, still open
	silentAt time.Time         // when it was found silent
	members  map[string]uint64 // other members present, with the LastSent they announced
	lastSeq  uint64
	heardAt  time.Time     // when the last frame arrived
	pingAt   time.Time     // when the last liveness ping went out
	beats    bool          // the server writes at least every beat (proto.Beat); false: we ping
	beat     time.Duration // the interval last asked for
	late     time.Duration // smoothed lateness of frames past a due beat
	latevar  time.Duration // its smoothed deviation
	rtt      time.Duration // smoothed round trip: the handshake's, then each Pong's (and timed Ack's)
	rttvar   time.Duration // its smoothed deviation
	sampled  time.Time     // when rtt last took a sample
	timed    uint64        // the message whose Ack is timed (0: none), as TCP times one segment
	timedAt  time.Time     // when it was written

	// Resend answers going out on this connection (Session.pump): the asks
	// being answered, oldest first, and the sizes of the resent messages
	// written and not yet acknowledged (Ack.Seq 0), oldest first, with
	// their sum. They end with the connection: the asker asks again.
	answers   []*answering
	racks     []int
	rinflight int
}

// dialLink opens the TCP connection (and TLS, if the Dialer speaks it)
// to server within HandshakeTimeout. It runs on the caller's goroutine;
// the link is not started. open sends Hello and Join together and the
// Welcome is read with the rest (see welcome), so a join takes two round
// trips (the connect's, then Welcome and Joined), not three.
func dialLink(ctx context.Context, s *Session, server proto.ServerRef) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	start := time.Now()
	d := s.cfg.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	nc, err := d.DialContext(ctx, "tcp", server.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server.Addr, err)
	}
	return &link{s: s, server: server, pc: proto.NewConn(nc, 0), conn: nc, wake: make(chan struct{}, 1), started: start, heardAt: time.Now()}, nil
}

// open queues Hello and join as one write: the server answers Welcome,
// then Joined. Loop only, after start.
func (l *link) open(join *proto.Join) {
	l.send(&proto.Hello{V: wire.Version, Agent: l.s.cfg.Agent})
	l.send(join)
}

// welcome takes the server's first frame, m, received at now. It must be
// a Welcome in our version (an Error is returned as the error). Connect and
// Hello/Welcome took two round trips (more with TLS): an overestimate of
// the RTT to start from, with TCP's initial deviation (half of it), which
// Pongs correct. The prober's figures for the server, from many round
// trips, are a better start when there are any. Loop only.
func (l *link) welcome(m wire.Message, now time.Time) error {
	w, err := proto.CheckWelcome(m)
	if err != nil {
		return fmt.Errorf("handshake with %s: %w", l.server.Addr, err)
	}
	l.welcomed = true
	l.rtt = now.Sub(l.started) / 2
	l.rttvar = l.rtt / 2
	if hint := l.s.cfg.RTTHint; hint != nil {
		if rtt, spread, ok := hint(l.server.ID); ok && rtt > 0 {
			l.rtt, l.rttvar = rtt, max(spread, rtt/8)
		}
	}
	// Either start is a fresh sample: the first Ping for one (beatPing)
	// waits as after any other, rather than going out with the Join.
	l.sampled = now
	l.serverID = w.Server
	if l.serverID == "" {
		l.serverID = l.server.ID
	}
	if w.V >= 6 && l.s.cfg.Liveness > 0 {
		// The server can write us something whenever the connection has
		// been quiet for the ping interval: silence then means a dead
		// path, with no Ping and Pong for it.
		l.beats = true
		beat, _ := l.s.beatTimes(l)
		l.askBeats(beat)
	}
	return nil
}

// limit is how long a connection with beats may be silent before it is
// taken for dead: the beat interval (at least the ping interval, every)
// and the deadline a Ping would have had, at least twice the lateness of
// due beats and four deviations. Loop only.
func (l *link) limit(every, deadline time.Duration) time.Duration {
	return max(every, l.beat) + max(deadline, 2*(l.late+4*l.latevar))
}

// askBeats asks the server for a beat every interval (the ping interval,
// which grows with the RTT, and the frames' lateness), unless it beats
// within a quarter of that already: a starved client or a slow path is
// beaten less often, as a Ping waited for its Pong before the next.
// Loop only.
func (l *link) askBeats(every time.Duration) {
	every = min(max(every.Round(time.Millisecond), proto.BeatMin*time.Millisecond), proto.BeatMax*time.Millisecond)
	if d := every - l.beat; d < every/4 && -d < every/4 {
		return
	}
	l.beat = every
	l.send(&proto.Beat{Every: uint64(every / time.Millisecond)})
}

// heard notes a frame that arrived at now; a Pong to one of our pings
// updates the smoothed RTT and its deviation as TCP does (RFC 6298 gains
// 1/8 and 1/4), so a loaded path's jitter widens the liveness deadline.
// Loop only.
func (l *link) heard(now time.Time, m wire.Message) {
	if gap := now.Sub(l.heardAt); l.beats && l.joined && gap >= l.beat {
		// A beat was due: how late this frame came past it (a loaded
		// server or path, or this process starved) is smoothed, with
		// its deviation, as TCP smooths round trips, and widens the
		// silence deadline as a Ping's RTT would have (limit).
		late := gap - l.beat
		l.latevar += (max(l.late-late, late-l.late) - l.latevar) / 4
		l.late += (late - l.late) / 8
	}
	l.heardAt = now
	if p, ok := m.(*proto.Pong); ok && p.At > 0 {
		l.sample(now.Sub(time.Unix(0, p.At)), now)
	}
}

// sample takes d, a round trip that ended at now, into the smoothed RTT
// and its deviation. Loop only.
func (l *link) sample(d time.Duration, now time.Time) {
	if d < 0 || d >= time.Minute {
		return
	}
	l.rttvar += (max(l.rtt-d, d-l.rtt) - l.rttvar) / 4
	l.rtt += (d - l.rtt) / 8
	l.sampled = now
}

// timeAck times the Ack of message num, just written, unless one is timed
// already: a message's Ack is a round trip as a Pong is (the server
// acknowledges as it fans out), so a room that chats needs no Ping for
// its RTT. A timed message whose Ack never came (the connection moved on)
// is given up after a while. Loop only.
func (l *link) timeAck(num uint64) {
	now := time.Now()
	if l.timed == 0 || now.Sub(l.timedAt) > timedFor {
		l.timed, l.timedAt = num, now
	}
}

// acked takes the round trip of the timed message when num is its Ack.
// Loop only.
func (l *link) acked(num uint64, now time.Time) {
	if num == l.timed {
		l.timed = 0
		l.sample(now.Sub(l.timedAt), now)
	}
}

// timedFor is how long a timed Ack is waited for.
const timedFor = 10 * time.Second

// start launches the reader and writer. Loop only.
func (l *link) start() {
	l.s.wg.Add(2)
	go l.readLoop()
	go l.writeLoop()
}

func (l *link) readLoop() {
	defer l.s.wg.Done()
	// The first frame is the Welcome, within HandshakeTimeout.
	wait := l.s.cfg.HandshakeTimeout
	for {
		if wait > 0 {
			_ = l.conn.SetReadDeadline(time.Now().Add(wait))
		}
		wait = l.s.cfg.IdleTimeout
		if h := l.s.cfg.beforeRead; h != nil {
			h()
		}
		m, err := l.recv()
		in := inbound{l: l, m: m, err: err}
		// Most frames find room in the channel: a send that cannot block
		// costs the runtime far less than a select of two cases, which
		// was 3% of the CPU of a process of 2,400 members.
		select {
		case l.s.frames <- in:
		default:
			select {
			case l.s.frames <- in:
			case <-l.s.done:
				l.conn.Close()
				return
			}
		}
		if err != nil {
			l.conn.Close()
			return
		}
	}
}

// recv reads the next frame.
func (l *link) recv() (wire.Message, error) {
	t, body, err := l.pc.Next()
	if err != nil {
		return nil, err
	}
	return decode(t, body)
}

// decode decodes a frame of type t; a beat is not decoded but is the
// shared beatPong. A beat is most of what a member of a quiet room reads
// (about 5 a second in a room of 3 at 1 msg/s each, against 3 chat
// frames), and decoding each one (msgpack by reflection, and a Pong
// allocated) was about 2% of the CPU of a process of 2,400 members.
func decode(t wire.Type, body []byte) (wire.Message, error) {
	if t == proto.TPong && bytes.Equal(body, beatBody) {
		return beatPong, nil
	}
	return proto.Decode(t, body)
}

// beatPong is what every beat (proto.Beat: an empty Pong) decodes to,
// shared by every link: read only.
var beatPong = &proto.Pong{}

// beatBody is a beat's body as the chat server encodes it; a beat encoded
// otherwise is decoded as any frame.
var beatBody = func() []byte {
	f, err := wire.AppendFrame(nil, beatPong)
	if err != nil {
		panic(err)
	}
	return f[wire.HeaderSize:]
}()

func (l *link) writeLoop() {
	defer l.s.wg.Done()
	var b []byte
	for {
		l.mu.Lock()
		if len(l.buf) == 0 {
			closing := l.closing
			l.mu.Unlock()
			if closing {
				l.conn.Close()
				return
			}
			<-l.wake
			continue
		}
		b, l.buf = l.buf, b[:0]
		l.mu.Unlock()
		if _, err := l.conn.Write(b); err != nil {
			l.mu.Lock()
			l.closing, l.buf = true, nil
			l.mu.Unlock()
			l.conn.Close()
			return
		}
	}
}

func (l *link) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// send queues m. Safe for concurrent use; a no-op once the link closes.
func (l *link) send(m wire.Message) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return
	}
	var err error
	l.buf, err = wire.AppendFrame(l.buf, m)
	l.mu.Unlock()
	if err != nil {
		l.s.log.Error("cannot encode frame", "type", fmt.Sprintf("%T", m), "err", err)
		return
	}
	l.signal()
}

// close ends the link. With leave it says Leave after what is queued and
// lets the writer close the socket once that is out (bounded by a write
// deadline); otherwise the socket closes at once. Idempotent.
func (l *link) close(leave bool) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return
	}
	l.closing = true
	if leave {
		l.buf, _ = wire.AppendFrame(l.buf, &proto.Leave{})
		_ = l.conn.SetWriteDeadline(time.Now().Add(time.Second))
	} else {
		l.buf = nil
	}
	l.mu.Unlock()
	if !leave {
		l.conn.Close()
	}
	l.signal()
}
