package central

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/connlimit"
	"nearchat/pkg/gnetlog"
	"nearchat/pkg/mono"
	"nearchat/pkg/proto"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/unsent"
	"nearchat/pkg/wire"
)

// helloTimeout closes a control connection that has not said Hello.
const helloTimeout = 5 * time.Second

// Bounds of one control connection. Replies and pushes that the client does
// not read wait in its outbound buffer; past a quarter of Config.MaxOutbound
// its input is left unread, and a connection whose unread input grows past
// ctrlMaxInbound meanwhile, that stays paused for ctrlMaxPause, or whose
// output passes MaxOutbound, is cut off as a slow consumer. One client that
// never reads thus costs Central about MaxOutbound at most.
const (
	ctrlMaxInbound = 256 << 10
	ctrlMaxPause   = 5 * time.Second
)

// link is the part of a gnet.Conn the control code uses. On the event
// loops it is the gnet.Conn itself; tests drive the core (state, requests,
// relocation) through a recorder instead, with no socket (core_test.go).
// Callbacks may run synchronously and get a nil gnet.Conn: they use the
// link they captured.
type link interface {
	AsyncWrite(frame []byte, callback gnet.AsyncCallback) error
	OutboundBuffered() int
	Wake(callback gnet.AsyncCallback) error
	Close() error
}

// conn is one control connection.
type conn struct {
	gc       link
	opened   time.Time
	dead     atomic.Bool         // a fatal error was sent: ignore further input
	counted  bool                // holds a descriptor of Central's budget; loop only
	newcomer *connlimit.Newcomer // its place until Hello, evictable (connlimit.AcquireNew)
	greeted  bool                // a Hello frame arrived (frames may be MaxFrame now); loop only
	queued   atomic.Int64        // bytes handed to AsyncWrite, not yet on the loop
	outbound atomic.Int64        // the outbound buffer as last seen on the loop
	paused   atomic.Bool         // input left unread until the output drains
	pausedAt atomic.Int64        // when paused was set, mono.Now()
	lastRead atomic.Int64        // when input last arrived, mono.Now()
	partial  atomic.Int64        // when the frame still incomplete began to arrive (0: none), mono.Now()
	user     *user               // guarded by Central.mu; nil before Hello
	v        int                 // the protocol version of the Welcome; guarded by Central.mu
	// leaving: a LeaveRoom, or a Holding with left rooms, arrived since
	// the last Pong; deferred: Pongs waiting on a store Flush (pongLocked).
	// Guarded by Central.mu.
	leaving  bool
	deferred int
}

// frameTimeout bounds how long a frame may take to arrive once begun, as
// on the chat servers: a trickle of bytes is not a live client.
const frameTimeout = 10 * time.Second

// control is the gnet event handler of the control port.
type control struct {
	gnet.BuiltinEventEngine
	c    *Central
	eng  gnet.Engine
	boot chan string // the bound address, once

	loopsUp chan struct{} // closed by the first OnTick
	once    sync.Once
}

