// Package rtt measures the application-level round-trip time to chat
// servers. A probe dials the server, exchanges Hello and Welcome, then sends
// Ping frames one at a time and times each Pong with the monotonic clock; the
// figure therefore includes the server's event loop and both TCP stacks,
// which is what a chat message experiences, and needs no raw sockets.
//
// Probe measures one server. A Prober measures a list of servers with
// bounded concurrency and a timeout per probe, and can repeat that on an
// interval without ever spinning.
package rtt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Dialer opens connections. *net.Dialer satisfies it; tests and the loopback
// demo pass one that adds latency (package delaynet).
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Agent is the Hello agent string a probe announces.
const Agent = "rtt/1"

// Result summarises one probe of one server.
type Result struct {
	// Median of the samples.
	Median time.Duration
	// Spread is the interquartile range (75th minus 25th percentile, by
	// linear interpolation): unlike max-min it ignores one delayed sample,
	// so a single scheduling hiccup does not make a server look erratic.
	Spread time.Duration
	// Min and Max are the extremes of the samples.
	Min, Max time.Duration
	// Count is the number of samples taken.
	Count int
	// Samples in the order they were taken.
	Samples []time.Duration
	// Err is set by Prober.Round when the probe failed; Probe returns the
	// error separately and leaves Err nil.
	Err error
}

// ErrNoSamples is returned when a probe is asked for fewer than one sample.
var ErrNoSamples = errors.New("rtt: samples must be at least 1")

// Probe dials addr through d and takes samples RTT measurements, one Ping in
// flight at a time. timeout bounds the whole probe, dial included (0 means
// only ctx bounds it). When some samples were taken before a failure, the
// partial Result is returned with the error. Probe is safe for concurrent use.
func Probe(ctx context.Context, d Dialer, addr string, samples int, timeout time.Duration) (Result, error) {
	if samples < 1 {
		return Result{}, ErrNoSamples
	}
	if d == nil {
		d = &net.Dialer{}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Result{}, fmt.Errorf("rtt: dial %s: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled ctx without a deadline must still unblock a pending read.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	p := prober{conn: conn, r: bufio.NewReaderSize(conn, 512)}
	res, err := p.run(samples)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The socket deadline mirrors ctx's and may fire a hair first.
			err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
		}
		return res, fmt.Errorf("rtt: probe %s: %w", addr, err)
	}
	return res, nil
}

type prober struct {
	conn net.Conn
	r    *bufio.Reader
	buf  []byte
	body []byte
}

func (p *prober) send(m wire.Message) error {
	var err error
	p.buf, err = wire.AppendFrame(p.buf[:0], m)
	if err != nil {
		return err
	}
	_, err = p.conn.Write(p.buf)
	return err
}

// read returns the next frame's message.
func (p *prober) read() (wire.Message, error) {
	var hdr [wire.LenSize]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		return nil, err
	}
	n, err := wire.FrameLen(hdr[:], 0)
	if err != nil {
		return nil, err
	}
	p.body = slices.Grow(p.body[:0], n)[:n]
	copy(p.body, hdr[:])
	if _, err := io.ReadFull(p.r, p.body[wire.LenSize:]); err != nil {
		return nil, err
	}
	t, body, _, err := wire.ParseFrame(p.body, 0)
	if err != nil {
		return nil, err
	}
	m, err := proto.Decode(t, body)
	if err != nil {
		return nil, err
	}
	if e, ok := m.(*proto.Error); ok {
		return nil, fmt.Errorf("server error: %w", e)
	}
	return m, nil
}

func (p *prober) run(samples int) (Result, error) {
	if err := p.send(&proto.Hello{V: wire.Version, Agent: Agent}); err != nil {
		return Result{}, err
	}
	m, err := p.read()
	if err != nil {
		return Result{}, fmt.Errorf("waiting for welcome: %w", err)
	}
	if _, ok := m.(*proto.Welcome); !ok {
		return Result{}, fmt.Errorf("expected welcome, got frame 0x%02x", byte(m.FrameType()))
	}
	got := make([]time.Duration, 0, samples)
	base := time.Now()
	for i := range samples {
		id := uint64(i + 1)
		start := time.Now()
		if err := p.send(&proto.Ping{ID: id, At: int64(start.Sub(base))}); err != nil {
			return summarize(got), err
		}
		for {
			m, err := p.read()
			if err != nil {
				return summarize(got), fmt.Errorf("waiting for pong %d: %w", id, err)
			}
			pong, ok := m.(*proto.Pong)
			if !ok || pong.ID != id {
				// A stray frame (or an old Pong) is not our answer; the
				// deadline bounds how long we keep looking.
				continue
			}
			got = append(got, time.Since(start))
			break
		}
	}
	return summarize(got), nil
}

// Summarize computes a Result from samples (which it keeps, unsorted).
// It is a pure function, safe for concurrent use.
func Summarize(samples []time.Duration) Result { return summarize(samples) }

func summarize(samples []time.Duration) Result {
	r := Result{Count: len(samples), Samples: samples}
	if len(samples) == 0 {
		return r
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	r.Min, r.Max = s[0], s[len(s)-1]
	r.Median = quantile(s, 0.5)
	r.Spread = quantile(s, 0.75) - quantile(s, 0.25)
	return r
}

// quantile interpolates linearly between the closest ranks of sorted s.
func quantile(s []time.Duration, q float64) time.Duration {
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	frac := pos - float64(i)
	return s[i] + time.Duration(frac*float64(s[i+1]-s[i]))
}
