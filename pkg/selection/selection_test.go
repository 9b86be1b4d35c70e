package selection

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

const ms = time.Millisecond

// rtts builds a member from server -> median; a negative median stands for a
// sample that exists but has no probes behind it (Count 0).
func rtts(user string, m map[string]time.Duration) Member {
	v := make(map[string]Sample, len(m))
	for id, d := range m {
		if d < 0 {
			v[id] = Sample{Median: 1 * ms}
			continue
		}
		v[id] = Sample{Median: d, Spread: ms, Count: 5}
	}
	return Member{User: user, RTT: v}
}

func up(ids ...string) []Server {
	s := make([]Server, len(ids))
	for i, id := range ids {
		s[i] = Server{ID: id, Up: true}
	}
	return s
}

func with(servers []Server, id string, f func(*Server)) []Server {
	for i := range servers {
		if servers[i].ID == id {
			f(&servers[i])
		}
	}
	return servers
}

func down(s *Server)     { s.Up = false }
func draining(s *Server) { s.Draining = true }
func full(s *Server)     { s.Full = true }

func indexOf(servers []Server, id string) int {
	for i := range servers {
		if servers[i].ID == id {
			return i
		}
	}
	return -1
}

func matrixOf(servers []Server, members []Member) Matrix {
	var m Matrix
	m.Fill(servers, members)
	return m
}

func TestChoose(t *testing.T) {
	tests := []struct {
		name    string
		servers []Server
		members []Member
		want    string
		max     time.Duration
		sum     time.Duration
		err     error
	}{
		{
			name:    "basic min-max",
			servers: up("a", "b", "c"),
			members: []Member{
				rtts("u1", map[string]time.Duration{"a": 10 * ms, "b": 30 * ms, "c": 50 * ms}),
				rtts("u2", map[string]time.Duration{"a": 60 * ms, "b": 35 * ms, "c": 20 * ms}),
			},
			want: "b", max: 35 * ms, sum: 65 * ms,
		},
		{
			name:    "tie broken by sum",
			servers: up("a", "b", "c"),
			members: []Member{
				rtts("u1", map[string]time.Duration{"a": 40 * ms, "b": 40 * ms, "c": 41 * ms}),
				rtts("u2", map[string]time.Duration{"a": 40 * ms, "b": 10 * ms, "c": 1 * ms}),
			},
			want: "b", max: 40 * ms, sum: 50 * ms,
		},
		{
			name:    "down skipped",
			servers: with(up("a", "b"), "a", down),
			members: []Member{rtts("u1", map[string]time.Duration{"a": 10 * ms, "b": 90 * ms})},
			want:    "b", max: 90 * ms, sum: 90 * ms,
		},
		{
			name:    "draining skipped",
			servers: with(up("a", "b"), "a", draining),
			members: []Member{rtts("u1", map[string]time.Duration{"a": 10 * ms, "b": 90 * ms})},
			want:    "b", max: 90 * ms, sum: 90 * ms,
		},
		{
			name:    "full skipped",
			servers: with(up("a", "b"), "a", full),
			members: []Member{rtts("u1", map[string]time.Duration{"a": 10 * ms, "b": 90 * ms})},
			want:    "b", max: 90 * ms, sum: 90 * ms,
		},
		{
			name:    "unmeasured (count 0) skipped",
			servers: up("a", "b"),
			members: []Member{rtts("u1", map[string]time.Duration{"a": -1, "b": 90 * ms})},
			want:    "b", max: 90 * ms, sum: 90 * ms,
		},
		{
			name:    "unmeasured (missing) skipped",
			servers: up("a", "b"),
			members: []Member{rtts("u1", map[string]time.Duration{"b": 90 * ms})},
			want:    "b", max: 90 * ms, sum: 90 * ms,
		},
		{
			name:    "server measured by only some members never chosen",
			servers: up("x", "y"),
			members: []Member{
				rtts("u1", map[string]time.Duration{"x": 1 * ms, "y": 100 * ms}),
				rtts("u2", map[string]time.Duration{"y": 100 * ms}),
				rtts("u3", map[string]time.Duration{"x": -1, "y": 100 * ms}),
			},
			want: "y", max: 100 * ms, sum: 300 * ms,
		},
		{
			name:    "1 member",
			servers: up("serv1", "serv2", "serv3", "serv4"),
			members: []Member{rtts("c1", map[string]time.Duration{"serv1": 40 * ms, "serv2": 100 * ms, "serv3": 60 * ms, "serv4": 80 * ms})},
			want:    "serv1", max: 40 * ms, sum: 40 * ms,
		},
		{
			name:    "5 members",
			servers: up("a", "b", "c"),
			members: []Member{
				rtts("u1", map[string]time.Duration{"a": 10 * ms, "b": 20 * ms, "c": 30 * ms}),
				rtts("u2", map[string]time.Duration{"a": 10 * ms, "b": 20 * ms, "c": 30 * ms}),
				rtts("u3", map[string]time.Duration{"a": 10 * ms, "b": 20 * ms, "c": 30 * ms}),
				rtts("u4", map[string]time.Duration{"a": 10 * ms, "b": 20 * ms, "c": 30 * ms}),
				rtts("u5", map[string]time.Duration{"a": 95 * ms, "b": 45 * ms, "c": 31 * ms}),
			},
			want: "c", max: 31 * ms, sum: 151 * ms,
		},
		{
			name:    "zero members error",
			servers: up("a"),
			err:     ErrNoMembers,
		},
		{
			name:    "no eligible error",
			servers: with(with(with(up("a", "b", "c", "d"), "a", down), "b", draining), "c", full),
			members: []Member{rtts("u1", map[string]time.Duration{"a": 1 * ms, "b": 1 * ms, "c": 1 * ms, "d": -1})},
			err:     ErrNoEligible,
		},
		{
			name:    "no servers error",
			members: []Member{rtts("u1", nil)},
			err:     ErrNoEligible,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			check := func(api string, got Choice, err error) {
				t.Helper()
				if tc.err != nil {
					if !errors.Is(err, tc.err) {
						t.Fatalf("%s: err = %v, want %v", api, err, tc.err)
					}
					if got != (Choice{}) {
						t.Fatalf("%s: choice = %+v alongside an error", api, got)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: unexpected error %v", api, err)
				}
				want := Choice{ServerID: tc.want, Index: indexOf(tc.servers, tc.want), Max: tc.max, Sum: tc.sum}
				if got != want {
					t.Fatalf("%s: got %+v, want %+v", api, got, want)
				}
			}
			got, err := Choose(tc.servers, tc.members, rand.New(rand.NewPCG(1, 1)))
			check("Choose", got, err)
			got, err = ChooseMatrix(tc.servers, matrixOf(tc.servers, tc.members), rand.New(rand.NewPCG(1, 1)))
			check("ChooseMatrix", got, err)
		})
	}
}