func (c *Central) startControl() error {
	h := &control{c: c, boot: make(chan string, 1), loopsUp: make(chan struct{})}
	c.ctrl = h
	// The event loops listen on a private Unix socket, never on the
	// network: gnet's accept loop ends the engine on EMFILE. Plaintext
	// connections are accepted by connlimit.Feed; with TLS a front on
	// ControlListen relays to the socket (gnet has no TLS).
	network, listen, sockDir, err := tlsconfig.Backend("")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.cfg.ControlListen)
	if err != nil {
		os.RemoveAll(sockDir)
		return err
	}
	var tlsLn net.Listener
	if c.cfg.TLS != nil {
		// A relayed TLS connection holds two descriptors in the front and
		// one on the event loops (counted in OnOpen).
		// Until Central first answers it (a Welcome, once it said Hello),
		// one may be evicted for a newer connection (connlimit.AcquireNew).
		tlsLn = tls.NewListener(c.ctrlPort.NewcomerListener(ln, 2), c.cfg.TLS)
	}
	go func() {
		c.gnetDone <- gnet.Run(h, network+"://"+listen,
			gnet.WithLoadBalancing(gnet.LeastConnections), // Engine.Register needs it
			gnet.WithTicker(true),                         // the first OnTick says the loops exist
			gnet.WithMulticore(c.cfg.Multicore),
			gnet.WithLogger(gnetlog.New(c.log)),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithTCPKeepAlive(time.Minute),
			// A restarted Central must get its port back while the last
			// instance's connections sit in TIME_WAIT.
			gnet.WithReuseAddr(true))
	}()
	fail := func(err error) error {
		ln.Close()
		os.RemoveAll(sockDir)
		return err
	}
	select {
	case <-h.boot:
		select {
		case <-h.loopsUp:
		case err := <-c.gnetDone:
			return fail(err)
		}
		c.ctrlAddr = ln.Addr().String()
		if tlsLn != nil {
			newcomer, _ := wire.AppendFrame(nil, &proto.Error{Code: proto.CodeServerFull, Reason: evictedNewcomer, Fatal: true})
			settled, _ := wire.AppendFrame(nil, &proto.Error{Code: proto.CodeServerFull, Reason: evictedForShare, Fatal: true})
			c.ctrlFront = tlsconfig.NewFront(tlsLn, network, listen, sockDir, c.log.Debug, func(s bool) []byte {
				if s {
					return settled
				}
				return newcomer
			})
			return nil
		}
		c.ctrlSock, c.ctrlLn, c.ctrlFed = sockDir, ln, make(chan struct{})
		full, _ := wire.AppendFrame(nil, &proto.Error{Code: proto.CodeServerFull, Reason: "Central has too many connections; try again later", Fatal: true})
		go func() {
			defer close(c.ctrlFed)
			connlimit.Feed(ln, h.eng, c.lim, full, c.log.Warn)
		}()
		return nil
	case err := <-c.gnetDone:
		return fail(err)
	}
}

func (c *Central) stopControl(ctx context.Context) error {
	c.mu.Lock()
	for cn := range c.conns {
		c.fatalLocked(cn, proto.CodeShutdown, "central is shutting down")
	}
	c.mu.Unlock()
	var errs []error
	if c.ctrlFront != nil {
		c.ctrlFront.StopAccepting()
	}
	if c.ctrlLn != nil {
		c.ctrlLn.Close()
		<-c.ctrlFed
	}
	if err := c.ctrl.eng.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("central: stop control port: %w", err))
	}
	select {
	case err := <-c.gnetDone:
		c.gnetDone <- err
		if err != nil {
			errs = append(errs, fmt.Errorf("central: control port: %w", err))
		}
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("central: control port did not stop: %w", ctx.Err()))
	}
	if c.ctrlFront != nil {
		c.ctrlFront.Close()
	}
	if c.ctrlSock != "" {
		os.RemoveAll(c.ctrlSock)
	}
	return errors.Join(errs...)
}

// OnTick runs on gnet's ticker, which starts once the event loops exist;
// its first run lets startControl start enrolling connections.
func (h *control) OnTick() (time.Duration, gnet.Action) {
	h.once.Do(func() { close(h.loopsUp) })
	return time.Hour, gnet.None
}

// OnBoot keeps the engine.
func (h *control) OnBoot(eng gnet.Engine) gnet.Action {
	h.eng = eng
	h.boot <- ""
	return gnet.None
}

// OnOpen runs on the connection's event loop.
func (h *control) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	cn := &conn{gc: gc}
	cn.lastRead.Store(mono.Now())
	gc.SetContext(cn)
	c := h.c
	nc, ok := c.ctrlPort.AcquireNew(gc.RemoteAddr(), 1, func(settled bool) { c.evict(cn, settled) })
	if !ok {
		cn.dead.Store(true)
		b, _ := wire.AppendFrame(nil, &proto.Error{Code: proto.CodeServerFull, Reason: "Central has too many connections (from your address or in all); try again later", Fatal: true})
		return b, gnet.Close
	}
	cn.counted, cn.newcomer = true, nc
	c.open(cn)
	return nil, gnet.None
}

// evict closes cn for a newer connection that needs its place under a
// connection cap (connlimit.AcquireNew): cn has not said Hello, or, when
// settled, its address holds more of a full port than the newer one's.
func (c *Central) evict(cn *conn, settled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if settled {
		c.fatalLocked(cn, proto.CodeServerFull, evictedForShare)
		return
	}
	if cn.user != nil {
		return // its Hello came in meanwhile: it keeps its place
	}
	c.fatalLocked(cn, proto.CodeServerFull, evictedNewcomer)
}

