package store

import (
	"errors"
	"testing"

	"nearchat/pkg/selection"
)

func TestMemoryCopiesAndOrder(t *testing.T) {
	m := NewMemory()
	lat := map[string]selection.Sample{"serv1": {Median: 5, Count: 1}}
	m.PutUser(User{Name: "b", Token: "t", Latency: lat})
	m.PutUser(User{Name: "a"})
	lat["serv1"] = selection.Sample{} // the caller's map must not reach the store
	u, ok := m.User("b")
	if !ok || u.Latency["serv1"].Median != 5 {
		t.Fatalf("user %+v %v", u, ok)
	}
	u.Latency["serv2"] = selection.Sample{} // nor the returned one
	if again, _ := m.User("b"); len(again.Latency) != 1 {
		t.Fatalf("store changed through a returned map: %+v", again)
	}
	members := []string{"a", "b"}
	m.PutRoom(Room{ID: "r2", Members: members})
	m.PutRoom(Room{ID: "r1"})
	members[0] = "z"
	rooms, _ := m.Rooms()
	if len(rooms) != 2 || rooms[0].ID != "r1" || rooms[1].Members[0] != "a" {
		t.Fatalf("rooms %+v", rooms)
	}
	m.PutServer(Server{ID: "s"})
	m.PutRequest(Request{ID: "q-2", Code: 7})
	m.PutRequest(Request{ID: "q-1", Room: "r2", Code: 5})
	if reqs, _ := m.Requests(); len(reqs) != 2 || reqs[0].ID != "q-1" || reqs[0].Room != "r2" {
		t.Fatalf("requests %+v", reqs)
	}
	m.PutRevocation(Revocation{Room: "r2", User: "b", Before: 1, Until: 2})
	m.PutRevocation(Revocation{Room: "r2", User: "b", Before: 3, Until: 4}) // the later leave wins
	m.PutRevocation(Revocation{Room: "r1", Before: 1, Until: 2})
	if revs, _ := m.Revocations(); len(revs) != 2 || revs[0].ID() != "r1/" || revs[1] != (Revocation{Room: "r2", User: "b", Before: 3, Until: 4}) {
		t.Fatalf("revocations %+v", revs)
	}
	if u, s, r := m.Counts(); u != 2 || s != 1 || r != 2 {
		t.Fatalf("counts %d %d %d", u, s, r)
	}
	for _, tc := range []struct {
		name string
		del  func() error
	}{
		{"user", func() error { return m.DeleteUser("a") }},
		{"server", func() error { return m.DeleteServer("s") }},
		{"room", func() error { return m.DeleteRoom("r1") }},
		{"request", func() error { return m.DeleteRequest("q-1") }},
		{"revocation", func() error { return m.DeleteRevocation(RevocationID("r2", "b")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.del(); err != nil {
				t.Fatalf("first delete: %v", err)
			}
			if err := tc.del(); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second delete: %v, want ErrNotFound", err)
			}
		})
	}
}