func TestNoEligibleErrorSaysWhy(t *testing.T) {
	servers := with(with(with(up("a", "b", "c", "d", "e"), "a", down), "b", down), "c", full)
	members := []Member{rtts("u1", map[string]time.Duration{"a": ms, "b": ms, "c": ms, "e": -1})}
	_, err := Choose(servers, members, nil)
	if !errors.Is(err, ErrNoEligible) {
		t.Fatalf("err = %v", err)
	}
	for _, part := range []string{"5 servers", "2 down", "0 draining", "1 full", "2 not measured"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q lacks %q", err, part)
		}
	}
	_, err2 := ChooseMatrix(servers, matrixOf(servers, members), nil)
	if err2 == nil || err2.Error() != err.Error() {
		t.Errorf("matrix error %v differs from map error %v", err2, err)
	}
	// Two open servers lacked only a measurement: a report may fix that.
	if !errors.Is(err, ErrUnmeasured) || !errors.Is(err2, ErrUnmeasured) {
		t.Errorf("%v does not match ErrUnmeasured", err)
	}
	// Every server down, draining or full: no report helps.
	shut := with(with(up("a", "b"), "a", down), "b", full)
	if _, err := Choose(shut, members, nil); !errors.Is(err, ErrNoEligible) || errors.Is(err, ErrUnmeasured) {
		t.Errorf("servers down and full: %v", err)
	}
}

