package central

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
)

// flushStore is a memory store that writes behind as a test says: its
// Flush fails with err, or waits for gate, when they are set.
type flushStore struct {
	*store.Memory
	calls atomic.Int64
	mu    sync.Mutex
	err   error
	gate  chan struct{}
}

func (s *flushStore) Flush(ctx context.Context) error {
	s.calls.Add(1)
	s.mu.Lock()
	gate, err := s.gate, s.err
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (s *flushStore) set(err error, gate chan struct{}) {
	s.mu.Lock()
	s.err, s.gate = err, gate
	s.mu.Unlock()
}

func flushWorld(t *testing.T) (*world, *flushStore) {
	fs := &flushStore{Memory: store.NewMemory()}
	return newWorld(t, func(c *Config) { c.Store = fs }), fs
}

var errNotStored = errors.New("etcd unreachable")

// TestLeavePongWaitsForStore (rel7 sweep, 2026-12-03, R7-2): with a store
// that writes behind (etcd), the Pong behind a LeaveRoom told the client
// its leave was taken in while the write still waited, and a leader that
// lost etcd then stepped down without it: the leaver was listed again. The
// Pong now waits for the store's Flush, and a Flush that fails sends none.
func TestLeavePongWaitsForStore(t *testing.T) {
	w, fs := flushWorld(t)
	a, b := w.user(t, "alice"), w.user(t, "bob")
	room := chat(t, a, b)
	fs.set(errNotStored, nil)
	a.send(&proto.LeaveRoom{Room: room.Room})
	a.send(&proto.Ping{ID: 1, At: 1})
	testkit.WaitFor(t, 5*time.Second, "the Pong to wait on a Flush", func() bool { return fs.calls.Load() >= 1 })
	// The Flush failed: no Pong for Ping 1, and the next Ping waits for
	// the store again, leave or none before it.
	fs.set(nil, nil)
	a.send(&proto.Ping{ID: 2, At: 2})
	if p := expect[*proto.Pong](a, skipAwaiting); p.ID != 2 {
		t.Fatalf("Pong %+v, want ID 2: the Pong of a leave the store could not write was sent", p)
	}
	if n := fs.calls.Load(); n != 2 {
		t.Fatalf("%d Flushes, want 2", n)
	}
	a.sync(skipAwaiting) // no stray Pong 1, and a Ping with no leave before it is answered at once
	if n := fs.calls.Load(); n != 2 {
		t.Fatalf("%d Flushes after a Ping with no leave before it, want 2", n)
	}

	// A Holding with left rooms defers its Pong likewise; Pings behind a
	// waiting one wait too, at most maxDeferredPongs of them.
	gate := make(chan struct{})
	fs.set(nil, gate)
	a.send(&proto.Holding{Left: []string{room.Room}})
	for id := uint64(10); id < 10+maxDeferredPongs+2; id++ {
		a.send(&proto.Ping{ID: id, At: int64(id)})
	}
	testkit.WaitFor(t, 5*time.Second, "the Pongs to wait on Flushes", func() bool { return fs.calls.Load() == 2+maxDeferredPongs })
	close(gate)
	got := map[uint64]bool{}
	for range maxDeferredPongs {
		got[expect[*proto.Pong](a, skipAwaiting).ID] = true
	}
	a.sync(skipAwaiting)
	if len(got) != maxDeferredPongs {
		t.Fatalf("Pongs %v, want %d distinct", got, maxDeferredPongs)
	}
	if n := fs.calls.Load(); n != 2+maxDeferredPongs {
		t.Fatalf("%d Flushes, want %d: Pings past the bound must be dropped", n, 2+maxDeferredPongs)
	}
}

// TestDeregisterWaitsForStore (rel7 sweep, R7-2): DELETE /v1/clients was
// answered 204 as soon as memory changed; with etcd lost, the write was
// dropped at the step-down and the user stayed in its rooms. It is now
// answered after the store's Flush, 503 unavailable when that fails, and
// the retry's 404 also follows a Flush.
func TestDeregisterWaitsForStore(t *testing.T) {
	w, fs := flushWorld(t)
	a, as := w.connect(t, "alice")
	b, bs := w.connect(t, "bob")
	for _, s := range []centralapi.Session{as, bs} {
		w.latency(t, s, map[string]centralapi.Sample{"serv1": ms(10), "serv2": ms(30)})
	}
	room := chat(t, a, b)
	tok := as.Token
	fs.set(errNotStored, nil)
	err := w.api.DeregisterClient(ctx(t), "alice", tok)
	var ae *centralapi.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != centralapi.CodeUnavailable {
		t.Fatalf("DELETE with the store failing: %v, want 503 %s", err, centralapi.CodeUnavailable)
	}
	fs.set(nil, nil)
	before := fs.calls.Load()
	err = w.api.DeregisterClient(ctx(t), "alice", tok)
	if !centralapi.IsUnknownClient(err) {
		t.Fatalf("DELETE again: %v, want 404 %s", err, centralapi.CodeUnknownClient)
	}
	if fs.calls.Load() == before {
		t.Fatal("the retry's 404 was answered without a Flush")
	}
	r, ok := w.roomOf(t, room.Room)
	if ok && len(r.Members) != 1 {
		t.Fatalf("room members %v after alice deregistered", r.Members)
	}
	if err := w.api.DeregisterClient(ctx(t), "bob", bs.Token); err != nil {
		t.Fatalf("DELETE bob with the store writing: %v", err)
	}
}
