package central

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

// A heartbeat with a wrong token is refused before its body is read: the
// answer arrives while the sender has sent 1 KiB of a declared 8 MiB.
func TestHeartbeatAuthBeforeBody(t *testing.T) {
	cfg := testConfig(t)
	cfg.ClusterSecret = "s3cret"
	h := startCentral(t, cfg)
	if _, err := h.api.Register(ctx(t), centralapi.RegisterServerRequest{ID: "serv1", Addr: "127.0.0.1:3002", Secret: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	for _, auth := range []string{"Bearer s3cret", "Bearer wrong", ""} {
		nc, err := net.Dial("tcp", h.c.RESTAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		hdr := fmt.Sprintf("POST /v1/servers/serv1/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", 8<<20)
		if auth != "" {
			hdr += "Authorization: " + auth + "\r\n"
		}
		if _, err := nc.Write([]byte(hdr + "\r\n{\"conns\":1,\"rooms\":[" + strings.Repeat(" ", 1024))); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("auth %q: no answer before the body was sent: %v", auth, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("auth %q: status %d, want 401", auth, resp.StatusCode)
		}
	}
}

// One flooder spends its own registration allowance, not everyone's.
func TestRegistrationLimitPerSource(t *testing.T) {
	cfg := testConfig(t)
	cfg.RegisterRate, cfg.RegisterBurst = 0.001, 3
	h := startCentral(t, cfg)
	for i := range 3 {
		h.register(t, fmt.Sprintf("flood%d", i))
	}
	if _, err := h.api.RegisterClient(ctx(t), "flood3", ""); err == nil || !strings.Contains(err.Error(), centralapi.CodeRateLimited) {
		t.Fatalf("fourth registration from one address: %v, want rate_limited", err)
	}
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	api := centralapi.NewClient(h.c.RESTAddr(), other)
	if _, err := api.RegisterClient(ctx(t), "newcomer", ""); err != nil {
		t.Fatalf("a newcomer from another address was refused: %v", err)
	}
}

// A registration whose client never connects does not hold its name for
// ever; one that connected keeps it.
func TestRegistrationThatNeverConnectsExpires(t *testing.T) {
	cfg := testConfig(t)
	clk := newFakeClock()
	cfg.Clock = clk.Now
	cfg.SessionGrace = time.Minute
	h := startCentral(t, cfg)
	h.register(t, "ghost")
	alice := h.register(t, "alice")
	h.connectAs(t, alice)
	testkit.WaitFor(t, 5*time.Second, "alice online", func() bool {
		info, err := h.api.LookupClient(ctx(t), "alice")
		return err == nil && info.Online
	})
	clk.Advance(cfg.SessionGrace + time.Second)
	testkit.WaitFor(t, 5*time.Second, "ghost's registration to expire", func() bool {
		_, err := h.api.LookupClient(ctx(t), "ghost")
		return centralapi.IsUnknownClient(err)
	})
	if _, err := h.api.LookupClient(ctx(t), "alice"); err != nil {
		t.Fatalf("a connected client lost its registration: %v", err)
	}
}

// A control client that sends pings and never reads the pongs is cut off
// once its replies pass the outbound cap, and Central goes on serving.
func TestControlNonReaderIsCutOff(t *testing.T) {
	cfg := testConfig(t)
	logs := &testkit.LogBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testkit.Writer(t), logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := startCentral(t, cfg)
	s := h.register(t, "spammer")
	nc, err := net.Dial("tcp", h.c.ControlAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Token: s.Token, Agent: "spammer"})
	if _, err := nc.Write(hello); err != nil {
		t.Fatal(err)
	}
	var batch []byte
	for i := range 1024 {
		batch, _ = wire.AppendFrame(batch, &proto.Ping{ID: uint64(i), At: 1})
	}
	const limit = 256 << 20
	sent, start := 0, time.Now()
	for sent < limit && time.Since(start) < 60*time.Second {
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		n, err := nc.Write(batch)
		sent += n
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // our side's buffers are full: Central stopped reading us
			}
			t.Logf("cut off after %d KiB of pings in %v: %v", sent>>10, time.Since(start), err)
			break
		}
	}
	if sent >= limit {
		t.Fatalf("Central read %d MiB of pings without cutting off a client that never reads", sent>>20)
	}
	if _, err := h.api.Health(ctx(t)); err != nil {
		t.Fatalf("Central after the flood: %v", err)
	}
	// The client may never read its Error: Central's log says it.
	testkit.WaitFor(t, 10*time.Second, "the cut-off logged", func() bool {
		return strings.Contains(logs.String(), `msg="control connection cut off" user=spammer code=slow_consumer`)
	})
	_ = context.Background
}