// TestNoEligibleSentence: the counts worded for the people waiting for a
// room (Central's SERVER_ERR detail; bin/chat showed its error chain, and
// then parsed it, before).
func TestNoEligibleSentence(t *testing.T) {
	for _, tt := range []struct {
		e    NoEligibleError
		want string
	}{
		{NoEligibleError{Servers: 3, Down: 1, Full: 2}, "of 3 chat servers, 1 is down and 2 are full"},
		{NoEligibleError{}, "no chat server is running"},
		{NoEligibleError{Servers: 1, Draining: 1}, "the only chat server is shutting down"},
		{NoEligibleError{Servers: 2, Full: 2}, "all 2 chat servers are full"},
		{NoEligibleError{Servers: 4, Down: 1, Draining: 1, Full: 1, Unmeasured: 1}, "of 4 chat servers, 1 is down, 1 is shutting down, 1 is full and 1 is not measured by everyone in the chat yet"},
		{NoEligibleError{Servers: 2}, "none of the 2 chat servers can take it"},
	} {
		if got := tt.e.Sentence(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.e, got, tt.want)
		}
	}
	var ne *NoEligibleError
	if _, err := Choose(up("a"), []Member{rtts("u1", nil)}, nil); !errors.As(err, &ne) || ne.Sentence() != "the only chat server is not measured by everyone in the chat yet" {
		t.Errorf("Choose: %v", err)
	}
}

