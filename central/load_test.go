package central

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
)

// bot is a goroutine-safe control client for load tests: errors instead of
// t.Fatal.
type bot struct {
	name string
	pc   *proto.Conn
	// left is the room this bot left last. Central may have sent it an
	// Assign for that room before it saw the LeaveRoom (a retry not yet
	// acknowledged, or a move of the room its partner had just left);
	// such a frame is stale and skipped, as the client library does. Only
	// the last room matters: everything Central sends after handling the
	// LeaveRoom (the next request's frames) comes after those.
	left string
	// asked counts the bot's requests: each carries a fresh key, as the
	// client library's do.
	asked int
}

func dialBot(addr string, s centralapi.Session) (*bot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, _, err := proto.Dial(ctx, nil, addr, &proto.Hello{Agent: "loadbot/1", Token: s.Token})
	if err != nil {
		return nil, err
	}
	return &bot{name: s.Name, pc: pc}, nil
}

func (b *bot) send(m wire.Message) error { return b.pc.Send(m) }

// leave leaves room; Assigns for it still on the way are skipped.
func (b *bot) leave(room string) error {
	b.left = room
	return b.send(&proto.LeaveRoom{Room: room})
}

func (b *bot) recv() (wire.Message, error) {
	b.pc.NetConn().SetReadDeadline(time.Now().Add(30 * time.Second))
	m, err := b.pc.Recv()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.name, err)
	}
	return m, nil
}

// recvType skips AWAITING_REQ, server events and Assigns for the room the
// bot left, and returns the next frame, which must be a T.
func recvType[T wire.Message](b *bot) (T, error) {
	var zero T
	for {
		m, err := b.recv()
		if err != nil {
			return zero, err
		}
		switch m.(type) {
		case *proto.ServerEvent, *proto.ServerList:
			continue // server announcements interleave with everything
		}
		if skipAwaiting(m) {
			continue
		}
		if as, ok := m.(*proto.Assign); ok && b.left != "" && as.Room == b.left {
			continue
		}
		if v, ok := m.(T); ok {
			return v, nil
		}
		return zero, fmt.Errorf("%s: got %T %+v, want %T", b.name, m, m, zero)
	}
}

// pair runs one full request from a to b and returns the room.
func pair(a, b *bot) (string, error) {
	a.asked++
	if err := a.send(&proto.Request{To: []string{b.name}, Key: fmt.Sprintf("k%d", a.asked)}); err != nil {
		return "", err
	}
	var req string
	for _, want := range []proto.StatusCode{proto.AckConn, proto.ReqSent} {
		st, err := recvType[*proto.Status](a)
		if err != nil {
			return "", err
		}
		if st.Code != want {
			return "", fmt.Errorf("%s: status %v (%s), want %v", a.name, st.Code, st.Detail, want)
		}
		req = st.Req
	}
	in, err := recvType[*proto.Incoming](b)
	if err != nil {
		return "", err
	}
	if in.Req != req {
		return "", fmt.Errorf("%s: incoming %s, want %s", b.name, in.Req, req)
	}
	if err := b.send(&proto.Answer{Req: req, Accept: true}); err != nil {
		return "", err
	}
	st, err := recvType[*proto.Status](a)
	if err != nil {
		return "", err
	}
	if st.Code != proto.ReqAccepted {
		return "", fmt.Errorf("%s: status %v (%s), want REQ_ACCEPTED", a.name, st.Code, st.Detail)
	}
	if _, err := recvType[*proto.Status](b); err != nil {
		return "", err
	}
	for _, k := range []*bot{a, b} {
		as, err := recvType[*proto.Assign](k)
		if err != nil {
			return "", err
		}
		if as.Room != st.Room || as.Epoch != 1 {
			return "", fmt.Errorf("%s: assign %+v for room %s", k.name, as, st.Room)
		}
		if err := k.send(&proto.AssignAck{Room: as.Room, Epoch: as.Epoch}); err != nil {
			return "", err
		}
	}
	return st.Room, nil
}

// loadClients registers and connects n clients (bounded REST concurrency)
// with a vector over serv1 and serv2.
func loadClients(ctx context.Context, api *centralapi.Client, ctrl string, prefix string, n int) ([]*bot, error) {
	bots := make([]*bot, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			s, err := api.RegisterClient(ctx, fmt.Sprintf("%s%04d", prefix, i), "")
			if err == nil {
				err = api.PutLatency(ctx, s.Name, s.Token, map[string]centralapi.Sample{
					"serv1": centralapi.SampleOf(time.Duration(10+i%7)*time.Millisecond, 0, 3),
					"serv2": centralapi.SampleOf(time.Duration(12+i%5)*time.Millisecond, 0, 3),
				})
			}
			if err == nil {
				bots[i], err = dialBot(ctrl, s)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return bots, errors.Join(errs...)
}

func closeBots(bots []*bot) {
	for _, b := range bots {
		if b != nil {
			b.pc.Close()
		}
	}
}

func pooledAPI(addr string) *centralapi.Client {
	return centralapi.NewClient(addr, &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}})
}

