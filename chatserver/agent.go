package chatserver

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"nearchat/pkg/atomicfile"
	"nearchat/pkg/centralapi"
)

// agent keeps the server registered with Central and heartbeating. Central
// being away never stops the chat: the agent retries with backoff, and after
// Central restarts (it answers unknown_server) it registers again and its
// next heartbeat reports every hosted room, so Central rebuilds its picture.
type agent struct {
	s   *Server
	api *centralapi.Client

	draining bool
	joined   bool // registered once since the server started
	pages    pager
	addrErr  string // Central's last word on the advertised address

	// The budget the heartbeat says is reached (Server.budgetReached),
	// and when it last was: said for budgetHold after, so that a backlog
	// hovering at the outbound budget does not have Central count the
	// server full and not full from one beat to the next.
	budget   string
	budgetAt time.Time
}

// budgetHold is how long a heartbeat still says a budget is reached after
// it last was.
const budgetHold = 10 * time.Second

// heartbeatPage bounds the rooms one heartbeat reports.
const heartbeatPage = centralapi.HeartbeatPage

// pager picks the rooms of each heartbeat: rooms that changed since they
// were last reported (new, moved, members came or went) first, then the
// others in turn, so every room is reported at least once every
// rooms/heartbeatPage beats and a change within a beat or two.
type pager struct {
	sent map[string]uint64 // room -> signature last reported
	next string            // rotation cursor: the page starts after this ID
}

func signature(r RoomInfo) uint64 {
	sig := r.Epoch*0x9e3779b97f4a7c15 + uint64(len(r.Members))
	for _, m := range r.Members {
		h := uint64(14695981039346656037) // FNV-1a, inline: no allocation
		for i := range len(m) {
			h = (h ^ uint64(m[i])) * 1099511628211
		}
		sig += h // a sum: member order does not matter
	}
	return sig
}

// page returns at most max reports out of rooms.
func (p *pager) page(rooms []RoomInfo, max int) []centralapi.RoomReport {
	if p.sent == nil {
		p.sent = map[string]uint64{}
	}
	slices.SortFunc(rooms, func(a, b RoomInfo) int { return strings.Compare(a.ID, b.ID) })
	out := make([]centralapi.RoomReport, 0, min(max, len(rooms)))
	take := func(r RoomInfo, sig uint64) {
		out = append(out, centralapi.RoomReport{ID: r.ID, Epoch: r.Epoch, Members: r.Members, Ticket: r.Proof})
		p.sent[r.ID] = sig
	}
	present := make(map[string]struct{}, len(rooms))
	var same []int
	for i, r := range rooms {
		present[r.ID] = struct{}{}
		sig := signature(r)
		if old, ok := p.sent[r.ID]; ok && old == sig {
			same = append(same, i)
		} else if len(out) < max {
			take(r, sig)
		}
	}
	for id := range p.sent {
		if _, ok := present[id]; !ok {
			delete(p.sent, id)
		}
	}
	start, _ := slices.BinarySearchFunc(same, p.next, func(i int, id string) int {
		if rooms[i].ID <= id {
			return -1
		}
		return 1
	})
	for k := 0; k < len(same) && len(out) < max; k++ {
		r := rooms[same[(start+k)%len(same)]]
		take(r, p.sent[r.ID])
		p.next = r.ID
	}
	return out
}

func (s *Server) startAgent() {
	if s.cfg.Central == "" {
		return
	}
	a := &agent{s: s, api: s.centralAPI()}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopAgent = cancel
	s.agentDone = make(chan struct{})
	go func() {
		defer close(s.agentDone)
		a.run(ctx)
	}()
}

func (a *agent) register(ctx context.Context) (time.Duration, error) {
	cfg := a.s.cfg
	tok := a.s.centralToken()
	if tok == "" && cfg.TokenFile != "" {
		var why string
		if tok, why = readTokenFile(cfg.TokenFile); why != "" {
			// Changed since Validate looked: neither sent nor replaced.
			a.s.log.Warn("not using the token file", "file", cfg.TokenFile, "err", why)
			cfg.TokenFile = ""
		}
	}
	resp, err := a.api.Register(ctx, centralapi.RegisterServerRequest{
		ID: cfg.ID, Addr: a.s.Advertised(), Secret: cfg.Secret,
		MaxRooms: cfg.MaxRooms, MaxConns: cfg.MaxConns, Token: tok,
	})
	if err != nil {
		return 0, err
	}
	a.s.token.Store(&resp.Token)
	if cfg.TokenFile != "" && resp.Token != tok {
		if err := atomicfile.Write(cfg.TokenFile, []byte(resp.Token+"\n"), 0o600); err != nil {
			a.s.log.Warn("keeping the server token", "file", cfg.TokenFile, "err", err)
		}
	}
	a.s.log.Info("registered with Central", "central", cfg.Central, "id", cfg.ID, "heartbeat", resp.HeartbeatInterval())
	a.pages = pager{} // a Central that restarted has seen none of our rooms
	if a.draining {
		// A Central that restarted while we drained must hear it again.
		_ = a.api.Drain(ctx, cfg.ID, a.s.centralToken())
	}
	return resp.HeartbeatInterval(), nil
}

