package centralapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestFailoverAcrossReplicas gives the client three Central addresses:
// nothing listens on the first, and the second stops listening after one
// call. Every call must still be answered, each by the first address that
// accepts the connection, and a replica that answered keeps the calls.
func TestFailoverAcrossReplicas(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	var hits [2]atomic.Int32
	replica := func(i int) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"heartbeat_interval_ms": 1000}`))
		}))
	}
	r1, r2 := replica(0), replica(1)
	defer r2.Close()
	c := NewClient(dead+","+r1.URL+","+r2.Listener.Addr().String(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		if _, err := c.Heartbeat(ctx, "s", "", HeartbeatRequest{}); err != nil {
			t.Fatalf("heartbeat past a dead address: %v", err)
		}
	}
	if hits[0].Load() != 2 || hits[1].Load() != 0 {
		t.Fatalf("hits %d %d, want 2 0", hits[0].Load(), hits[1].Load())
	}
	r1.Close()
	c.hc.CloseIdleConnections()
	for range 2 {
		if _, err := c.Heartbeat(ctx, "s", "", HeartbeatRequest{}); err != nil {
			t.Fatalf("heartbeat after a replica died: %v", err)
		}
	}
	if hits[0].Load() != 2 || hits[1].Load() != 2 {
		t.Fatalf("hits %d %d, want 2 2", hits[0].Load(), hits[1].Load())
	}
}

// TestNoLeaderReplicaIsPassedBy: a replica that reaches no leader
// answers 503 unavailable; the client tries the next address, and stays
// with the one that served. It stayed with the refusing replica for good
// (abuse sweep 7), so a chat server given two replicas never registered
// while the first could not reach the leader. Any other error answer is
// final: it is Central's answer.
func TestNoLeaderReplicaIsPassedBy(t *testing.T) {
	var hits [2]atomic.Int32
	noLeader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits[0].Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"code": "unavailable", "message": "no Central leads now"}`))
	}))
	defer noLeader.Close()
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits[1].Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"heartbeat_interval_ms": 1000}`))
	}))
	defer leader.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := NewClient(noLeader.URL+","+leader.URL, nil)
	for range 2 {
		if _, err := c.Heartbeat(ctx, "s", "", HeartbeatRequest{}); err != nil {
			t.Fatalf("heartbeat past a replica with no leader: %v", err)
		}
	}
	if hits[0].Load() != 1 || hits[1].Load() != 2 {
		t.Fatalf("hits %d %d, want 1 2", hits[0].Load(), hits[1].Load())
	}
	// Alone, its answer is the answer.
	_, err := NewClient(noLeader.URL, nil).Heartbeat(ctx, "s", "", HeartbeatRequest{})
	if e := (*Error)(nil); !errors.As(err, &e) || e.Code != CodeUnavailable {
		t.Fatalf("the only replica, with no leader: %v", err)
	}
}