// evictedNewcomer and evictedForShare say why a connection is evicted
// before its Hello, and after it for a fair share: in plaintext and,
// from the TLS front, over TLS.
const (
	evictedNewcomer = "a newer connection needed this one's place (Central is at its connection limit for your address or in all) and it had not said Hello"
	evictedForShare = "Central is at its connection limit, and your address holds more of its connections than any other: a connection from an address holding fewer took this one's place; try again later"
)

// open enrolls cn, which has helloTimeout to say Hello.
func (c *Central) open(cn *conn) {
	c.mu.Lock()
	cn.opened = c.now()
	c.conns[cn] = struct{}{}
	c.mu.Unlock()
}

// OnClose runs on the connection's event loop.
func (h *control) OnClose(gc gnet.Conn, _ error) gnet.Action {
	cn, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None
	}
	c := h.c
	if cn.counted {
		cn.newcomer.Done()
		c.ctrlPort.Release(gc.RemoteAddr(), 1)
	}
	c.closed(cn)
	return gnet.None
}

// closed forgets cn, and ends its user's session if cn held it.
func (c *Central) closed(cn *conn) {
	c.mu.Lock()
	delete(c.conns, cn)
	if u := cn.user; u != nil && u.sess == cn {
		c.offlineLocked(u)
	}
	c.mu.Unlock()
}

// OnTraffic decodes every complete frame buffered; it runs on the
// connection's event loop.
func (h *control) OnTraffic(gc gnet.Conn) gnet.Action {
	cn := gc.Context().(*conn)
	cn.lastRead.Store(mono.Now())
	for {
		n := gc.InboundBuffered()
		if cn.dead.Load() {
			gc.Discard(n)
			return gnet.None
		}
		if h.c.backPressure(cn, n) {
			return gnet.None
		}
		limit := wire.MaxFrame
		if !cn.greeted {
			limit = proto.MaxHelloFrame
		}
		t, body, size, err := wire.Next(gc, limit)
		if errors.Is(err, wire.ErrIncomplete) {
			if gc.InboundBuffered() == 0 {
				cn.partial.Store(0)
			} else if cn.partial.Load() == 0 {
				cn.partial.Store(mono.Now())
			}
			return gnet.None
		}
		var msg wire.Message
		if err == nil && !cn.greeted && t != proto.THello && t != proto.TError {
			// As on a chat server, whatever the type, known or not.
			cn.partial.Store(0)
			gc.Discard(size)
			h.c.fatal(cn, proto.CodeNoHello, fmt.Sprintf("the first frame must be Hello, got type 0x%02x", byte(t)))
			continue
		}
		if err == nil {
			cn.partial.Store(0)
			msg, err = proto.Decode(t, body) // copies what it keeps out of gc's buffer
			gc.Discard(size)
			cn.greeted = cn.greeted || t == proto.THello
			if err != nil && t == proto.TError {
				// An Error frame whose body does not decode may have
				// been fatal, and is not answered either: taken as the
				// client closing.
				h.c.log.Debug("unreadable error frame from a client", "remote", gc.RemoteAddr(), "err", err)
				h.c.mu.Lock()
				h.c.closeQuietlyLocked(cn)
				h.c.mu.Unlock()
				continue
			}
		}
		if err != nil {
			h.c.fatal(cn, proto.CodeOf(err), err.Error())
			continue
		}
		h.c.handle(cn, msg)
	}
}

// closeQuietlyLocked closes cn without a word, as a client's fatal Error
// asks.
func (c *Central) closeQuietlyLocked(cn *conn) {
	cn.dead.Store(true)
	cn.gc.Close()
}

func (c *Central) fatal(cn *conn, code proto.Code, reason string) {
	c.mu.Lock()
	c.fatalLocked(cn, code, reason)
	c.mu.Unlock()
}

// backPressure reports whether cn's input must stay unread for now: its
// output is over a quarter of MaxOutbound. It cuts off a connection whose unread
// input passes ctrlMaxInbound meanwhile. Event loop only.
func (c *Central) backPressure(cn *conn, inbound int) bool {
	out := int64(cn.gc.OutboundBuffered())
	cn.outbound.Store(out)
	pause := int64(c.cfg.MaxOutbound / 4)
	if out+cn.queued.Load() <= pause {
		cn.paused.Store(false)
		return false
	}
	if !cn.paused.Swap(true) {
		cn.pausedAt.Store(mono.Now())
	}
	if inbound > ctrlMaxInbound {
		c.fatal(cn, proto.CodeSlowConsumer, fmt.Sprintf("more than %d bytes of replies unread", pause))
	}
	return true
}

