package chatserver

import (
	"context"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// Beats: a member that sent Beat{Every} is written an empty Pong whenever
// nothing has been written to it for Every, so its client can tell a dead
// path by silence alone, without a Ping and a Pong each time the room is
// quiet. Each loop keeps the set of its members that asked; flowLoop runs
// the loop's beater every flowTick while the set is not empty, which is
// also the resolution of the intervals.

// beatFrame is the frame a beat writes: Pong{ID: 0, At: 0}.
var beatFrame, _ = wire.AppendFrame(nil, &proto.Pong{})

// onBeat sets (or, with Every 0, stops) m's beats. Only a member of a room
// is beaten on: a Beat before the Join is kept until the Join succeeds
// (clients ask as soon as they are welcomed), so a connection that never
// joins (a ticket it does not have) gets no frames for nothing. Before, a
// Hello and a Beat at the minimum interval made any connection a stream of
// 50 frames a second, and 2,048 of them from one source cost the server
// half a core (abuse probe, 2026-12-01).
func (s *Server) onBeat(m *member, body []byte) error {
	if !m.v6 {
		return proto.Fatalf(proto.CodeUnknownType, "beat needs protocol version 6")
	}
	var b proto.Beat
	if err := proto.Unmarshal(body, &b); err != nil {
		return proto.Fatalf(proto.CodeBadBody, "beat: %v", err)
	}
	if b.Every != 0 && (b.Every < proto.BeatMin || b.Every > proto.BeatMax) {
		return proto.Fatalf(proto.CodeBadBody, "beat every %d ms: must be 0 (off) or %d to %d", b.Every, proto.BeatMin, proto.BeatMax)
	}
	m.beat = time.Duration(b.Every) * time.Millisecond
	if m.beat == 0 {
		m.loop.stopBeats(m)
	} else if m.room != nil {
		m.loop.startBeats(m)
	}
	return nil
}

// startBeats puts m, a member of a room that asked for beats, in its
// loop's beats. Loop only.
func (l *loop) startBeats(m *member) {
	if l.beats == nil {
		l.beats = map[*member]struct{}{}
	}
	l.beats[m] = struct{}{}
	l.nbeats.Store(int32(len(l.beats)))
}

// stopBeats takes m out of its loop's beats. Loop only.
func (l *loop) stopBeats(m *member) {
	if _, ok := l.beats[m]; !ok {
		return
	}
	delete(l.beats, m)
	l.nbeats.Store(int32(len(l.beats)))
}

// beater writes the beats that are due on its loop. It runs on the loop,
// scheduled by Server.flowLoop.
type beater struct{ l *loop }

func (b *beater) Run(context.Context) error {
	l := b.l
	defer l.exit(l.enter())
	now := l.now
	for m := range l.beats {
		// A member with bytes still unsent will hear them first; a dead
		// one is written nothing.
		if m.dead || now.Sub(m.outAt) < m.beat || m.c.OutboundBuffered() > 0 {
			continue
		}
		m.write(beatFrame, l.srv.cfg.MaxOutbound)
	}
	return nil
}