// A control connection that said Hello and then went silent is closed
// after ControlIdle; one that pings stays.
func TestControlIdleClosed(t *testing.T) {
	cfg := testConfig(t)
	// Wide against the 100 ms pings below: a loaded machine under -race
	// can stall this goroutine for hundreds of milliseconds.
	cfg.ControlIdle = 2 * time.Second
	h := startCentral(t, cfg)
	silent, _ := h.connect(t, "silent")
	talker, _ := h.connect(t, "talker")
	start := time.Now()
	// Pings every 100 ms for 2 x ControlIdle: each is answered.
	for i := uint64(1); time.Since(start) < 2*cfg.ControlIdle; i++ {
		talker.send(&proto.Ping{ID: i})
		if p := expect[*proto.Pong](talker, nil); p.ID != i {
			t.Fatalf("pong %+v, want id %d", p, i)
		}
		time.Sleep(100 * time.Millisecond) // the client's ping period, not a wait for a condition
	}
	silent.ExpectClosed(proto.CodeTimeout) // its error frame and close were kept for us
	t.Logf("ControlIdle %v: the silent connection was closed; the pinging one stayed open for %v", cfg.ControlIdle, time.Since(start).Round(10*time.Millisecond))
	talker.send(&proto.Ping{ID: 999})
	if p := expect[*proto.Pong](talker, nil); p.ID != 999 {
		t.Fatalf("pong %+v", p)
	}
}

// A client certificate naming a chat server id registers and speaks for
// that id only; the cluster-wide certificate (naming none) registers any.
func TestServerCertificateNamesItsID(t *testing.T) {
	f, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert1, key1, err := tlsconfig.WriteServerClient(f, "serv1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := tlsconfig.Server(f.ServerCert, f.ServerKey, f.CA)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS.ClientAuth = tls.VerifyClientCertIfGiven
	cfg := testConfig(t)
	cfg.TLS = srvTLS
	h := startCentral(t, cfg)
	api := func(cert, key string) *centralapi.Client {
		cl, err := tlsconfig.Client(f.CA, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return centralapi.NewClientTLS(h.c.RESTAddr(), cl)
	}
	serv1, shared := api(cert1, key1), api(f.ClientCert, f.ClientKey)
	// Without a cluster secret the certificate is the only way in: a
	// peer without one registered any server it liked.
	anon := api("", "")
	if _, err := anon.Register(ctx(t), centralapi.RegisterServerRequest{ID: "servX", Addr: "127.0.0.1:3999"}); !centralapi.IsUnauthorized(err) {
		t.Fatalf("registering without a certificate or secret: %v, want unauthorized", err)
	}
	if _, err := anon.Rooms(ctx(t), ""); !centralapi.IsUnauthorized(err) {
		t.Fatalf("listing rooms without a certificate or secret: %v, want unauthorized", err)
	}
	if _, err := serv1.Register(ctx(t), centralapi.RegisterServerRequest{ID: "serv1", Addr: "127.0.0.1:3002"}); err != nil {
		t.Fatalf("serv1 registering itself: %v", err)
	}
	if _, err := serv1.Register(ctx(t), centralapi.RegisterServerRequest{ID: "serv2", Addr: "127.0.0.1:3003"}); !centralapi.IsUnauthorized(err) {
		t.Fatalf("serv1's certificate registering serv2: %v, want unauthorized", err)
	}
	r2, err := shared.Register(ctx(t), centralapi.RegisterServerRequest{ID: "serv2", Addr: "127.0.0.1:3003"})
	if err != nil {
		t.Fatalf("the cluster-wide certificate registering serv2: %v", err)
	}
	if _, err := serv1.Heartbeat(ctx(t), "serv2", r2.Token, centralapi.HeartbeatRequest{}); !centralapi.IsUnauthorized(err) {
		t.Fatalf("serv1's certificate with serv2's token: %v, want unauthorized", err)
	}
	if _, err := shared.Heartbeat(ctx(t), "serv2", r2.Token, centralapi.HeartbeatRequest{}); err != nil {
		t.Fatalf("serv2's heartbeat: %v", err)
	}
}

// A control client that begins a frame and trickles the rest, a byte now
// and then so it is never silent, is cut off frameTimeout after the frame
// began, as on the chat servers. Before, any byte counted as life: 200
// such clients each held 64 KiB of Central's memory for as long as they
// liked (abuse probe, 2026-12-01).
func TestControlFrameTrickleCutOff(t *testing.T) {
	h := startCentral(t, testConfig(t))
	k, _ := h.connect(t, "trickler")
	// A frame of 1,000 bytes, of which 10 come now.
	if _, err := k.nc.Write([]byte{0, 0, 3, 0xe8, byte(proto.TPing), 0x81, 0xa2, 'i', 'd', 0xcd}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := k.nc.Write([]byte{0}); err != nil {
					return
				}
			}
		}
	}()
	told := false
	for deadline := start.Add(frameTimeout + 10*time.Second); ; {
		m, err := k.Next(time.Until(deadline))
		if err != nil {
			if !wiretest.Closed(err) {
				t.Fatalf("want the connection closed within %v of the frame's start, got %v", frameTimeout+10*time.Second, err)
			}
			break
		}
		if e, ok := m.(*proto.Error); ok {
			if e.Code != proto.CodeTimeout || !e.Fatal {
				t.Fatalf("error %+v, want a fatal timeout", e)
			}
			told = true
		}
	}
	if !told {
		t.Fatal("closed without saying why")
	}
	took := time.Since(start)
	t.Logf("cut off %v after the frame began (frameTimeout %v)", took, frameTimeout)
	if took < frameTimeout {
		t.Fatalf("cut off after %v, before frameTimeout %v", took, frameTimeout)
	}
}