func TestThousandClients(t *testing.T) {
	const n = 1000
	cfg := testConfig(t)
	cfg.Logger = nil // 500 rooms of INFO lines drown the test log
	// The echo servers never heartbeat, and on a loaded machine the test
	// outlasts testConfig's 15 s; it measures matching, not liveness.
	cfg.OfflineAfter = 10 * time.Minute
	// The bots say Hello and then wait, without the pings a real client
	// sends, while the others register; under -race at load 15-20 the
	// thousand registrations outlast the default 30 s and the first bots
	// were cut off for silence.
	cfg.ControlIdle = 10 * time.Minute
	h := startCentral(t, cfg)
	h.addServer(t, "serv1")
	h.addServer(t, "serv2")
	api := pooledAPI(h.c.RESTAddr())
	start := time.Now()
	// A generous bound: under -race on a loaded 2-core machine a thousand
	// registrations take many seconds; the figure is logged below.
	lctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bots, err := loadClients(lctx, api, h.c.ControlAddr(), "u", n)
	defer closeBots(bots)
	if err != nil {
		t.Fatalf("clients: %v", err)
	}
	reg := time.Since(start)
	rooms := make([]string, n/2)
	errs := make([]error, n/2)
	var wg sync.WaitGroup
	for i := range n / 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rooms[i], errs[i] = pair(bots[2*i], bots[2*i+1])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("pairs: %v", err)
	}
	t.Logf("%d clients registered+connected in %v; %d rooms matched in %v", n, reg, n/2, time.Since(start)-reg)
	list, err := api.Rooms(ctx(t), "")
	if err != nil || len(list) != n/2 {
		t.Fatalf("rooms: %d %v", len(list), err)
	}
	seen := map[string]bool{}
	for _, r := range rooms {
		if seen[r] {
			t.Fatalf("room %s handed out twice", r)
		}
		seen[r] = true
	}
	testkit.WaitFor(t, 10*time.Second, "every assign acknowledged", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		return len(h.c.pushes) == 0
	})
	hl, err := api.Health(ctx(t))
	if err != nil || hl.Online != n || hl.Clients != n {
		t.Fatalf("health %+v %v", hl, err)
	}
}

// TestPairSkipsStaleAssign: a member whose Assign was sent again before its
// acknowledgement arrived, and who then left the room, still finds that
// copy on its control connection; the next request must read past it (the
// race BenchmarkMatch hit under load), made certain here with a fake clock.
func TestPairSkipsStaleAssign(t *testing.T) {
	w := newWorld(t, nil)
	h, clk := w.harness, w.clk
	bots, err := loadClients(ctx(t), pooledAPI(h.c.RESTAddr()), h.c.ControlAddr(), "s", 2)
	defer closeBots(bots)
	if err != nil {
		t.Fatal(err)
	}
	a, z := bots[0], bots[1]
	// The first chat, up to the Assigns, left unacknowledged.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.send(&proto.Request{To: []string{z.name}}))
	var req string
	for range 2 {
		st, err := recvType[*proto.Status](a)
		must(err)
		req = st.Req
	}
	_, err = recvType[*proto.Incoming](z)
	must(err)
	must(z.send(&proto.Answer{Req: req, Accept: true}))
	for _, k := range bots {
		_, err := recvType[*proto.Status](k)
		must(err)
	}
	var room string
	for _, k := range bots {
		as, err := recvType[*proto.Assign](k)
		must(err)
		room = as.Room
	}
	// AssignRetry passes: both Assigns go out again, unread.
	clk.Advance(h.c.cfg.AssignRetry)
	testkit.WaitFor(t, 10*time.Second, "both Assigns re-sent", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		for _, k := range bots {
			if p := h.c.users[k.name].pushes[room]; p == nil || p.tries < 2 {
				return false
			}
		}
		return true
	})
	for _, k := range bots {
		must(k.send(&proto.AssignAck{Room: room, Epoch: 1}))
		must(k.leave(room))
	}
	room2, err := pair(a, z)
	must(err)
	if room2 == room {
		t.Fatalf("second chat got the first one's room %s", room)
	}
}