// wakePausedLocked asks the loops to look again at connections whose input
// waits for their output to drain (gnet has no "writable" callback), and
// cuts off those paused for longer than ctrlMaxPause.
func (c *Central) wakePausedLocked() {
	for cn := range c.conns {
		if !cn.paused.Load() || cn.dead.Load() {
			continue
		}
		if mono.Now()-cn.pausedAt.Load() > ctrlMaxPause.Nanoseconds() {
			c.fatalLocked(cn, proto.CodeSlowConsumer, fmt.Sprintf("replies unread for %v", ctrlMaxPause))
			continue
		}
		_ = cn.gc.Wake(nil)
	}
}

// writeLocked queues frame on cn; frame must not change afterwards. A
// connection whose unsent output would pass MaxOutbound is cut off
// instead.
func (c *Central) writeLocked(cn *conn, frame []byte) {
	if cn.dead.Load() {
		return
	}
	n := int64(len(frame))
	if limit := int64(c.cfg.MaxOutbound); cn.queued.Load()+cn.outbound.Load()+n > limit {
		c.fatalLocked(cn, proto.CodeSlowConsumer, fmt.Sprintf("more than %d bytes unread (limit %d); read your control connection", cn.queued.Load()+cn.outbound.Load()+n, limit))
		return
	}
	cn.queued.Add(n)
	err := cn.gc.AsyncWrite(frame, func(gnet.Conn, error) error {
		cn.queued.Add(-n)
		cn.outbound.Store(int64(cn.gc.OutboundBuffered()))
		return nil
	})
	if err != nil {
		cn.queued.Add(-n)
		c.log.Debug("control write", "err", err)
	}
}

func (c *Central) sendLocked(cn *conn, m wire.Message) {
	frame, err := wire.AppendFrame(nil, m)
	if err != nil {
		c.log.Error("encode control frame", "type", fmt.Sprintf("%T", m), "err", err)
		return
	}
	c.writeLocked(cn, frame)
}

// fatalLocked sends a fatal Error and closes cn once it is written.
func (c *Central) fatalLocked(cn *conn, code proto.Code, reason string) {
	if cn.dead.Load() {
		return
	}
	if code == proto.CodeSlowConsumer {
		// The peer may not read the Error either: the log is where the
		// cut-off shows.
		user := ""
		if cn.user != nil {
			user = cn.user.name
		}
		c.log.Info("control connection cut off", "user", user, "code", code, "reason", reason)
	}
	frame, err := wire.AppendFrame(nil, &proto.Error{Code: code, Reason: reason, Fatal: true})
	cn.dead.Store(true)
	if err != nil {
		cn.gc.Close()
		return
	}
	closed := func(gnet.Conn, error) error {
		// A peer that does not read gets a reset, so that what the kernel
		// could not send does not outlive the connection in an orphan
		// socket (pkg/unsent).
		if s, ok := cn.gc.(unsent.Socket); ok {
			unsent.Abort(s)
		}
		return cn.gc.Close()
	}
	if cn.gc.AsyncWrite(frame, closed) != nil {
		cn.gc.Close()
	}
}

// offlineLocked ends u's session: its requests and pushes wait for it to
// connect again (requests for ReconnectGrace: tickRequestsLocked).
func (c *Central) offlineLocked(u *user) {
	u.sess = nil
	u.offlineSince = c.now()
	u.dropped = u.offlineSince
	c.online--
	if c.cfg.ReconnectGrace <= 0 {
		c.failOfflineLocked(u)
	}
}

// tickHelloLocked closes connections that never said Hello, and those
// silent for ControlIdle after it (on the real clock: silence is real).
func (c *Central) tickHelloLocked(now time.Time) {
	c.wakePausedLocked()
	idle := c.cfg.ControlIdle.Nanoseconds()
	real := mono.Now()
	for cn := range c.conns {
		switch {
		case cn.dead.Load():
		case cn.user == nil && now.Sub(cn.opened) > helloTimeout:
			c.fatalLocked(cn, proto.CodeTimeout, "no hello within "+helloTimeout.String())
		case cn.user != nil && idle > 0 && real-cn.lastRead.Load() > idle:
			c.fatalLocked(cn, proto.CodeTimeout, fmt.Sprintf("nothing received for %v (clients ping)", c.cfg.ControlIdle))
		case !cn.paused.Load() && cn.partial.Load() != 0 && real-cn.partial.Load() > frameTimeout.Nanoseconds():
			// Paused, the frame waits on us, not on the client.
			c.fatalLocked(cn, proto.CodeTimeout, "a frame begun "+frameTimeout.String()+" ago is still incomplete")
		}
	}
}