// An AssignAck counts only from a member of the room: Central kept every
// sender's, and each kept its user alive, so registrations that
// acknowledged known rooms grew Central without bound (abuse probe,
// 2026-12-01: 18 to 272 MB in 10,000 cycles).
func TestAssignAckFromNonMemberIgnored(t *testing.T) {
	w := newWorld(t, nil)
	a, b := w.user(t, "alice"), w.user(t, "bob")
	as := chat(t, a, b)
	for i := range 3 {
		m := w.user(t, fmt.Sprintf("mallory%d", i))
		m.send(&proto.AssignAck{Room: as.Room, Epoch: as.Epoch})
		m.sync(nil)
	}
	w.c.mu.Lock()
	held := len(w.c.roomByID[as.Room].held)
	w.c.mu.Unlock()
	if held != 2 {
		t.Fatalf("the room records %d members following it, want alice and bob", held)
	}
}

// TestSecretGuessingLimited: an address that sends wrong cluster secrets
// gets secretFailBurst tries, then 429s with a Retry-After, its right
// secret too, until the allowance refills; another address is not
// touched. Before, 1,000 wrong secrets took 0.22 s and went unlogged
// (black-box sweep, 2026-12-04).
func TestSecretGuessingLimited(t *testing.T) {
	cfg := testConfig(t)
	cfg.ClusterSecret = "s3cret-of-the-cluster"
	clk := newFakeClock()
	cfg.Clock = clk.Now
	h := startCentral(t, cfg)
	register := func(from byte, secret string) *http.Response {
		t.Helper()
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, from)}}).DialContext}
		defer tr.CloseIdleConnections()
		body := fmt.Sprintf(`{"id":"serv%d","addr":"127.0.0.1:9","secret":%q}`, from, secret)
		resp, err := (&http.Client{Transport: tr}).Post("http://"+h.c.RESTAddr()+"/v1/servers", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := range secretFailBurst {
		if st := register(2, "guess").StatusCode; st != http.StatusUnauthorized {
			t.Fatalf("wrong secret %d: %d, want 401", i, st)
		}
	}
	for _, secret := range []string{"guess", cfg.ClusterSecret} {
		resp := register(2, secret)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "5" {
			t.Fatalf("secret %q past the allowance: %d, Retry-After %q; want 429 and 5", secret, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if st := register(3, cfg.ClusterSecret).StatusCode; st != http.StatusOK {
		t.Fatalf("the right secret from another address: %d", st)
	}
	clk.Advance(5 * time.Second)
	if st := register(2, cfg.ClusterSecret).StatusCode; st != http.StatusOK {
		t.Fatalf("the right secret once a try is back: %d", st)
	}
}

// TestLongIDsAreNotEchoed: an Answer, LeaveRoom or Unreachable naming an
// id Central could not have issued is refused as a bad request without
// the Ref that echoed it: Answers with 60,000-byte request ids read each
// back in an Error, as many bytes out as in (black-box sweep,
// 2026-12-04: 2.56 GB in 15 s on one connection).
func TestLongIDsAreNotEchoed(t *testing.T) {
	w := newWorld(t, nil)
	m := w.user(t, "mallory")
	long := strings.Repeat("r", 60_000)
	for _, f := range []wire.Message{
		&proto.Answer{Req: long, Accept: true},
		&proto.LeaveRoom{Room: long},
		&proto.Unreachable{Room: long, Server: "serv1", Epoch: 1},
	} {
		m.send(f)
		e := expect[*proto.Error](m, nil)
		if e.Code != proto.CodeBadRequest || e.Ref != "" || len(e.Reason) > 200 {
			t.Fatalf("%T with a 60,000-byte id: %s %q (%d bytes), ref of %d bytes", f, e.Code, e.Reason[:min(len(e.Reason), 200)], len(e.Reason), len(e.Ref))
		}
		t.Logf("%T: %s", f, e.Reason)
	}
	// A well-formed id Central does not know still names it.
	m.send(&proto.Answer{Req: "q-0123456789abcdef", Accept: true})
	if e := expect[*proto.Error](m, nil); e.Code != proto.CodeNotFound || e.Ref != "q-0123456789abcdef" {
		t.Fatalf("unknown request: %+v", e)
	}
}

// TestMalformedServerIDCertSpeaksForNone: a client certificate whose
// nearchat URI does not parse as a server id (nearchat://server/serv1, an
// empty id) registered any id and read the cluster's rooms, as a
// certificate for the whole cluster (abuse sweep, 2026-12-03). It now
// speaks for no server; a well-formed one still speaks for its own, and
// no longer lists the cluster's rooms.
func TestMalformedServerIDCertSpeaksForNone(t *testing.T) {
	c := &Central{cfg: Config{ClusterSecret: "s3cret"}}
	req := func(uri string) *http.Request {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("POST", "/v1/servers", nil)
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{URIs: []*url.URL{u}}}}}
		return r
	}
	for _, uri := range []string{"nearchat://server/serv1", "nearchat:server:"} {
		if e := certFor(req(uri), "servz"); e == nil {
			t.Errorf("%s: registered servz", uri)
		}
		if e := c.clusterOK(req(uri), ""); e == nil {
			t.Errorf("%s: taken for a cluster member", uri)
		}
	}
	good := req("nearchat:server:serv1")
	if e := certFor(good, "serv1"); e != nil {
		t.Errorf("serv1's certificate refused for serv1: %v", e)
	}
	if e := certFor(good, "servz"); e == nil {
		t.Error("serv1's certificate registered servz")
	}
	if e := c.clusterOK(good, ""); e != nil {
		t.Errorf("serv1's certificate not a cluster member: %v", e)
	}
	// It read every room of the cluster.
	list := req("nearchat:server:serv1")
	list.Method, list.URL.Path = "GET", "/v1/rooms"
	if _, _, e := c.listRooms(list); e == nil {
		t.Error("serv1's certificate listed the cluster's rooms")
	}
	if _, _, e := c.listRooms(req("https://example.com/cluster")); e != nil {
		t.Errorf("a cluster certificate may not list the rooms: %v", e)
	}
}

