// Package rtt measures the application-level round-trip time to chat
// servers. A probe dials the server, exchanges Hello and Welcome, then sends
// Ping frames one at a time and times each Pong with the monotonic clock; the
// figure therefore includes the server's event loop and both TCP stacks,
// which is what a chat message experiences, and needs no raw sockets.
//
// Probe measures one server. A Prober measures a list of servers with
// bounded concurrency and a timeout per probe, and can repeat that on an
// interval without ever spinning; it keeps each server's connection open
// between probes (Config.Keep), so a round costs Pings, not handshakes.
package rtt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"nearchat/pkg/proto"
)

// Dialer opens connections: proto.Dialer, named here for Config.
type Dialer = proto.Dialer

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

// ErrOtherServer is the error of a probe whose target's address is
// answered by a server of another id: whatever was measured there is not
// the target's RTT. (A server registered at another's address had the
// clients measure the other one, and new rooms were placed on it and
// stuck: fuzz sweep, 2026-12-03.)
var ErrOtherServer = errors.New("another server answers at this address")

// Probe dials t.Addr through d and takes samples RTT measurements, one
// Ping in flight at a time. A Welcome naming a server other than t.ID
// fails it with ErrOtherServer (an empty t.ID, or a Welcome naming none,
// checks nothing). timeout bounds the whole probe, dial included (0 means
// only ctx bounds it). When some samples were taken before a failure, the
// partial Result is returned with the error. Probe is safe for concurrent
// use.
func Probe(ctx context.Context, d Dialer, t Target, samples int, timeout time.Duration) (Result, error) {
	if samples < 1 {
		return Result{}, ErrNoSamples
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	res, err := probe(ctx, d, t, samples)
	if err != nil {
		return res, annotate(ctx, t.Addr, err)
	}
	return res, nil
}

// annotate names addr in a probe's err, and says when ctx's end (or a
// socket deadline that mirrors it) is what stopped the probe.
func annotate(ctx context.Context, addr string, err error) error {
	switch {
	case ctx.Err() != nil:
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The socket deadline mirrors ctx's and may fire a hair first.
		err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
	}
	return fmt.Errorf("rtt: probe %s: %w", addr, err)
}

func probe(ctx context.Context, d Dialer, t Target, samples int) (Result, error) {
	h, err := dial(ctx, d, t.Addr)
	if err != nil {
		return Result{}, err
	}
	defer h.c.Close()
	if err := h.is(t.ID); err != nil {
		return Result{}, err
	}
	res, _, err := h.ping(ctx, samples)
	return res, err
}

// conn is a probe connection that said Hello. Its Pings carry random IDs,
// so neither a late Pong of an earlier probe nor one a server sent ahead
// is taken for the answer to a later Ping.
type conn struct {
	c      *proto.Conn
	server string    // the server its Welcome named
	used   time.Time // when its last probe ended
}

func dial(ctx context.Context, d Dialer, addr string) (*conn, error) {
	c, w, err := proto.Dial(ctx, d, addr, &proto.Hello{Agent: Agent})
	if err != nil {
		return nil, err
	}
	return &conn{c: c, server: w.Server}, nil
}

// is checks that h's server is id (see Probe).
func (h *conn) is(id string) error {
	if id != "" && h.server != "" && h.server != id {
		return fmt.Errorf("%w: probing server %q, %q answered", ErrOtherServer, id, h.server)
	}
	return nil
}

// ping takes samples RTT measurements on h, one Ping in flight at a time,
// bounded by ctx. It reports whether h can serve another probe (reuse):
// no error, and its deadline cleared, not left in the past by ctx's end.
func (h *conn) ping(ctx context.Context, samples int) (res Result, reuse bool, err error) {
	nc := h.c.NetConn()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	// A cancelled ctx without a deadline must still unblock a pending read.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	got := make([]time.Duration, 0, samples)
	err = h.exchange(samples, &got)
	if reuse = stop() && err == nil; reuse {
		_ = nc.SetDeadline(time.Time{})
	}
	return summarize(got), reuse, err
}

func (h *conn) exchange(samples int, got *[]time.Duration) error {
	base := time.Now()
	for range samples {
		// A random ID: with IDs counting 1, 2, 3 a server could send its
		// Pongs ahead of the Pings and look 200 ms nearer than it is
		// (abuse probe, 2026-12-03). Never 0, which chat servers' beats use.
		id := rand.Uint64() | 1
		start := time.Now()
		if err := h.c.Send(&proto.Ping{ID: id, At: int64(start.Sub(base))}); err != nil {
			return err
		}
		for {
			m, err := h.c.Recv()
			if err != nil {
				return fmt.Errorf("waiting for pong %d: %w", id, err)
			}
			if e, ok := m.(*proto.Error); ok {
				return fmt.Errorf("server error: %w", e)
			}
			pong, ok := m.(*proto.Pong)
			if !ok || pong.ID != id {
				// A stray frame (or an old Pong) is not our answer; the
				// deadline bounds how long we keep looking.
				continue
			}
			*got = append(*got, time.Since(start))
			break
		}
	}
	return nil
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