func TestScore(t *testing.T) {
	members := []Member{
		rtts("u1", map[string]time.Duration{"a": 10 * ms, "b": 5 * ms, "c": -1}),
		rtts("u2", map[string]time.Duration{"a": 30 * ms, "b": 7 * ms}),
	}
	tests := []struct {
		name    string
		id      string
		members []Member
		want    Choice
		ok      bool
	}{
		{"measured by all", "a", members, Choice{ServerID: "a", Index: -1, Max: 30 * ms, Sum: 40 * ms}, true},
		{"other server", "b", members, Choice{ServerID: "b", Index: -1, Max: 7 * ms, Sum: 12 * ms}, true},
		{"count 0 for one member", "c", members, Choice{}, false},
		{"missing for all", "z", members, Choice{}, false},
		{"no members", "a", nil, Choice{}, false},
	}
	servers := up("a", "b", "c", "z")
	m := matrixOf(servers, members)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Score(tc.id, tc.members)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("Score = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
			if tc.members == nil {
				return
			}
			want := tc.want
			if ok {
				want.Index = indexOf(servers, tc.id)
			}
			got, ok = ScoreMatrix(servers, m, indexOf(servers, tc.id))
			if ok != tc.ok || got != want {
				t.Fatalf("ScoreMatrix = %+v, %v; want %+v, %v", got, ok, want, tc.ok)
			}
		})
	}
	if _, ok := ScoreMatrix(servers, m, len(servers)); ok {
		t.Error("ScoreMatrix accepted an out-of-range index")
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	two := func(a, b map[string]time.Duration) []Member {
		return []Member{rtts("c1", a), rtts("c2", b)}
	}
	// The paper's topology: both clients see serv1 40ms, serv3 60ms, serv4
	// 80ms, serv2 100ms.
	paper := map[string]time.Duration{"serv1": 40 * ms, "serv2": 100 * ms, "serv3": 60 * ms, "serv4": 80 * ms}
	paperish := map[string]time.Duration{"serv1": 41 * ms, "serv2": 100 * ms, "serv3": 62 * ms, "serv4": 80 * ms}
	tests := []struct {
		name     string
		policy   *Policy // nil = DefaultPolicy
		current  string
		since    time.Duration // now - lastMove; 0 means never moved
		servers  []Server
		members  []Member
		move     bool
		to       string // "" = no destination expected
		reason   string
		reasonIs bool // reason compared exactly; otherwise as a prefix
		err      error
	}{
		{
			name:    "current down -> move at once ignoring dwell",
			current: "serv1", since: time.Second,
			servers: with(up("serv1", "serv2", "serv3", "serv4"), "serv1", down),
			members: two(paper, paper),
			move:    true, to: "serv3", reason: ReasonCurrentDown, reasonIs: true,
		},
		{
			name:    "current down -> move at once ignoring margin",
			current: "a", since: time.Second,
			servers: with(up("a", "b"), "a", down),
			members: two(map[string]time.Duration{"a": 10 * ms, "b": 90 * ms}, map[string]time.Duration{"a": 10 * ms, "b": 90 * ms}),
			move:    true, to: "b", reason: ReasonCurrentDown, reasonIs: true,
		},
		{
			name:    "current draining -> move at once",
			current: "serv1", since: time.Second,
			servers: with(up("serv1", "serv2", "serv3", "serv4"), "serv1", draining),
			members: two(paper, paper),
			move:    true, to: "serv3", reason: ReasonCurrentDraining, reasonIs: true,
		},
		{
			name:    "current missing from list -> move at once",
			current: "gone", since: time.Second,
			servers: up("serv1", "serv2", "serv3", "serv4"),
			members: two(paper, paper),
			move:    true, to: "serv1", reason: ReasonCurrentUnknown, reasonIs: true,
		},
		{
			name:    "current unmeasured by a member -> move at once",
			current: "serv1", since: time.Second,
			servers: up("serv1", "serv2", "serv3", "serv4"),
			members: two(paper, map[string]time.Duration{"serv1": -1, "serv2": 100 * ms, "serv3": 60 * ms, "serv4": 80 * ms}),
			move:    true, to: "serv3", reason: ReasonCurrentUnmeasured, reasonIs: true,
		},
		{
			name:    "gain below absolute margin",
			current: "a", since: time.Hour,
			servers: up("a", "b"),
			members: two(map[string]time.Duration{"a": 20 * ms, "b": 16 * ms}, map[string]time.Duration{"a": 20 * ms, "b": 16 * ms}),
			move:    false, to: "a", reason: ReasonBelowAbsolute, reasonIs: true,
		},
		{
			name:    "gain below relative margin",
			current: "a", since: time.Hour,
			servers: up("a", "b"),
			members: two(map[string]time.Duration{"a": 100 * ms, "b": 92 * ms}, map[string]time.Duration{"a": 50 * ms, "b": 50 * ms}),
			move:    false, to: "a", reason: ReasonBelowRelative, reasonIs: true,
		},
		{
			name:    "within dwell",
			current: "serv3", since: 9 * time.Second,
			servers: up("serv1", "serv2", "serv3", "serv4"),
			members: two(paperish, paper),
			move:    false, to: "serv3", reason: ReasonDwell, reasonIs: true,
		},
		{
			name:    "move when all satisfied",
			current: "serv3", since: 11 * time.Second,
			servers: up("serv1", "serv2", "serv3", "serv4"),
			members: two(paperish, paper),
			move:    true, to: "serv1", reason: "better server: serv1 41ms < serv3 62ms", reasonIs: true,
		},
		{
			name:    "move at exact margins and dwell",
			current: "a", since: 10 * time.Second,
			servers: up("a", "b"),
			members: two(map[string]time.Duration{"a": 50 * ms, "b": 45 * ms}, map[string]time.Duration{"a": 1 * ms, "b": 1 * ms}),
			move:    true, to: "b", reason: "better server: b 45ms < a 50ms", reasonIs: true,
		},
		{
			name:    "never moved counts as dwell passed",
			current: "serv3",
			servers: up("serv1", "serv2", "serv3", "serv4"),
			members: two(paper, paper),
			move:    true, to: "serv1", reason: "better server: serv1 40ms < serv3 60ms", reasonIs: true,
		},
		{
			name:    "current full but still best -> stay",
			current: "serv1", since: time.Hour,
			servers: with(up("serv1", "serv2", "serv3", "serv4"), "serv1", full),
			members: two(paper, paper),
			move:    false, to: "serv1", reason: ReasonOnBest, reasonIs: true,
		},
		{
			name:    "current full and the only open server -> stay",
			current: "serv3", since: time.Hour,
			servers: with(with(with(up("serv1", "serv2", "serv3", "serv4"), "serv1", down), "serv2", draining), "serv3", full),
			members: two(paper, map[string]time.Duration{"serv1": 40 * ms, "serv2": 100 * ms, "serv3": 60 * ms}),
			move:    false, to: "serv3", reason: ReasonOnBest, reasonIs: true,
		},
		{
			name:    "current full and worse -> move",
			current: "serv3", since: time.Hour,
			servers: with(up("serv1", "serv2", "serv3", "serv4"), "serv3", full),
			members: two(paper, paper),
			move:    true, to: "serv1", reason: "better server: serv1 40ms < serv3 60ms", reasonIs: true,
		},
		{
			name:    "better server full -> stay",
			current: "serv3", since: time.Hour,
			servers: with(up("serv1", "serv2", "serv3", "serv4"), "serv1", full),
			members: two(paper, paper),
			move:    false, to: "serv3", reason: ReasonOnBest, reasonIs: true,
		},
		{
			name:    "zero policy does not move between equal servers",
			policy:  &Policy{},
			current: "a", since: time.Hour,
			servers: up("a", "b", "c"),
			members: two(map[string]time.Duration{"a": 30 * ms, "b": 30 * ms, "c": 30 * ms}, map[string]time.Duration{"a": 30 * ms, "b": 30 * ms, "c": 30 * ms}),
			move:    false, to: "a", reason: ReasonOnBest, reasonIs: true,
		},
		{
			name:    "no eligible server",
			current: "a", since: time.Hour,
			servers: with(with(up("a", "b"), "a", down), "b", full),
			members: two(map[string]time.Duration{"a": 30 * ms, "b": 30 * ms}, map[string]time.Duration{"a": 30 * ms, "b": 30 * ms}),
			move:    false, reason: ReasonCurrentDown, err: ErrNoEligible,
		},
		{
			name:    "zero members",
			current: "a", since: time.Hour,
			servers: up("a", "b"),
			err:     ErrNoMembers,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy()
			if tc.policy != nil {
				p = *tc.policy
			}
			var last time.Time
			if tc.since != 0 {
				last = now.Add(-tc.since)
			}
			check := func(api string, d Decision, err error) {
				t.Helper()
				if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
					t.Fatalf("%s: err = %v, want %v", api, err, tc.err)
				}
				if d.Move != tc.move {
					t.Fatalf("%s: Move = %v, want %v (%+v)", api, d.Move, tc.move, d)
				}
				if d.To.ServerID != tc.to {
					t.Fatalf("%s: To = %q, want %q (%+v)", api, d.To.ServerID, tc.to, d)
				}
				if tc.to != "" {
					want, ok := Score(tc.to, tc.members)
					if !ok || d.To.Max != want.Max || d.To.Sum != want.Sum || d.To.Index != indexOf(tc.servers, tc.to) {
						t.Fatalf("%s: To = %+v, want figures %+v at index %d", api, d.To, want, indexOf(tc.servers, tc.to))
					}
				}
				if tc.reasonIs && d.Reason != tc.reason || !strings.HasPrefix(d.Reason, tc.reason) {
					t.Fatalf("%s: Reason = %q, want %q", api, d.Reason, tc.reason)
				}
			}
			d, err := p.Decide(tc.current, last, now, tc.servers, tc.members, rand.New(rand.NewPCG(7, 7)))
			check("Decide", d, err)
			d, err = p.DecideMatrix(indexOf(tc.servers, tc.current), last, now, tc.servers, matrixOf(tc.servers, tc.members), rand.New(rand.NewPCG(7, 7)))
			check("DecideMatrix", d, err)
		})
	}
}