// budgetSaid is what a heartbeat at now says of the budgets, reached
// naming the one reached now, if any: the last one reached, until
// budgetHold after it last was.
func (a *agent) budgetSaid(reached string, now time.Time) string {
	if reached != "" {
		a.budget, a.budgetAt = reached, now
	} else if now.Sub(a.budgetAt) >= budgetHold {
		a.budget = ""
	}
	return a.budget
}

func (a *agent) heartbeat(ctx context.Context) (centralapi.HeartbeatResponse, error) {
	st := a.s.Stats()
	rooms := a.s.Rooms()
	hb := centralapi.HeartbeatRequest{Conns: st.Conns, Total: len(rooms),
		Rooms: a.pages.page(rooms, heartbeatPage), Admits: a.s.port.Admits()}
	hb.Budget = a.budgetSaid(a.s.budgetReached(), time.Now())
	hb.RevokeLog, hb.RevokeSeq = a.s.revoked.cursor()
	resp, err := a.api.Heartbeat(ctx, a.s.cfg.ID, a.s.centralToken(), hb)
	if err == nil {
		a.s.applyRevocations(&resp)
	}
	return resp, err
}

func (a *agent) run(ctx context.Context) {
	interval := a.s.cfg.Heartbeat
	registered := false
	backoff := 100 * time.Millisecond
	for {
		var err error
		if !registered {
			var iv time.Duration
			iv, err = a.register(ctx)
			switch {
			case err == nil:
				registered, a.joined = true, true
				if iv > 0 && a.s.cfg.Heartbeat == 0 {
					interval = iv
				}
			case !a.joined && (centralapi.IsUnauthorized(err) || centralapi.IsBadRequest(err) || certRefused(err)):
				// A wrong secret or certificate, or an id or address
				// Central will never take: asking again changes nothing,
				// so the server stops with Central's reason (Run returns
				// it). Once registered, a refusal (Central's secret
				// changed under a running server) is retried instead:
				// the rooms keep running meanwhile.
				if certRefused(err) {
					err = fmt.Errorf("%w (Central refused this server's client certificate: check -client-cert/-client-key, its dates, and that Central's -tls-client-ca signed it)", err)
				}
				a.s.log.Error("Central refused the registration for good; stopping", "id", a.s.cfg.ID, "err", err)
				a.s.refused <- fmt.Errorf("chatserver: Central refused to register %q: %w", a.s.cfg.ID, err)
				return
			}
		}
		if registered {
			var resp centralapi.HeartbeatResponse
			resp, err = a.heartbeat(ctx)
			switch {
			case centralapi.IsUnknownServer(err), centralapi.IsUnauthorized(err):
				a.s.log.Info("Central does not know this server or its token (restarted?); registering again", "err", err)
				registered = false
				continue
			case err == nil:
				a.s.centralOK.Store(true)
				if resp.Draining && !a.draining {
					a.s.log.Info("Central says this server is draining")
				}
				a.noteAddrError(resp.AddrError)
			}
		}
		wait := interval
		if interval <= 0 {
			wait = 3 * time.Second
		}
		if err != nil {
			a.s.centralOK.Store(false)
			if ctx.Err() != nil {
				return
			}
			if hint := centralMisconfig(err); hint != "" {
				a.s.log.Error(hint, "err", err, "retry", backoff)
			} else if centralapi.IsServerTaken(err) {
				a.s.log.Warn("Central lists this id as a live server; registering again once it declares that instance down (keep -token-file to take it back at once)", "err", err, "retry", backoff)
			} else {
				a.s.log.Warn("Central unreachable; rooms keep running", "err", err, "retry", backoff)
			}
			wait = backoff + rand.N(backoff/2+1)
			backoff = min(backoff*2, max(interval, time.Second))
		} else {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-a.s.drainReq:
			a.draining = true
			if err := a.api.Drain(ctx, a.s.cfg.ID, a.s.centralToken()); err != nil && ctx.Err() == nil {
				a.s.log.Warn("telling Central about the drain", "err", err)
			}
		case <-time.After(wait):
		}
	}
}