// TestControlFloodLeavesRESTItsShare: control connections that never say
// Hello, each held until the Hello timeout, took the whole descriptor
// budget, and REST (where chat servers register and beat) answered
// nothing meanwhile (abuse sweep, 2026-12-03: /healthz 0 of 12). Each port
// now takes at most all but an eighth of the budget.
func TestControlFloodLeavesRESTItsShare(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConns = 40
	h := startCentral(t, cfg)
	// Dialled one by one until the control port holds its share: the
	// loops admit what they accept as they get to it, and refuse some
	// while others wait to be enrolled.
	share := h.c.ctrlPort.Max()
	floodUntil(t, h.c.ControlAddr(), nil, func() bool { return h.c.lim.InUse() >= share })
	// Then on, until the server refuses one or evicts an older one to let
	// it in: the control port is full.
	full := func() int64 { return h.c.lim.Refused() + h.c.lim.Evicted() }
	for before := full(); full() == before; {
		inUse := h.c.lim.InUse()
		c, err := net.Dial("tcp", h.c.ControlAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		testkit.WaitFor(t, 10*time.Second, "the server to admit, refuse or make room for one more", func() bool {
			return h.c.lim.InUse() > inUse || full() > before
		})
	}
	t.Logf("flood: %d of %d descriptors in use", h.c.lim.InUse(), cfg.MaxConns)
	hc, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	api := centralapi.NewClient(h.c.RESTAddr(), nil)
	defer api.CloseIdleConnections()
	if _, err := api.Health(hc); err != nil {
		t.Fatalf("REST during a control flood: %v", err)
	}
}

// TestHelloLessFloodDoesNotLockOutClients: connections that never say
// Hello fill the per-source cap of the client's own address; a real
// client still gets in, the oldest silent connection giving way, and one
// that said Hello is never evicted.
func TestHelloLessFloodDoesNotLockOutClients(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnsPerSource = 8
	h := startCentral(t, cfg)
	bob, _ := h.connect(t, "bob") // said Hello: keeps its place
	flood := floodUntil(t, h.c.ControlAddr(), nil, func() bool { return h.c.ctrlPort.InUse() >= cfg.MaxConnsPerSource })
	evicted := h.c.lim.Evicted()
	for i := range 3 {
		alice, _ := h.connect(t, fmt.Sprintf("alice%d", i))
		alice.send(&proto.Ping{ID: 1})
		expect[*proto.Pong](alice, nil)
	}
	if got := h.c.lim.Evicted() - evicted; got < 3 {
		t.Fatalf("%d silent connections evicted for 3 clients, want at least 3", got)
	}
	bob.send(&proto.Ping{ID: 2})
	expect[*proto.Pong](bob, nil)
	// The evicted are told why.
	m, err := wiretest.NewPeer(t, flood[0]).Next(5 * time.Second)
	if e, ok := m.(*proto.Error); err != nil || !ok || e.Code != proto.CodeServerFull || !strings.Contains(e.Reason, "had not said Hello") {
		t.Fatalf("the oldest silent connection read %v, %v; want a server_full error naming its eviction", m, err)
	}
}

// TestHelloLessFloodDoesNotLockOutTLSClients is the flood above on a TLS
// control port: raw connections that never start TLS and TLS connections
// that never say Hello fill the per-source cap, and clients still get in;
// the TLS connection evicted is told why.
func TestHelloLessFloodDoesNotLockOutTLSClients(t *testing.T) {
	srvTLS, cl := devTLS(t)
	cfg := testConfig(t)
	cfg.TLS = srvTLS
	cfg.MaxConnsPerSource = 8
	h := startCentral(t, cfg)
	api := centralapi.NewClientTLS(h.c.RESTAddr(), cl)
	defer api.CloseIdleConnections()
	dialTLS := func() *wiretest.Peer {
		c, err := (&tlsconfig.Dialer{Config: cl}).DialContext(ctx(t), "tcp", h.c.ControlAddr())
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		return wiretest.NewPeer(t, c)
	}
	connect := func(name string) *wiretest.Peer {
		s, err := api.RegisterClient(ctx(t), name, "")
		if err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		p := dialTLS()
		p.Name = name
		p.Hello(&proto.Hello{Agent: "test/1", Token: s.Token})
		return p
	}
	bob := connect("bob")
	silent := dialTLS() // TLS, no Hello: the oldest newcomer
	// bob and silent hold 3 descriptors each (2 in the front, 1 on a loop).
	floodUntil(t, h.c.ControlAddr(), nil, func() bool { return h.c.ctrlPort.InUse() >= 6+2*(cfg.MaxConnsPerSource-2) })
	evicted := h.c.lim.Evicted()
	for i := range 3 {
		alice := connect(fmt.Sprintf("alice%d", i))
		alice.Send(&proto.Ping{ID: 1})
		wiretest.Expect[*proto.Pong](alice, wiretest.AllBut(proto.TPong))
	}
	if got := h.c.lim.Evicted() - evicted; got < 3 {
		t.Fatalf("%d connections evicted for 3 clients, want at least 3", got)
	}
	// The evicted TLS newcomer is told why over TLS, as a plaintext one
	// is (before: a bare close under the TLS connection, an EOF).
	m, err := silent.Next(5 * time.Second)
	if e, ok := m.(*proto.Error); err != nil || !ok || e.Code != proto.CodeServerFull || !e.Fatal || !strings.Contains(e.Reason, "had not said Hello") {
		t.Fatalf("the silent TLS connection read %v, %v; want a fatal server_full error naming its eviction", m, err)
	}
	silent.ExpectClosed(0)
	bob.Send(&proto.Ping{ID: 2})
	wiretest.Expect[*proto.Pong](bob, wiretest.AllBut(proto.TPong))
}

// TestRESTFloodDoesNotLockOutClients: connections to the REST port that
// send nothing, or trickle a request's headers, fill the per-source cap;
// a client of the same address still registers, the oldest of them
// giving way. (Before: refused until the header timeout closed them.)
func TestRESTFloodDoesNotLockOutClients(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnsPerSource = 8
	h := startCentral(t, cfg)
	rest := h.c.restLn.Addr().String()
	floodUntil(t, rest, []byte("GET /v1/health HTTP/1.1\r\n"), // and never the rest
		func() bool { return h.c.lim.InUse()-h.c.ctrlPort.InUse() >= cfg.MaxConnsPerSource })
	evicted := h.c.lim.Evicted()
	for i := range 3 {
		// Each client keeps its connection, so each needs a place.
		api := centralapi.NewClient(h.c.RESTAddr(), nil)
		defer api.CloseIdleConnections()
		if _, err := api.RegisterClient(ctx(t), fmt.Sprintf("carol%d", i), ""); err != nil {
			t.Fatalf("registering during the flood: %v", err)
		}
	}
	if got := h.c.lim.Evicted() - evicted; got < 3 {
		t.Fatalf("%d connections evicted for 3 clients, want at least 3", got)
	}
}

// TestRegistrationsBounded: past MaxUsers, a registration makes Central
// forget the users longest offline in no room (a flood of registrations
// from many addresses, each within its rate, grew Central without bound);
// when every user is connected it is refused with full, and names are
// free again once users go.
func TestRegistrationsBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxUsers = 16
	h := startCentral(t, cfg)
	var online []*ctl
	for i := range 8 {
		k, _ := h.connect(t, fmt.Sprintf("on%d", i))
		online = append(online, k)
	}
	for i := range 100 {
		h.register(t, fmt.Sprintf("idle%d", i)) // never connect
	}
	h.c.mu.Lock()
	n, first := len(h.c.users), h.c.users["idle0"]
	h.c.mu.Unlock()
	if n > cfg.MaxUsers || first != nil {
		t.Fatalf("%d users held (max %d), the first idle one kept: %v", n, cfg.MaxUsers, first != nil)
	}
	for _, k := range online {
		k.send(&proto.Ping{ID: 3})
		expect[*proto.Pong](k, skipAwaiting)
	}
	// Every place taken by a connected user: refused, and told why.
	for i := 8; i < 16; i++ {
		h.connect(t, fmt.Sprintf("on%d", i))
	}
	_, err := h.api.RegisterClient(ctx(t), "late", "")
	var ae *centralapi.Error
	if !errors.As(err, &ae) || ae.Code != centralapi.CodeFull || ae.Status != http.StatusServiceUnavailable {
		t.Fatalf("registering past %d connected users: %v, want 503 full", cfg.MaxUsers, err)
	}
}