func TestMatrixShape(t *testing.T) {
	servers := up("a", "b")
	m := NewMatrix(3, 2)
	if _, err := ChooseMatrix(servers, m, nil); !errors.Is(err, ErrShape) {
		t.Errorf("wrong server count: err = %v", err)
	}
	m = NewMatrix(2, 2)
	m.RTT = m.RTT[:3]
	if _, err := DefaultPolicy().DecideMatrix(0, time.Time{}, time.Now(), servers, m, nil); !errors.Is(err, ErrShape) {
		t.Errorf("short RTT slice: err = %v", err)
	}
	if _, err := ChooseMatrix(servers, NewMatrix(2, 0), nil); !errors.Is(err, ErrNoMembers) {
		t.Errorf("no members: err = %v", err)
	}
}

func TestMatrixAccessors(t *testing.T) {
	m := NewMatrix(3, 2)
	m.SetMember(1, []time.Duration{5 * ms, 6 * ms})
	m.Set(0, 2, 9*ms)
	want := [][]time.Duration{{Unmeasured, Unmeasured, 9 * ms}, {5 * ms, 6 * ms, Unmeasured}}
	for mem, row := range want {
		for s, d := range row {
			if got := m.At(mem, s); got != d {
				t.Errorf("At(%d, %d) = %v, want %v", mem, s, got, d)
			}
		}
	}
	// Fill must reuse storage and overwrite every cell.
	backing := &m.RTT[0]
	m.Fill(up("a", "b"), []Member{rtts("u", map[string]time.Duration{"a": 3 * ms})})
	if m.Servers != 2 || m.Members != 1 || len(m.RTT) != 2 || &m.RTT[0] != backing {
		t.Fatalf("Fill reshaped to %+v", m)
	}
	if m.At(0, 0) != 3*ms || m.At(0, 1) >= 0 {
		t.Errorf("Fill wrote %v", m.RTT)
	}
}