// Drain asks Central to move every room away from this server, stops new
// rooms from being placed here, and waits until no room is left or ctx
// ends. Without a Central there is nobody to move the rooms, so Drain returns
// at once. Safe for concurrent use.
func (s *Server) Drain(ctx context.Context) error {
	if s.cfg.Central == "" {
		return errors.New("chatserver: no Central configured; nothing can take the rooms")
	}
	select {
	case s.drainReq <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for s.Stats().Rooms > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// deregister tells Central this server is gone for good; best effort.
func (s *Server) deregister() {
	if s.cfg.Central == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	api := s.centralAPI()
	if err := api.Deregister(ctx, s.cfg.ID, s.centralToken()); err != nil {
		s.log.Debug("deregistering from Central", "err", err)
	}
}

// centralToken is the server token from the last registration with
// Central, or "". Safe for concurrent use.
func (s *Server) centralToken() string {
	if t := s.token.Load(); t != nil {
		return *t
	}
	return ""
}

// CentralOK reports whether the last exchange with Central succeeded. Safe
// for concurrent use.
func (s *Server) CentralOK() bool { return s.centralOK.Load() }

// centralAPI returns a REST client for Central, over https when
// CentralTLS is set.
func (s *Server) centralAPI() *centralapi.Client {
	if s.cfg.CentralTLS == nil {
		return centralapi.NewClient(s.cfg.Central, nil)
	}
	return centralapi.NewClientTLS(s.cfg.Central, s.cfg.CentralTLS)
}

// certRefused reports whether err is Central refusing this server's client
// certificate (or its lack of one) in the TLS handshake: the alert it sent
// back names the certificate. In TLS 1.3 the client learns of it on its
// first read, as a "remote error"; it was taken for Central being
// unreachable, retried for ever (abuse sweep, 2026-12-03).
func certRefused(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	switch op.Err.Error() {
	case "tls: bad certificate", "tls: unsupported certificate", "tls: revoked certificate",
		"tls: expired certificate", "tls: unknown certificate", "tls: unknown certificate authority",
		"tls: access denied", "tls: certificate required":
		return true
	}
	return false
}

// centralMisconfig names a configuration mistake behind err, which retrying
// cannot fix, or returns "".
func centralMisconfig(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "HTTP request to an HTTPS server"):
		return "Central serves TLS: start the chat server with -ca FILE (the cluster's CA), and -client-cert/-client-key or -secret"
	case strings.Contains(msg, "HTTP response to HTTPS client"), strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "Central does not serve TLS: give -central as host:port or an http:// URL, without -ca"
	case strings.Contains(msg, "malformed HTTP"):
		// nearchat's framed protocol where HTTP was expected: Central's
		// control port (which answers HTTP with an Error frame) or a chat
		// server (usability review 7, M7: "Central unreachable" forever).
		return "the -central address answers, but not in HTTP: it must be Central's REST port (central -rest), not its control port or a chat server"
	}
	return ""
}

// readTokenFile reads the server token kept at path: "" when the file is
// not there yet (in a directory that is) or holds nothing. why says what
// else is wrong with it, and then it must be neither sent to Central nor
// replaced: a mistyped path (a key, a config file, /etc/passwd) was read
// whole, sent to Central as the token, and overwritten with the token
// Central issued (usability review 7, H1).
func readTokenFile(path string) (tok, why string) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if d, err := os.Stat(filepath.Dir(path)); err != nil || !d.IsDir() {
			return "", "its directory does not exist"
		}
		return "", ""
	}
	if err != nil {
		return "", err.Error()
	}
	if !fi.Mode().IsRegular() {
		return "", "not a regular file"
	}
	const most = 256 // a token and some white space
	if fi.Size() > most {
		return "", "it holds something other than a server token"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err.Error()
	}
	tok = strings.TrimSpace(string(b))
	if tok != "" && !isToken(tok) {
		return "", "it holds something other than a server token"
	}
	return tok, ""
}

// isToken reports whether s looks like a token Central issues: 64 hex
// digits.
func isToken(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// noteAddrError logs Central's verdict on the advertised address when it
// changes: an address Central cannot reach as this server is one clients
// are unlikely to reach either, and nothing else would tell the operator.
func (a *agent) noteAddrError(why string) {
	if why == a.addrErr {
		return
	}
	a.addrErr = why
	if why != "" {
		a.s.log.Warn("Central cannot reach this server at its advertised address; clients are unlikely to either: check -advertise (and the firewall)",
			"advertise", a.s.Advertised(), "err", why)
		return
	}
	a.s.log.Info("Central reaches this server at its advertised address now", "advertise", a.s.Advertised())
}