// TestServerRegistrationsBounded: chat server registrations are rate
// limited per address, and past MaxServers a new id makes Central forget
// the server down longest, or is refused with full. (Before: a Central
// without a secret took any number of made-up servers from one address,
// announcing each to every client, which probed it.)
func TestServerRegistrationsBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxServers = 4
	cfg.OfflineAfter = 300 * time.Millisecond
	h := startCentral(t, cfg)
	reg := func(id string) error {
		_, err := h.api.Register(ctx(t), centralapi.RegisterServerRequest{ID: id, Addr: "127.0.0.1:1"})
		return err
	}
	if err := reg("old"); err != nil {
		t.Fatal(err)
	}
	// old never beats: it goes down.
	testkit.WaitFor(t, 10*time.Second, "old to go down", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		return h.c.srvByID["old"].rec.Down
	})
	var ae *centralapi.Error
	for i := range 3 {
		if err := reg(fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg("s3"); err != nil {
		t.Fatalf("a fifth server, one of four down: %v", err)
	}
	h.c.mu.Lock()
	_, kept := h.c.srvByID["old"]
	h.c.mu.Unlock()
	if kept {
		t.Fatal("the down server was kept past MaxServers")
	}
	// The live ones beat, so none is down now.
	for i := range 4 {
		id := fmt.Sprintf("s%d", i)
		h.c.mu.Lock()
		h.c.srvByID[id].rec.LastSeen = h.c.now().Add(time.Hour)
		h.c.mu.Unlock()
	}
	if err := reg("s4"); !errors.As(err, &ae) || ae.Code != centralapi.CodeFull {
		t.Fatalf("a fifth live server: %v, want 503 full", err)
	}
	// The rate: a burst of serverRegisterBurst from one address, then 429.
	cfg2 := testConfig(t)
	h2 := startCentral(t, cfg2)
	refused := 0
	for i := range serverRegisterBurst + 8 {
		_, err := h2.api.Register(ctx(t), centralapi.RegisterServerRequest{ID: fmt.Sprintf("x%d", i), Addr: "127.0.0.1:1"})
		if errors.As(err, &ae) && ae.Code == centralapi.CodeRateLimited {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused < 4 {
		t.Fatalf("%d of %d registrations from one address refused for the rate, want at least 4", refused, serverRegisterBurst+8)
	}
}

// TestUnjoinedRoomsBounded: rooms that nobody joins on their chat server
// (pairs of users forming rooms and never joining them filled every
// server's quota in 100 s, and no new chat could start) count toward a
// server's capacity only until its next heartbeat, and a user may be in
// at most maxUnjoined of them.
func TestUnjoinedRoomsBounded(t *testing.T) {
	cfg := testConfig(t)
	h := startCentral(t, cfg)
	e := wiretest.EchoServer(t, 0, nil)
	reg, err := h.api.Register(ctx(t), centralapi.RegisterServerRequest{ID: "serv1", Addr: e.Addr(), MaxRooms: 1})
	if err != nil {
		t.Fatal(err)
	}
	user := func(name string) *ctl {
		k, s := h.connect(t, name)
		h.latency(t, s, map[string]centralapi.Sample{"serv1": ms(10)})
		return k
	}
	a := user("a")
	chat(t, a, user("b0"))
	// serv1 (max 1 room) is full with a room nobody joined...
	c := user("c")
	c.send(&proto.Request{To: []string{"a"}})
	c.expectStatus(proto.AckConn)
	c.expectStatus(proto.ReqSent)
	in := expect[*proto.Incoming](a, skipAwaiting)
	a.send(&proto.Answer{Req: in.Req, Accept: true})
	if st := c.expectStatus(proto.ServerErr); !strings.Contains(st.Detail, "full") {
		t.Fatalf("a second room on a full server: %q", st.Detail)
	}
	a.expectStatus(proto.ServerErr)
	// ...until its heartbeat says it hosts none.
	if _, err := h.api.Heartbeat(ctx(t), "serv1", reg.Token, centralapi.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < maxUnjoined; i++ {
		chat(t, a, user(fmt.Sprintf("b%d", i)))
		if _, err := h.api.Heartbeat(ctx(t), "serv1", reg.Token, centralapi.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// a is in maxUnjoined rooms nobody joined: no more, either way.
	a.send(&proto.Request{To: []string{"c"}})
	a.expectStatus(proto.AckConn)
	if st := a.expectStatus(proto.ReqDeclined); !strings.Contains(st.Detail, "no member has joined") {
		t.Fatalf("a fifth room: %q", st.Detail)
	}
	c.send(&proto.Request{To: []string{"a"}})
	c.expectStatus(proto.AckConn)
	if st := c.expectStatus(proto.ReqDeclined); !strings.Contains(st.Detail, "no member has joined") {
		t.Fatalf("inviting a: %q", st.Detail)
	}
	// Leaving one makes room for another.
	var mine []string
	h.c.mu.Lock()
	for r := range h.c.users["a"].rooms {
		mine = append(mine, r.id)
	}
	h.c.mu.Unlock()
	a.send(&proto.LeaveRoom{Room: mine[0]})
	chat(t, a, c)
}

// floodUntil dials addr from 127.0.0.1, each connection sending first (if
// any) and nothing more, until full reports the cap filled; the
// connections close when the test ends.
func floodUntil(t *testing.T, addr string, first []byte, full func() bool) []net.Conn {
	t.Helper()
	var flood []net.Conn
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	testkit.WaitFor(t, 10*time.Second, "the flood to fill the cap", func() bool {
		if full() {
			return true
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			flood = append(flood, c)
			if first != nil {
				_, _ = c.Write(first)
			}
		}
		return false
	})
	return flood
}

// TestRESTHeldBodyDoesNotLockOutClients (abuse sweep 6, F1): a REST connection
// whose request declares a body it never sends is held as "serving a
// request" (connlimit.ServeNewcomers) for ReadTimeout (15 s), so it is
// never evicted; REST's share of the budget filled that way refuses every
// new connection, chat servers' heartbeats included. Here the share is 8
// (MaxConns 64), filled from 127.0.0.2; a client from 127.0.0.1 must still
// register.
func TestRESTHeldBodyDoesNotLockOutClients(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConns = 64 // REST's share: 8
	h := startCentral(t, cfg)
	rest := h.c.restLn.Addr().String()
	for range 12 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, err := d.Dial("tcp", rest)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n")
		// Paced, so that each header reaches its handler before the next
		// connection could evict it as a newcomer.
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 3 {
		api := centralapi.NewClient(h.c.RESTAddr(), nil)
		defer api.CloseIdleConnections()
		if _, err := api.RegisterClient(ctx(t), fmt.Sprintf("carol%d", i), ""); err != nil {
			t.Fatalf("registering while 12 connections from another address hold a declared body back: %v", err)
		}
	}
}

// TestHelloedFloodFromFewAddressesDoesNotLockOutClients (abuse sweep 6, F2): a
// Hello needs only a session token, and a token is a free registration
// (200/s and bursts of 2,000 per address). Connections that said Hello
// are never evicted, so a few addresses that register users and hold one
// control connection each fill the control port's share of the budget,
// and every client from any other address is refused for as long as they
// ping. Measured on the binaries (nofile 20,000, TLS): 5,104 connections
// from 3 addresses, 0 of 40 new clients admitted in 40 s. Here the
// share is 40 (MaxConns 64), filled from 127.0.0.2-4; a client from
// 127.0.0.1 must still get in (for example by evicting a connection of
// the address that holds the most, past a fair share).
func TestHelloedFloodFromFewAddressesDoesNotLockOutClients(t *testing.T) {
	srvTLS, cl := devTLS(t)
	for _, withTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "TLS"}[withTLS], func(t *testing.T) {
			cfg := testConfig(t)
			cfg.MaxConns = 64 // control's share: 64 - 8 - 16 = 40
			if withTLS {
				cfg.TLS = srvTLS // 3 descriptors a connection: 13 of them
			}
			h := startCentral(t, cfg)
			api := h.api
			if withTLS {
				api = centralapi.NewClientTLS(h.c.RESTAddr(), cl)
				defer api.CloseIdleConnections()
			}
			dialer := func(from byte) proto.Dialer {
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, from)}, Timeout: 5 * time.Second}
				if withTLS {
					return &tlsconfig.Dialer{Base: d, Config: cl}
				}
				return d
			}
			hello := func(name string, from byte) (*proto.Conn, error) {
				s, err := api.RegisterClient(ctx(t), name, "")
				if err != nil {
					t.Fatalf("register %s: %v", name, err)
				}
				c, _, err := proto.Dial(ctx(t), dialer(from), h.c.ControlAddr(), &proto.Hello{V: wire.Version, Agent: "test", Token: s.Token})
				return c, err
			}
			share := h.c.ctrlPort.Max()
			var sybils []*proto.Conn
			for i := 0; i < 2*share; i++ {
				c, err := hello(fmt.Sprintf("sybil%d", i), byte(2+i%3))
				if err != nil {
					continue // refused: the port is full
				}
				t.Cleanup(func() { c.Close() })
				sybils = append(sybils, c)
			}
			held := len(sybils)
			t.Logf("control port share %d descriptors: %d connections that said Hello from 3 addresses", share, held)
			evicted := h.c.lim.Evicted()
			for i := range 3 {
				c, err := hello(fmt.Sprintf("carol%d", i), 1)
				if err != nil {
					t.Fatalf("client %d from 127.0.0.1 while 3 other addresses hold %d connections that said Hello: %v", i, held, err)
				}
				c.Close()
			}
			// Each connection that gave way was told why, over TLS too
			// (before: closed under its TLS connection, an EOF).
			var told, bare atomic.Int64
			var wg sync.WaitGroup
			for _, c := range sybils {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.NetConn().SetReadDeadline(time.Now().Add(3 * time.Second))
					for {
						m, err := c.Recv()
						if e, ok := m.(*proto.Error); ok && e.Code == proto.CodeServerFull && strings.Contains(e.Reason, "holds more of its connections") {
							told.Add(1)
							return
						}
						if err != nil {
							if !errors.Is(err, os.ErrDeadlineExceeded) {
								bare.Add(1)
								t.Logf("a connection that gave way read no reason: %v", err)
							}
							return
						}
					}
				}()
			}
			wg.Wait()
			t.Logf("%d connections evicted; %d told why, %d closed without a word", h.c.lim.Evicted()-evicted, told.Load(), bare.Load())
			if told.Load() == 0 || bare.Load() > 0 {
				t.Fatalf("of the connections that gave way for a fair share %d were told why, %d closed without a word", told.Load(), bare.Load())
			}
		})
	}
}

