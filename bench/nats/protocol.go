package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// protocol is what differs between the servers: how a member joins a room,
// how a chat message is framed, and how a delivery is recognised. Every
// other part of the load (connections, readers, pacing, timing,
// histograms, CPU and memory readings) is the same code for both.
type protocol interface {
	// join completes the opening of c as user in room and returns once
	// the server has confirmed the membership.
	join(c net.Conn, rd *bufio.Reader, room, user string) error
	// appendPub appends one chat message of size payload bytes carrying
	// num and at.
	appendPub(dst []byte, room string, num uint64, at int64, size int) []byte
	// next reads one inbound message; ok is true for a chat delivery, with
	// the num and at its sender put in it.
	next(c net.Conn, rd *bufio.Reader) (ok bool, num uint64, at int64, err error)
}

// nearchatProto speaks nearchat's framed msgpack protocol (pkg/wire).
type nearchatProto struct{ text string }

func (p *nearchatProto) join(c net.Conn, rd *bufio.Reader, room, user string) error {
	b, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "compare/1"})
	b, _ = wire.AppendFrame(b, &proto.Join{Room: room, User: user})
	if _, err := c.Write(b); err != nil {
		return err
	}
	for {
		t, body, err := readFrame(rd)
		if err != nil {
			return err
		}
		switch t {
		case proto.TJoined:
			return nil
		case proto.TError:
			var e proto.Error
			_ = wire.Unmarshal(body, &e)
			return &e
		}
	}
}

func (p *nearchatProto) appendPub(dst []byte, _ string, num uint64, at int64, size int) []byte {
	if len(p.text) != size {
		p.text = strings.Repeat("x", size)
	}
	return proto.AppendChat(dst, num, at, p.text)
}

func (p *nearchatProto) next(_ net.Conn, rd *bufio.Reader) (bool, uint64, int64, error) {
	t, body, err := readFrame(rd)
	if err != nil {
		return false, 0, 0, err
	}
	switch t {
	case proto.TDeliver:
		_, num, at, ok := proto.DeliverInfo(body)
		if !ok {
			var d proto.Deliver
			if err := wire.Unmarshal(body, &d); err != nil {
				return false, 0, 0, err
			}
			num, at = d.Num, d.At
		}
		return true, num, at, nil
	case proto.TError:
		var e proto.Error
		_ = wire.Unmarshal(body, &e)
		return false, 0, 0, &e
	}
	return false, 0, 0, nil
}

// lastNumber parses the decimal number that ends a protocol line.
func lastNumber(line []byte) (int, bool) {
	line = bytes.TrimRight(line, "\r\n")
	i := bytes.LastIndexByte(line, ' ')
	if i < 0 || i == len(line)-1 {
		return 0, false
	}
	n := 0
	for _, c := range line[i+1:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// readFrame reads one nearchat frame. The body aliases the reader's
// buffer (valid until the next read) unless the frame is bigger than it.
func readFrame(rd *bufio.Reader) (wire.Type, []byte, error) {
	hdr, err := rd.Peek(wire.LenSize)
	if err != nil {
		return 0, nil, err
	}
	n, err := wire.FrameLen(hdr, 0)
	if err != nil {
		return 0, nil, err
	}
	var b []byte
	if n <= rd.Size() {
		if b, err = rd.Peek(n); err != nil {
			return 0, nil, err
		}
		defer rd.Discard(n)
	} else {
		b = make([]byte, n)
		if _, err := io.ReadFull(rd, b); err != nil {
			return 0, nil, err
		}
	}
	t, body, _, err := wire.ParseFrame(b, 0)
	return t, body, err
}

// natsProto speaks the NATS client protocol: every member subscribes to
// the room's subject, and the sender publishes with echo off, so each
// message reaches the other members exactly as a nearchat Deliver does.
// The payload starts with num and at (16 bytes), padded to the size.
type natsProto struct{ pad []byte }

func (p *natsProto) join(c net.Conn, rd *bufio.Reader, room, user string) error {
	line, err := rd.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("nats: reading INFO: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("INFO ")) {
		return fmt.Errorf("nats: want INFO, got %q", line)
	}
	msg := `CONNECT {"verbose":false,"pedantic":false,"echo":false,"name":"` + user + `","protocol":1}` + "\r\n" +
		"SUB room." + room + " 1\r\nPING\r\n"
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	for {
		line, err := rd.ReadSlice('\n')
		if err != nil {
			return err
		}
		switch {
		case bytes.HasPrefix(line, []byte("PONG")):
			return nil
		case bytes.HasPrefix(line, []byte("-ERR")):
			return fmt.Errorf("nats: %s", bytes.TrimSpace(line))
		}
	}
}

func (p *natsProto) appendPub(dst []byte, room string, num uint64, at int64, size int) []byte {
	size = max(size, 16)
	if len(p.pad) < size-16 {
		p.pad = make([]byte, size-16)
		for i := range p.pad {
			p.pad[i] = 'x'
		}
	}
	dst = append(dst, "PUB room."...)
	dst = append(dst, room...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(size), 10)
	dst = append(dst, "\r\n"...)
	dst = binary.BigEndian.AppendUint64(dst, num)
	dst = binary.BigEndian.AppendUint64(dst, uint64(at))
	dst = append(dst, p.pad[:size-16]...)
	return append(dst, "\r\n"...)
}

var errNATS = errors.New("nats: server error")

func (p *natsProto) next(c net.Conn, rd *bufio.Reader) (bool, uint64, int64, error) {
	line, err := rd.ReadSlice('\n')
	if err != nil {
		return false, 0, 0, err
	}
	switch {
	case bytes.HasPrefix(line, []byte("MSG ")):
		// MSG <subject> <sid> [reply-to] <#bytes>: the size is the last
		// field.
		n, ok := lastNumber(line)
		if !ok {
			return false, 0, 0, fmt.Errorf("nats: bad MSG line %q", line)
		}
		if n < 16 {
			_, err := rd.Discard(n + 2)
			return false, 0, 0, err
		}
		b, err := rd.Peek(16)
		if err != nil {
			return false, 0, 0, err
		}
		num, at := binary.BigEndian.Uint64(b), int64(binary.BigEndian.Uint64(b[8:]))
		_, err = rd.Discard(n + 2)
		return true, num, at, err
	case bytes.HasPrefix(line, []byte("PING")):
		_, err := io.WriteString(c, "PONG\r\n")
		return false, 0, 0, err
	case bytes.HasPrefix(line, []byte("-ERR")):
		return false, 0, 0, fmt.Errorf("%w: %s", errNATS, bytes.TrimSpace(line))
	}
	return false, 0, 0, nil
}