// handle applies one decoded frame from cn.
func (c *Central) handle(cn *conn, msg wire.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cn.dead.Load() {
		return
	}
	u := cn.user
	if e, ok := msg.(*proto.Error); ok {
		// Never answered with an Error, before the Hello too: two peers
		// that did would trade them forever. A fatal one is the client
		// closing.
		name := "" // before the Hello
		if u != nil {
			name = u.name
		}
		c.log.Debug("error from a client", "user", name, "code", e.Code, "reason", e.Reason, "fatal", e.Fatal)
		if e.Fatal {
			c.closeQuietlyLocked(cn)
		}
		return
	}
	if u == nil {
		hello, ok := msg.(*proto.Hello)
		if !ok {
			c.fatalLocked(cn, proto.CodeNoHello, "the first frame must be Hello")
			return
		}
		c.helloLocked(cn, hello)
		return
	}
	if u.sess != cn {
		return // replaced; its close is on the way
	}
	switch m := msg.(type) {
	case *proto.Ping:
		c.pongLocked(cn, m)
	case *proto.Pong:
	case *proto.Request:
		c.handleRequestLocked(u, m)
	case *proto.Answer:
		c.handleAnswerLocked(cn, u, m)
	case *proto.AssignAck:
		c.ackLocked(u, m)
	case *proto.Unreachable:
		c.unreachableLocked(cn, u, m)
	case *proto.Holding:
		if len(m.Left) > 0 && cn.v < 8 {
			// As a chat server refuses a frame newer than its
			// connection: the client said it does not speak this.
			c.sendLocked(cn, &proto.Error{Code: proto.CodeBadRequest, Reason: fmt.Sprintf("a Holding's left rooms need protocol version 8; this connection speaks %d", cn.v)})
			return
		}
		c.holdingLocked(cn, u, m)
	case *proto.Latency:
		if cn.v < 7 {
			c.sendLocked(cn, &proto.Error{Code: proto.CodeUnknownType, Reason: fmt.Sprintf("Latency needs protocol version 7; this connection speaks %d", cn.v)})
			return
		}
		c.latencyFrameLocked(cn, u, m)
	case *proto.LeaveRoom:
		if err := proto.CheckRoom(m.Room); err != nil {
			c.badIDLocked(cn, err)
			return
		}
		cn.leaving = true
		if !c.leaveLocked(u, m.Room, "leave") {
			c.sendLocked(cn, &proto.Error{Code: proto.CodeNotFound, Reason: "you are not a member of this room", Ref: m.Room})
		}
	case *proto.Hello:
		c.sendLocked(cn, &proto.Error{Code: proto.CodeBadRequest, Reason: "hello was already done on this connection"})
	default:
		c.sendLocked(cn, &proto.Error{Code: proto.CodeUnknownType, Reason: fmt.Sprintf("frame type 0x%02x is not used on Central's control port", byte(msg.FrameType()))})
	}
}

// badIDLocked answers a frame naming a request or room by an id Central
// could not have issued, without the Ref that echoes an id it does not
// know: a client sent Answers of 60,000-byte ids and read each back in
// an Error, as many bytes out as in (black-box sweep, 2026-12-04: 2.56 GB
// in 15 s on one connection). err says what is wrong with the id; its
// length is checked first, so it quotes at most a valid id's length.
func (c *Central) badIDLocked(cn *conn, err error) {
	c.sendLocked(cn, &proto.Error{Code: proto.CodeBadRequest, Reason: err.Error()})
}

// maxDeferredPongs bounds the Pongs of one connection that wait on a store
// Flush: a client pings every few seconds, and one Ping more than this
// while the store cannot write goes unanswered (it pings again).
const maxDeferredPongs = 4

// flushWait bounds a Flush that a Pong or a deregistration waits on: the
// leader's lease (2 s by default) runs out well before, and a leader that
// cannot write by then has stepped down.
const flushWait = 5 * time.Second

