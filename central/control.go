package central

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"nearchat/pkg/gnetlog"
	"nearchat/pkg/proto"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

// helloTimeout closes a control connection that has not said Hello.
const helloTimeout = 10 * time.Second

// conn is one control connection.
type conn struct {
	gc     gnet.Conn
	opened time.Time
	dead   atomic.Bool // a fatal error was sent: ignore further input
	user   *user       // guarded by Central.mu; nil before Hello
	// queued counts the bytes handed to AsyncWrite that the event loop
	// has not taken yet: with OutboundBuffered, the backlog a client that
	// does not read leaves in Central.
	queued atomic.Int64
}

// control is the gnet event handler of the control port.
type control struct {
	gnet.BuiltinEventEngine
	c    *Central
	eng  gnet.Engine
	boot chan string // the bound address, once
}

func (c *Central) startControl() error {
	h := &control{c: c, boot: make(chan string, 1)}
	c.ctrl = h
	// With TLS the event loops listen on a private Unix socket and a TLS
	// front on ControlListen relays to them (gnet has no TLS).
	network, listen, sockDir := "tcp", c.cfg.ControlListen, ""
	var tlsLn net.Listener
	if c.cfg.TLS == nil {
		// gnet reports a port in use as "setsockopt: bad file descriptor":
		// bind it once here, so the error says what is wrong.
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		ln.Close()
	}
	if c.cfg.TLS != nil {
		var err error
		if tlsLn, err = tls.Listen("tcp", c.cfg.ControlListen, c.cfg.TLS); err != nil {
			return err
		}
		if network, listen, sockDir, err = tlsconfig.Backend(""); err != nil {
			tlsLn.Close()
			return err
		}
	}
	go func() {
		c.gnetDone <- gnet.Run(h, network+"://"+listen,
			gnet.WithMulticore(c.cfg.Multicore),
			gnet.WithLogger(gnetlog.Logger{L: c.log}),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithTCPKeepAlive(time.Minute),
			// A restarted Central must get its port back while the last
			// instance's connections sit in TIME_WAIT.
			gnet.WithReuseAddr(true))
	}()
	fail := func(err error) error {
		if tlsLn != nil {
			tlsLn.Close()
			os.RemoveAll(sockDir)
		}
		return err
	}
	select {
	case addr := <-h.boot:
		if addr == "" {
			return fail(errors.Join(errors.New("cannot read the bound address"), c.stopControl(context.Background())))
		}
		c.ctrlAddr = addr
		if tlsLn != nil {
			c.ctrlFront = tlsconfig.NewFront(tlsLn, network, addr, sockDir, c.log.Debug)
			c.ctrlAddr = tlsLn.Addr().String()
		}
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
	return errors.Join(errs...)
}

// OnBoot keeps the engine and learns the real port through a duplicate of
// the listening socket.
func (h *control) OnBoot(eng gnet.Engine) gnet.Action {
	h.eng = eng
	addr := ""
	if fd, err := eng.Dup(); err == nil {
		f := os.NewFile(uintptr(fd), "control-listener")
		if ln, err := net.FileListener(f); err == nil {
			addr = ln.Addr().String()
			ln.Close()
		}
		f.Close()
	}
	h.boot <- addr
	return gnet.None
}

// OnOpen runs on the connection's event loop.
func (h *control) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	cn := &conn{gc: gc}
	gc.SetContext(cn)
	c := h.c
	c.mu.Lock()
	cn.opened = c.now()
	c.conns[cn] = struct{}{}
	c.mu.Unlock()
	return nil, gnet.None
}

// OnClose runs on the connection's event loop.
func (h *control) OnClose(gc gnet.Conn, _ error) gnet.Action {
	cn, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None
	}
	c := h.c
	c.mu.Lock()
	delete(c.conns, cn)
	if u := cn.user; u != nil && u.sess == cn {
		c.offlineLocked(u)
	}
	c.mu.Unlock()
	return gnet.None
}

// OnTraffic decodes every complete frame buffered; it runs on the
// connection's event loop.
func (h *control) OnTraffic(gc gnet.Conn) gnet.Action {
	cn := gc.Context().(*conn)
	for {
		n := gc.InboundBuffered()
		if cn.dead.Load() {
			gc.Discard(n)
			return gnet.None
		}
		t, body, size, err := wire.Next(gc, wire.MaxFrame)
		if errors.Is(err, wire.ErrIncomplete) {
			return gnet.None
		}
		var msg wire.Message
		if err == nil {
			msg, err = proto.Decode(t, body) // copies what it keeps out of gc's buffer
			gc.Discard(size)
		}
		if err != nil {
			h.c.fatal(cn, proto.CodeOf(err), err.Error())
			continue
		}
		h.c.handle(cn, msg)
		if h.c.backlogged(gc, cn) {
			return gnet.None // cut off: the rest is not read
		}
	}
}

