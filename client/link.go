package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
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
	serverID string // as the server named itself in Welcome
	conn     net.Conn
	r        *bufio.Reader

	mu      sync.Mutex
	buf     []byte
	closing bool
	wake    chan struct{}

	// Owned by the session loop.
	epoch   uint64
	started time.Time
	joined  bool
	dead    bool
	members map[string]uint64 // other members present, with the LastSent they announced
	lastSeq uint64
}

// dialLink connects to server and exchanges Hello and Welcome. It runs on
// the caller's goroutine; the link is not started.
func dialLink(ctx context.Context, s *Session, server proto.ServerRef) (*link, error) {
	conn, err := s.cfg.Dialer.DialContext(ctx, "tcp", server.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server.Addr, err)
	}
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	l := &link{s: s, server: server, conn: conn, r: bufio.NewReaderSize(conn, 16<<10), wake: make(chan struct{}, 1)}
	welcome, err := l.handshake()
	if !stop() || err != nil {
		conn.Close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return nil, fmt.Errorf("handshake with %s: %w", server.Addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	l.serverID = welcome.Server
	if l.serverID == "" {
		l.serverID = server.ID
	}
	return l, nil
}

func (l *link) handshake() (*proto.Welcome, error) {
	b, err := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: l.s.cfg.Agent})
	if err != nil {
		return nil, err
	}
	if _, err := l.conn.Write(b); err != nil {
		return nil, err
	}
	var scratch []byte
	m, err := readFrame(l.r, &scratch)
	if err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *proto.Welcome:
		return m, nil
	case *proto.Error:
		return nil, m
	default:
		return nil, fmt.Errorf("expected welcome, got frame 0x%02x", byte(m.FrameType()))
	}
}

// readFrame reads and decodes one frame; scratch is reused between calls.
func readFrame(r *bufio.Reader, scratch *[]byte) (wire.Message, error) {
	hdr, err := r.Peek(wire.LenSize)
	if err != nil {
		return nil, err
	}
	n, err := wire.FrameLen(hdr, 0)
	if err != nil {
		return nil, err
	}
	b := slices.Grow((*scratch)[:0], n)[:n]
	*scratch = b
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	t, body, _, err := wire.ParseFrame(b, 0)
	if err != nil {
		return nil, err
	}
	return proto.Decode(t, body)
}

// start launches the reader and writer. Loop only.
func (l *link) start() {
	l.s.wg.Add(2)
	go l.readLoop()
	go l.writeLoop()
}

func (l *link) readLoop() {
	defer l.s.wg.Done()
	var scratch []byte
	idle := l.s.cfg.IdleTimeout
	for {
		if idle > 0 {
			_ = l.conn.SetReadDeadline(time.Now().Add(idle))
		}
		m, err := readFrame(l.r, &scratch)
		select {
		case l.s.frames <- inbound{l: l, m: m, err: err}:
		case <-l.s.done:
			l.conn.Close()
			return
		}
		if err != nil {
			l.conn.Close()
			return
		}
	}
}

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