// pongLocked answers a Ping. Its Pong tells the client that every leave it
// sent before the Ping is taken in (the client stops repeating them in its
// Holding reports, and quits on it), so after a LeaveRoom or a Holding with
// left rooms, and while an earlier such Pong waits, the Pong waits for the
// store to have written everything before it (a Store that writes behind,
// etcd: rel7 sweep, 2026-12-03, R7-2, where a leader that lost etcd
// answered leaves it then lost at its step-down). A Flush that fails
// sends no Pong: the client keeps the leave in its reports, and pings
// again. The memory store, and a Ping with no leave before it, are
// answered at once.
func (c *Central) pongLocked(cn *conn, m *proto.Ping) {
	pong := &proto.Pong{ID: m.ID, At: m.At}
	if c.flush == nil || !cn.leaving && cn.deferred == 0 {
		c.sendLocked(cn, pong)
		return
	}
	if cn.deferred >= maxDeferredPongs {
		c.log.Debug("Ping dropped: Pongs wait on the store already", "user", cn.user.name, "waiting", cn.deferred)
		return
	}
	cn.leaving = false
	cn.deferred++
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, flushWait)
		err := c.flush.Flush(ctx)
		cancel()
		c.mu.Lock()
		defer c.mu.Unlock()
		cn.deferred--
		switch {
		case err != nil:
			cn.leaving = true // the next Ping waits for the store again
			user := ""
			if cn.user != nil {
				user = cn.user.name
			}
			c.log.Warn("a leave is not stored yet: Pong withheld (the client reports the leave again)", "user", user, "err", err)
		case cn.user != nil && cn.user.sess == cn:
			c.sendLocked(cn, pong) // a dead connection's write is dropped
		}
	}()
}

// latencyFrameLocked takes a vector reported on the control connection,
// checked as PUT /v1/clients/{name}/latency checks one; it answers only a
// refusal (a non-fatal Error with Ref proto.LatencyRef).
func (c *Central) latencyFrameLocked(cn *conn, u *user, m *proto.Latency) {
	in := make(map[string]centralapi.Sample, len(m.Servers))
	for _, s := range m.Servers {
		if _, dup := in[s.Server]; dup {
			c.sendLocked(cn, &proto.Error{Code: proto.CodeBadRequest, Reason: fmt.Sprintf("server %.64q twice in the vector", s.Server), Ref: proto.LatencyRef})
			return
		}
		in[s.Server] = centralapi.Sample{MedianUS: s.MedianUS, SpreadUS: s.SpreadUS, Count: s.Count}
	}
	lat, err := checkLatency(in)
	if err != nil {
		c.sendLocked(cn, &proto.Error{Code: proto.CodeBadRequest, Reason: err.Error(), Ref: proto.LatencyRef})
		return
	}
	if !c.latencyLocked(u, lat) {
		c.sendLocked(cn, &proto.Error{Code: proto.CodeRateLimited, Reason: latencyLimited, Ref: proto.LatencyRef})
	}
}

func (c *Central) helloLocked(cn *conn, m *proto.Hello) {
	v, err := proto.CheckHello(m, "this Central")
	if err != nil {
		c.fatalLocked(cn, proto.CodeOf(err), proto.ReasonOf(err))
		return
	}
	u := c.tokens[m.Token]
	if m.Token == "" || u == nil {
		c.fatalLocked(cn, proto.CodeUnauthorized, "unknown session token: register over REST first")
		return
	}
	if old := u.sess; old != nil {
		c.fatalLocked(old, proto.CodeConflict, "replaced by a newer connection")
		old.user = nil
	} else {
		c.online++
	}
	cn.newcomer.Settle()
	u.sess = cn
	u.restored = false
	u.dropped = time.Time{}
	cn.user, cn.v = u, v
	c.sendLocked(cn, &proto.Welcome{V: v, Server: proto.CentralName, Max: wire.MaxFrame, User: u.name})
	if v >= 9 {
		c.listServersLocked(cn)
	}
	now := c.now()
	for _, p := range u.pushes {
		p.first = now // the give-up clock stood still while u was away
		c.sendPushLocked(p, now)
	}
	// Requests waiting for u's answer: made while u was awaited
	// (awaitedLocked), so never told, or told on the connection this one
	// replaces (going offline would have ended them).
	for q := range u.reqs {
		if _, ok := q.waiting[u]; ok {
			c.incomingLocked(u, q)
		}
	}
}