func (c *Central) fatal(cn *conn, code proto.Code, reason string) {
	c.mu.Lock()
	c.fatalLocked(cn, code, reason)
	c.mu.Unlock()
}

// writeLocked queues frame on cn; frame must not change afterwards.
func (c *Central) writeLocked(cn *conn, frame []byte) {
	if cn.dead.Load() {
		return
	}
	n := int64(len(frame))
	cn.queued.Add(n)
	err := cn.gc.AsyncWrite(frame, func(gc gnet.Conn, _ error) error {
		cn.queued.Add(-n)
		c.backlogged(gc, cn)
		return nil
	})
	if err != nil {
		cn.queued.Add(-n)
		c.log.Debug("control write", "err", err)
	}
}

// backlogged runs on cn's event loop, after each queued write and each
// frame read: a client whose unsent backlog passes MaxOutbound is not
// reading, and is cut off rather than buffered for without bound.
func (c *Central) backlogged(gc gnet.Conn, cn *conn) bool {
	n := gc.OutboundBuffered() + int(cn.queued.Load())
	if n <= c.cfg.MaxOutbound {
		return false
	}
	if !cn.dead.CompareAndSwap(false, true) {
		return true
	}
	name := ""
	c.mu.Lock()
	if cn.user != nil {
		name = cn.user.name
	}
	c.mu.Unlock()
	c.log.Warn("control client does not read its frames; cutting it off", "user", name, "backlog", n, "limit", c.cfg.MaxOutbound)
	frame, err := wire.AppendFrame(nil, &proto.Error{Code: proto.CodeTooLarge, Fatal: true,
		Reason: fmt.Sprintf("you left %d bytes unread (limit %d); read your control connection", n, c.cfg.MaxOutbound)})
	if err == nil {
		_, _ = gc.Write(frame)
	}
	_ = gc.Close()
	return true
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
	frame, err := wire.AppendFrame(nil, &proto.Error{Code: code, Reason: reason, Fatal: true})
	cn.dead.Store(true)
	if err != nil {
		cn.gc.Close()
		return
	}
	if cn.gc.AsyncWrite(frame, func(gc gnet.Conn, _ error) error { return gc.Close() }) != nil {
		cn.gc.Close()
	}
}

// offlineLocked ends u's session: its requests fail, its pushes wait.
func (c *Central) offlineLocked(u *user) {
	u.sess = nil
	u.offlineSince = c.now()
	c.online--
	for q := range u.reqs {
		detail := fmt.Sprintf("user %s went offline", u.name)
		if q.from == u {
			detail = fmt.Sprintf("requester %s went offline", u.name)
		}
		c.finishLocked(q, proto.UserNotFound, detail, "")
	}
}

// tickHelloLocked closes connections that never said Hello.
func (c *Central) tickHelloLocked(now time.Time) {
	for cn := range c.conns {
		if cn.user == nil && !cn.dead.Load() && now.Sub(cn.opened) > helloTimeout {
			c.fatalLocked(cn, proto.CodeTimeout, "no hello within "+helloTimeout.String())
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
		c.sendLocked(cn, &proto.Pong{ID: m.ID, At: m.At})
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
		c.holdingLocked(cn, u, m)
	case *proto.LeaveRoom:
		r := c.roomByID[m.Room]
		if r == nil || !r.hasMember(u) {
			c.sendLocked(cn, &proto.Error{Code: proto.CodeNotFound, Reason: "you are not a member of this room", Ref: m.Room})
			return
		}
		c.log.Info("member left room", "room", r.id, "user", u.name)
		c.removeMemberLocked(r, u)
	case *proto.Hello:
		c.sendLocked(cn, &proto.Error{Code: proto.CodeBadRequest, Reason: "hello was already done on this connection"})
	default:
		c.sendLocked(cn, &proto.Error{Code: proto.CodeUnknownType, Reason: fmt.Sprintf("frame type 0x%02x is not used on Central's control port", byte(msg.FrameType()))})
	}
}

func (c *Central) helloLocked(cn *conn, m *proto.Hello) {
	if err := proto.CheckHello(m, "this Central"); err != nil {
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
	u.sess = cn
	cn.user = u
	c.sendLocked(cn, &proto.Welcome{V: wire.Version, Server: "central", Max: wire.MaxFrame, User: u.name})
	now := c.now()
	for _, p := range u.pushes {
		p.first = now // the give-up clock stood still while u was away
		c.sendPushLocked(p, now)
	}
}