// instance draws a random room with plenty of ties, gaps and flags.
func instance(r *rand.Rand) ([]Server, []Member) {
	servers := make([]Server, 1+r.IntN(12))
	for i := range servers {
		servers[i] = Server{
			ID:       fmt.Sprintf("s%d", i),
			Up:       r.IntN(100) < 85,
			Draining: r.IntN(100) < 10,
			Full:     r.IntN(100) < 10,
		}
	}
	members := make([]Member, 1+r.IntN(6))
	for j := range members {
		v := make(map[string]Sample)
		for i := range servers {
			switch x := r.IntN(100); {
			case x < 8: // never probed
			case x < 12:
				v[servers[i].ID] = Sample{Median: time.Duration(1+r.IntN(6)) * 10 * ms}
			default:
				v[servers[i].ID] = Sample{Median: time.Duration(1+r.IntN(6)) * 10 * ms, Count: 1 + r.IntN(5)}
			}
		}
		members[j] = Member{User: fmt.Sprintf("u%d", j), RTT: v}
	}
	return servers, members
}

func TestChooseProperty(t *testing.T) {
	gen := rand.New(rand.NewPCG(2025, 11))
	chosen := 0
	for n := range 5000 {
		servers, members := instance(gen)
		got, err := Choose(servers, members, rand.New(rand.NewPCG(uint64(n), 3)))

		var best []Choice
		for i, s := range servers {
			if !s.Up || s.Draining || s.Full {
				continue
			}
			c, ok := Score(s.ID, members)
			if !ok {
				continue
			}
			c.Index = i
			best = append(best, c)
		}
		if len(best) == 0 {
			if !errors.Is(err, ErrNoEligible) {
				t.Fatalf("instance %d: nothing eligible but got %+v, %v", n, got, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("instance %d: %v", n, err)
		}
		chosen++
		found := false
		for _, c := range best {
			if c.Max < got.Max {
				t.Fatalf("instance %d: chose %+v but %+v has a lower Max", n, got, c)
			}
			if c.Max == got.Max && c.Sum < got.Sum {
				t.Fatalf("instance %d: chose %+v but %+v has equal Max and a lower Sum", n, got, c)
			}
			if c == got {
				found = true
			}
		}
		if !found {
			t.Fatalf("instance %d: chose %+v, which is not an eligible server with those figures", n, got)
		}

		// The matrix form must pick the very same server from the same
		// random state.
		gm, err := ChooseMatrix(servers, matrixOf(servers, members), rand.New(rand.NewPCG(uint64(n), 3)))
		if err != nil || gm != got {
			t.Fatalf("instance %d: ChooseMatrix = %+v, %v; Choose = %+v", n, gm, err, got)
		}
	}
	if chosen < 1000 {
		t.Fatalf("only %d of the instances had an eligible server; generator too harsh to test anything", chosen)
	}
}

func TestDecideMatrixMatchesDecide(t *testing.T) {
	gen := rand.New(rand.NewPCG(99, 1))
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	moves := 0
	for n := range 5000 {
		servers, members := instance(gen)
		p := Policy{
			MinGain:    time.Duration(gen.IntN(3)) * 10 * ms,
			MinGainPct: float64(gen.IntN(3) * 20),
			MinDwell:   time.Duration(gen.IntN(3)) * 5 * time.Second,
		}
		cur := gen.IntN(len(servers)+1) - 1
		id := "nowhere"
		if cur >= 0 {
			id = servers[cur].ID
		}
		last := now.Add(-time.Duration(gen.IntN(12)) * time.Second)
		d1, e1 := p.Decide(id, last, now, servers, members, rand.New(rand.NewPCG(uint64(n), 5)))
		d2, e2 := p.DecideMatrix(cur, last, now, servers, matrixOf(servers, members), rand.New(rand.NewPCG(uint64(n), 5)))
		if d1 != d2 || fmt.Sprint(e1) != fmt.Sprint(e2) {
			t.Fatalf("instance %d: Decide = %+v, %v; DecideMatrix = %+v, %v", n, d1, e1, d2, e2)
		}
		if d1.Move {
			moves++
			if d1.To.Index == cur && !strings.HasPrefix(d1.Reason, "current") {
				t.Fatalf("instance %d: voluntary move to the current server: %+v", n, d1)
			}
		}
	}
	if moves < 500 {
		t.Fatalf("only %d moves in 5000 instances; generator too tame to test anything", moves)
	}
}

func TestUniformTies(t *testing.T) {
	// The four tied servers are interleaved with worse and ineligible ones so
	// that the reservoir also has to skip over non-ties.
	servers := with(up("t0", "w0", "t1", "x", "t2", "w1", "t3"), "x", down)
	tied := map[string]time.Duration{"t0": 20 * ms, "t1": 20 * ms, "t2": 20 * ms, "t3": 20 * ms, "w0": 25 * ms, "w1": 20 * ms, "x": 1 * ms}
	other := map[string]time.Duration{"t0": 10 * ms, "t1": 10 * ms, "t2": 10 * ms, "t3": 10 * ms, "w0": 5 * ms, "w1": 11 * ms, "x": 1 * ms}
	members := []Member{rtts("a", tied), rtts("b", other)}
	m := matrixOf(servers, members)

	const draws, want, slack = 10000, 2500, 125
	for _, api := range []string{"Choose", "ChooseMatrix"} {
		t.Run(api, func(t *testing.T) {
			r := rand.New(rand.NewPCG(42, 4242))
			counts := map[string]int{}
			for range draws {
				var c Choice
				var err error
				if api == "Choose" {
					c, err = Choose(servers, members, r)
				} else {
					c, err = ChooseMatrix(servers, m, r)
				}
				if err != nil {
					t.Fatal(err)
				}
				counts[c.ServerID]++
			}
			if len(counts) != 4 {
				t.Fatalf("chose %v, want exactly t0..t3", counts)
			}
			for _, id := range []string{"t0", "t1", "t2", "t3"} {
				if c := counts[id]; c < want-slack || c > want+slack {
					t.Errorf("%s chosen %d times of %d, want %d±%d (all: %v)", id, c, draws, want, slack, counts)
				}
			}
		})
	}
}

func TestNilRandConcurrent(t *testing.T) {
	servers := up("a", "b", "c", "d")
	same := map[string]time.Duration{"a": 30 * ms, "b": 30 * ms, "c": 30 * ms, "d": 30 * ms}
	members := []Member{rtts("u1", same), rtts("u2", same)}
	m := matrixOf(servers, members)
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			local := map[string]int{}
			for range 500 {
				var c Choice
				var err error
				if g%2 == 0 {
					c, err = Choose(servers, members, nil)
				} else {
					c, err = ChooseMatrix(servers, m, nil)
				}
				if err != nil {
					t.Error(err)
					return
				}
				local[c.ServerID]++
			}
			mu.Lock()
			for k, v := range local {
				seen[k] += v
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(seen) != 4 {
		t.Fatalf("nil rand over 2000 draws only ever chose %v", seen)
	}
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	servers, members := randomRoom(r, 64, 16)
	m := matrixOf(servers, members)
	best, err := ChooseMatrix(servers, m, r)
	if err != nil {
		t.Fatal(err)
	}
	p := DefaultPolicy()
	now := time.Now()
	last := now.Add(-time.Hour)
	cases := map[string]func(){
		"Choose":       func() { _, _ = Choose(servers, members, r) },
		"ChooseMatrix": func() { _, _ = ChooseMatrix(servers, m, r) },
		"Decide": func() {
			if d, _ := p.Decide(best.ServerID, last, now, servers, members, r); d.Move {
				t.Fatal("steady-state room moved")
			}
		},
		"DecideMatrix": func() {
			if d, _ := p.DecideMatrix(best.Index, last, now, servers, m, r); d.Move {
				t.Fatal("steady-state room moved")
			}
		},
	}
	for name, f := range cases {
		if a := testing.AllocsPerRun(200, f); a != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, a)
		}
	}
}

func TestMoveAllocatesOnlyItsReason(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	servers, members := randomRoom(r, 64, 2)
	m := matrixOf(servers, members)
	best, err := ChooseMatrix(servers, m, r)
	if err != nil {
		t.Fatal(err)
	}
	// Put the room on the worst open server so that it has to move.
	worst, worstMax := -1, time.Duration(0)
	for i := range servers {
		if c, ok := ScoreMatrix(servers, m, i); ok && !servers[i].Full && servers[i].Up && !servers[i].Draining && c.Max > worstMax {
			worst, worstMax = i, c.Max
		}
	}
	p, now := DefaultPolicy(), time.Now()
	a := testing.AllocsPerRun(200, func() {
		d, _ := p.DecideMatrix(worst, time.Time{}, now, servers, m, r)
		if !d.Move || d.To.Index != best.Index {
			t.Fatalf("expected a move to %d, got %+v", best.Index, d)
		}
	})
	if a > 1 {
		t.Errorf("a move costs %v allocations, want at most 1 (the Reason)", a)
	}
}

// randomRoom makes n servers (a few down, draining or full) and k members
// with uniformly random RTTs between 5 and 205 ms at microsecond resolution.
func randomRoom(r *rand.Rand, n, k int) ([]Server, []Member) {
	servers := make([]Server, n)
	for i := range servers {
		servers[i] = Server{ID: fmt.Sprintf("serv%d", i+1), Up: true}
	}
	markFlags(servers)
	members := make([]Member, k)
	for j := range members {
		v := make(map[string]Sample, n)
		for i := range servers {
			v[servers[i].ID] = Sample{Median: randRTT(r), Spread: ms, Count: 5}
		}
		members[j] = Member{User: fmt.Sprintf("user%d", j), RTT: v}
	}
	return servers, members
}

func markFlags(servers []Server) {
	for i := range servers {
		switch i % 16 {
		case 3:
			servers[i].Up = false
		case 7:
			servers[i].Draining = true
		case 11:
			servers[i].Full = true
		}
	}
}

func randRTT(r *rand.Rand) time.Duration {
	return 5*ms + time.Duration(r.IntN(200_000))*time.Microsecond
}

// Issue 14: a gain the measurements cannot show (no larger than the two
// servers' spreads together) moves nothing, in both forms of the rule.
func TestDecideSpread(t *testing.T) {
	servers := up("a", "b")
	for _, tc := range []struct {
		name   string
		spread time.Duration
		move   bool
	}{
		{"gain 20ms within spreads 2x12ms", 12 * time.Millisecond, false},
		{"gain 20ms beyond spreads 2x5ms", 5 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vec := map[string]Sample{
				"a": {Median: 60 * time.Millisecond, Spread: tc.spread, Count: 5},
				"b": {Median: 40 * time.Millisecond, Spread: tc.spread, Count: 5},
			}
			members := []Member{{User: "x", RTT: vec}, {User: "y", RTT: vec}}
			now := time.Now()
			p := DefaultPolicy()
			d, err := p.Decide("a", now.Add(-time.Hour), now, servers, members, nil)
			if err != nil || d.Move != tc.move {
				t.Fatalf("Decide: %+v %v, want move=%v", d, err, tc.move)
			}
			if !tc.move && d.Reason != ReasonBelowSpread {
				t.Fatalf("Decide reason %q", d.Reason)
			}
			var m Matrix
			m.Fill(servers, members)
			m.Spread = make([]time.Duration, len(m.RTT))
			for i := range m.Spread {
				m.Spread[i] = tc.spread
			}
			dm, err := p.DecideMatrix(0, now.Add(-time.Hour), now, servers, m, nil)
			if err != nil || dm.Move != tc.move || dm.Reason != d.Reason {
				t.Fatalf("DecideMatrix: %+v %v, want %+v", dm, err, d)
			}
			p.SpreadFactor = 0
			if d, _ := p.Decide("a", now.Add(-time.Hour), now, servers, members, nil); !d.Move {
				t.Fatalf("SpreadFactor 0 must ignore spreads: %+v", d)
			}
		})
	}
}
