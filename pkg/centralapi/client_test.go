package centralapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"nearchat/central"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"
)

func TestMain(m *testing.M) {
	testkit.VerifyNoLeaks(m,
		// The REST client under test keeps its idle keep-alive connections.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}

// startCentral runs a real Central on loopback ports.
func startCentral(t *testing.T, secret string) *central.Central {
	t.Helper()
	cfg := central.DefaultConfig()
	cfg.RESTListen, cfg.ControlListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ClusterSecret = secret
	c, err := central.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		c.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return c
}

func TestClientAgainstCentral(t *testing.T) {
	c := startCentral(t, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, base := range []string{c.RESTAddr(), "http://" + c.RESTAddr() + "/"} {
		api := centralapi.NewClient(base, nil)
		if h, err := api.Health(ctx); err != nil || h.Status != "ok" {
			t.Fatalf("%s: health %+v %v", base, h, err)
		}
	}
	api := centralapi.NewClient(c.RESTAddr(), nil)

	// Servers.
	if _, err := api.Register(ctx, centralapi.RegisterServerRequest{ID: "serv1", Addr: "127.0.0.1:3002"}); !centralapi.IsUnauthorized(err) {
		t.Fatalf("register without secret: %v", err)
	}
	reg, err := api.Register(ctx, centralapi.RegisterServerRequest{ID: "serv1", Addr: "127.0.0.1:3002", Secret: "k", MaxConns: 100})
	if err != nil || reg.ID != "serv1" || reg.HeartbeatInterval() != 3*time.Second {
		t.Fatalf("register: %+v %v", reg, err)
	}
	// ann registers before the heartbeat lists her: a name Central learns
	// only from a room report is a placeholder that only its own token
	// claims.
	s, err := api.RegisterClient(ctx, "ann", "")
	if err != nil {
		t.Fatal(err)
	}
	hb := centralapi.HeartbeatRequest{Conns: 2, Rooms: []centralapi.RoomReport{{ID: "r-1", Epoch: 4, Members: []string{"ann", "ben"}}}}
	if _, err := api.Heartbeat(ctx, "serv1", reg.Token, hb); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Heartbeat(ctx, "serv1", "k", hb); !centralapi.IsUnauthorized(err) {
		t.Fatalf("heartbeat with the cluster secret instead of the server token: %v", err)
	}
	if _, err := api.Heartbeat(ctx, "serv9", reg.Token, hb); !centralapi.IsUnknownServer(err) {
		t.Fatalf("unknown server: %v", err)
	}
	servers, err := api.Servers(ctx)
	if err != nil || len(servers) != 1 || servers[0].Conns != 2 || servers[0].MaxConns != 100 {
		t.Fatalf("servers: %+v %v", servers, err)
	}
	if _, err := api.Rooms(ctx, ""); !centralapi.IsUnauthorized(err) {
		t.Fatalf("rooms without the secret: %v", err)
	}
	rooms, err := api.Rooms(ctx, "k")
	if err != nil || len(rooms) != 1 || rooms[0].ID != "r-1" || rooms[0].Epoch != 4 || rooms[0].Addr != "127.0.0.1:3002" || !slices.Equal(rooms[0].Members, []string{"ann", "ben"}) {
		t.Fatalf("rooms: %+v %v", rooms, err)
	}

	// Clients.
	if _, err := api.RegisterClient(ctx, "ann", ""); !centralapi.IsNameTaken(err) {
		t.Fatalf("taken: %v", err)
	}
	if err := api.PutLatency(ctx, "ann", s.Token, map[string]centralapi.Sample{"serv1": centralapi.SampleOf(12*time.Millisecond, time.Millisecond, 5)}); err != nil {
		t.Fatal(err)
	}
	if err := api.PutLatency(ctx, "ann", "bad", nil); !centralapi.IsUnauthorized(err) {
		t.Fatalf("latency with a wrong token: %v", err)
	}
	info, err := api.LookupClient(ctx, "ann")
	if err != nil || !slices.Equal(info.Rooms, []string{"r-1"}) {
		t.Fatalf("lookup: %+v %v", info, err)
	}
	// Nothing measured is an empty vector, not a body Central refuses.
	if err := api.PutLatency(ctx, "ann", s.Token, nil); err != nil {
		t.Fatalf("an empty vector: %v", err)
	}
	if err := api.DeregisterClient(ctx, "ann", s.Token); err != nil {
		t.Fatal(err)
	}
	var e *centralapi.Error
	if _, err := api.LookupClient(ctx, "ann"); !errors.As(err, &e) || e.Status != 404 || e.Code != centralapi.CodeUnknownClient {
		t.Fatalf("lookup after deregister: %v", err)
	}

	// Drain, then deregister.
	if err := api.Drain(ctx, "serv1", "k"); !centralapi.IsUnauthorized(err) {
		t.Fatalf("drain with the cluster secret instead of the server token: %v", err)
	}
	if err := api.Drain(ctx, "serv1", reg.Token); err != nil {
		t.Fatal(err)
	}
	if out, err := api.Heartbeat(ctx, "serv1", reg.Token, hb); err != nil || !out.Draining {
		t.Fatalf("heartbeat while draining: %+v %v", out, err)
	}
	if err := api.Deregister(ctx, "serv1", "wrong"); !centralapi.IsUnauthorized(err) {
		t.Fatalf("deregister with a wrong secret: %v", err)
	}
	if err := api.Deregister(ctx, "serv1", reg.Token); err != nil {
		t.Fatal(err)
	}
	if all, err := api.AllServers(ctx); err != nil || len(all) != 0 {
		t.Fatalf("after deregister: %+v %v", all, err)
	}
}

func TestClientTransportError(t *testing.T) {
	api := centralapi.NewClient("127.0.0.1:1", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := api.Servers(ctx)
	var e *centralapi.Error
	if err == nil || errors.As(err, &e) {
		t.Fatalf("connection refused must be a transport error, got %v", err)
	}
}

// Rooms follows GET /v1/rooms page after page, asking after the last id
// of each, until a page says there are no more.
func TestRoomsFollowsPages(t *testing.T) {
	var ids []string
	for i := range 2*centralapi.RoomPage + 3 {
		ids = append(ids, fmt.Sprintf("r-%05d", i))
	}
	var asks []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		after := r.URL.Query().Get("after")
		asks = append(asks, after)
		i, _ := slices.BinarySearch(ids, after)
		if i < len(ids) && ids[i] == after {
			i++
		}
		out := centralapi.RoomList{Rooms: []centralapi.RoomInfo{}}
		for ; i < len(ids) && len(out.Rooms) < centralapi.RoomPage; i++ {
			out.Rooms = append(out.Rooms, centralapi.RoomInfo{ID: ids[i]})
		}
		out.More = i < len(ids)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}))
	defer srv.Close()
	api := centralapi.NewClient(srv.URL, nil)
	defer api.CloseIdleConnections()
	got, err := api.Rooms(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) || got[0].ID != ids[0] || got[len(got)-1].ID != ids[len(ids)-1] {
		t.Fatalf("%d rooms from %s to %s, want %d", len(got), got[0].ID, got[len(got)-1].ID, len(ids))
	}
	if want := []string{"", ids[centralapi.RoomPage-1], ids[2*centralapi.RoomPage-1]}; !slices.Equal(asks, want) {
		t.Fatalf("asked after %q, want %q", asks, want)
	}
}

// A server list is bounded at 8 MiB, every other answer at 64 MiB: one
// list of 60 MB of empty entries took a bot past 7 GB (abuse probe,
// 2026-12-03).
func TestServerListBounded(t *testing.T) {
	entries := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"servers":[`)
		for i := range entries {
			if i > 0 {
				io.WriteString(w, ",")
			}
			io.WriteString(w, `{}`)
		}
		io.WriteString(w, `]}`)
	}))
	defer srv.Close()
	api := centralapi.NewClient(srv.URL, nil)
	defer api.CloseIdleConnections()
	entries = 1000
	if got, err := api.Servers(context.Background()); err != nil || len(got) != entries {
		t.Fatalf("a list of %d: %d, %v", entries, len(got), err)
	}
	entries = 3 << 20 // 9 MB
	if got, err := api.Servers(context.Background()); err == nil || !strings.Contains(err.Error(), "answer over") {
		t.Fatalf("a 9 MB list: %d servers, %v; want it refused", len(got), err)
	}
}
