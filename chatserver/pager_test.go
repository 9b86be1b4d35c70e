package chatserver

import (
	"encoding/json"
	"fmt"
	"testing"

	"nearchat/pkg/centralapi"
)

// Reliability finding 8: a server with 50,000 rooms of 16 members used to
// send them all in every heartbeat (over Central's 8 MiB limit, so it was
// declared dead). Pages stay small, cover every room in turn, and carry a
// change in the next beat.
func TestHeartbeatPages(t *testing.T) {
	const rooms, members = 50000, 16
	all := make([]RoomInfo, rooms)
	for i := range all {
		all[i] = RoomInfo{ID: fmt.Sprintf("r-%012x", i), Epoch: 1}
		for j := range members {
			all[i].Members = append(all[i].Members, fmt.Sprintf("user%06d", (i*members+j)%1000000))
		}
	}
	var p pager
	seen := map[string]bool{}
	biggest := 0
	beats := 0
	for len(seen) < rooms {
		if beats++; beats > rooms/heartbeatPage+2 {
			t.Fatalf("after %d beats only %d of %d rooms reported", beats, len(seen), rooms)
		}
		page := p.page(all, heartbeatPage)
		body, err := json.Marshal(centralapi.HeartbeatRequest{Total: rooms, Rooms: page})
		if err != nil {
			t.Fatal(err)
		}
		biggest = max(biggest, len(body))
		for _, r := range page {
			seen[r.ID] = true
		}
	}
	t.Logf("%d rooms x %d members: every room reported in %d beats, biggest heartbeat %d KiB", rooms, members, beats, biggest>>10)
	if biggest > 2<<20 {
		t.Fatalf("a heartbeat of %d bytes", biggest)
	}
	// A room that moves (new epoch) or changes members is in the next page.
	all[31337].Epoch = 2
	all[4242].Members = all[4242].Members[1:]
	got := map[string]bool{}
	for _, r := range p.page(all, heartbeatPage) {
		got[r.ID] = true
	}
	if !got[all[31337].ID] || !got[all[4242].ID] {
		t.Fatalf("changed rooms missing from the next page")
	}
}