// devTLS returns the server and client TLS configurations of a new
// development CA: a server certificate for loopback, no client ones.
func devTLS(t *testing.T) (srv, client *tls.Config) {
	t.Helper()
	f, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if srv, err = tlsconfig.Server(f.ServerCert, f.ServerKey, ""); err != nil {
		t.Fatal(err)
	}
	if client, err = tlsconfig.Client(f.CA, "", ""); err != nil {
		t.Fatal(err)
	}
	return srv, client
}

// TestTLSPortsTellTheWrongProtocol: over TLS, a plaintext Hello on
// Central's REST port and an HTTP request on its control port were
// closed without a word (black-box sweep, 2026-12-05), where the
// plaintext ports name the port to use. Each is now answered in the
// peer's own protocol; HTTPS still works on the REST port.
func TestTLSPortsTellTheWrongProtocol(t *testing.T) {
	srvTLS, cl := devTLS(t)
	cfg := testConfig(t)
	cfg.TLS = srvTLS
	h := startCentral(t, cfg)
	send := func(t *testing.T, addr string, b []byte) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	t.Run("frame on the REST port", func(t *testing.T) {
		hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version})
		got, _ := io.ReadAll(send(t, h.c.RESTAddr(), hello))
		typ, body, _, err := wire.ParseFrame(got, 0)
		var e proto.Error
		if err == nil && typ == proto.TError {
			err = wire.Unmarshal(body, &e)
		}
		if err != nil || !e.Fatal || e.Code != proto.CodeWrongPort || !strings.Contains(e.Reason, h.c.ControlAddr()) {
			t.Fatalf("a plaintext Hello on the TLS REST port got %q (%v), want a fatal wrong_port naming the control port %s", got, err, h.c.ControlAddr())
		}
	})
	t.Run("HTTP on the control port", func(t *testing.T) {
		c := send(t, h.c.ControlAddr(), []byte("GET /v1/servers HTTP/1.1\r\nHost: x\r\n\r\n"))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("HTTP on the TLS control port: %v, want a 400 response", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "TLS") {
			t.Fatalf("HTTP on the TLS control port got %d %q, want 400 saying the port speaks TLS", resp.StatusCode, body)
		}
	})
	api := centralapi.NewClientTLS(h.c.RESTAddr(), cl)
	defer api.CloseIdleConnections()
	if _, err := api.RegisterClient(ctx(t), "still-https", ""); err != nil {
		t.Fatalf("HTTPS after: %v", err)
	}
}
