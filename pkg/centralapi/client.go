package centralapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Client calls Central's REST API. It holds no per-user state: tokens and
// secrets are arguments. A Client is safe for concurrent use.
//
// Given several Central addresses (replicas: one leads and serves, the
// others bind no port until they lead), a Client sends each call to the
// address that last answered; when connecting there fails it tries the
// next ones at once, since a refused connection carried nothing. Any other
// failure is returned as before, and the next call starts at the next
// address.
type Client struct {
	bases []string
	cur   atomic.Uint32 // index into bases of the address that last answered
	hc    *http.Client
}

// NewClient returns a client for the Central at base, given as host:port or
// as an http(s):// URL, or for several Central replicas, comma-separated. A
// nil hc uses a client with a 10 s timeout and a connection pool of its
// own, whose connections close after idleConn: with http.DefaultTransport,
// every Client of a process would share two idle connections per Central,
// and a process of many users (a bot farm, the load generator) would open
// a new connection for nearly every request.
func NewClient(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = pooled(nil)
	}
	c := &Client{hc: hc}
	for _, b := range strings.Split(base, ",") {
		if !strings.Contains(b, "://") {
			b = "http://" + b
		}
		c.bases = append(c.bases, strings.TrimRight(b, "/"))
	}
	return c
}

// NewClientTLS returns a client that reaches Central over https, verifying
// it (and presenting a certificate) as tc says, with the same pool as
// NewClient's. A base without a scheme gets https://.
func NewClientTLS(base string, tc *tls.Config) *Client {
	bases := strings.Split(base, ",")
	for i, b := range bases {
		if !strings.Contains(b, "://") {
			bases[i] = "https://" + b
		}
	}
	return NewClient(strings.Join(bases, ","), pooled(tc))
}

// pooled returns an http.Client with a 10 s timeout and a connection pool
// of its own whose connections close after idleConn, verifying Central as
// tc says when tc is not nil.
func pooled(tc *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.IdleConnTimeout = idleConn
	if tc != nil {
		tr.TLSClientConfig = tc.Clone()
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// idleConn is how long a Client's REST connection stays open with no
// request: long enough for the requests that follow one another (a probe
// round's server list and latency report, a registration and its first
// report, a chat server's heartbeats every 3 s), short enough that the
// load generator's members, probing every 5 s or less often, hold none
// between rounds (6,000 users in one process would otherwise hold 6,000
// descriptors there, and as many in Central).
const idleConn = 4 * time.Second

// CloseIdleConnections closes the client's keep-alive connections that
// carry no request now. Safe for concurrent use.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// do sends in (if not nil) as JSON and decodes a 2xx answer into out (if not
// nil); any other answer becomes an *Error.
func (c *Client) do(ctx context.Context, method, path, bearer string, in, out any) error {
	return c.doLimited(ctx, method, path, bearer, in, out, maxAnswer)
}

// Answers are bounded: a Central, or whatever answers in its place, cannot
// make a client hold more than this, maxList for a server list (1,024
// servers are some 250 KB; one answer of 60 MB took a bot past 7 GB:
// abuse probe, 2026-12-03).
const (
	maxAnswer = 64 << 20
	maxList   = 8 << 20
)

func (c *Client) doLimited(ctx context.Context, method, path, bearer string, in, out any, limit int64) error {
	var payload []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("centralapi: encode %s %s: %w", method, path, err)
		}
		payload = b
	}
	first := int(c.cur.Load())
	var resp *http.Response
	var data []byte
	for i := range c.bases {
		at := (first + i) % len(c.bases)
		var body io.Reader
		if in != nil {
			body = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.bases[at]+path, body)
		if err != nil {
			return fmt.Errorf("centralapi: %s %s: %w", method, path, err)
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err = c.hc.Do(req)
		if err == nil {
			data, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("centralapi: %s %s: read answer: %w", method, path, err)
			}
			if !noLeader(resp, data) || i == len(c.bases)-1 || ctx.Err() != nil {
				c.cur.Store(uint32(at))
				break
			}
			// A replica that reaches no leader answers so: another one
			// may (it stayed on that replica for good, retrying there,
			// though the next one served: abuse sweep 7).
		} else if !refused(err) || i == len(c.bases)-1 || ctx.Err() != nil {
			c.cur.CompareAndSwap(uint32(first), uint32((at+1)%len(c.bases)))
			return fmt.Errorf("centralapi: %s %s: %w", method, path, err)
		}
		c.cur.CompareAndSwap(uint32(first), uint32((at+1)%len(c.bases)))
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("centralapi: %s %s: answer over %d bytes", method, path, limit)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Code == "" {
			e.Code, e.Message = CodeInternal, strings.TrimSpace(string(data))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("centralapi: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// noLeader reports whether resp (with its body data) says that no
// Central leads where the request went: 503 unavailable.
func noLeader(resp *http.Response, data []byte) bool {
	if resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	var e Error
	return json.Unmarshal(data, &e) == nil && e.Code == CodeUnavailable
}

// refused reports whether err is a failure to connect, so that the request
// reached no Central and may go to another.
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func esc(s string) string { return url.PathEscape(s) }

// Register registers (or re-registers) a chat server. Re-registering an
// existing ID updates its address and limits and marks it up and not
// draining.
func (c *Client) Register(ctx context.Context, r RegisterServerRequest) (RegisterServerResponse, error) {
	var out RegisterServerResponse
	err := c.do(ctx, http.MethodPost, "/v1/servers", "", r, &out)
	return out, err
}

// Heartbeat reports a server's load and rooms, with the token its
// registration returned. An error for which IsUnknownServer or
// IsUnauthorized is true means Central forgot the server or its token (it
// restarted, declared the server offline, or an operator deregistered it):
// call Register, then heartbeat again.
func (c *Client) Heartbeat(ctx context.Context, id, token string, hb HeartbeatRequest) (HeartbeatResponse, error) {
	var out HeartbeatResponse
	err := c.do(ctx, http.MethodPost, "/v1/servers/"+esc(id)+"/heartbeat", token, hb, &out)
	return out, err
}

// Drain marks a server as draining: its rooms move away now and no new room
// is placed on it. token is the server's, from Register.
func (c *Client) Drain(ctx context.Context, id, token string) error {
	return c.do(ctx, http.MethodPost, "/v1/servers/"+esc(id)+"/drain", token, nil, nil)
}

// Deregister removes a server; its rooms move away at once. token is the
// server's, from Register.
func (c *Client) Deregister(ctx context.Context, id, token string) error {
	return c.do(ctx, http.MethodDelete, "/v1/servers/"+esc(id), token, nil, nil)
}

// RegisterClient registers user name. With the token of an earlier session
// it gets the same identity back; without one, a name held by a live
// session fails with an error for which IsNameTaken is true.
func (c *Client) RegisterClient(ctx context.Context, name, token string) (Session, error) {
	var out Session
	err := c.do(ctx, http.MethodPost, "/v1/clients", "", RegisterClientRequest{Name: name, Token: token}, &out)
	return out, err
}

// LookupClient returns what Central knows about a user.
func (c *Client) LookupClient(ctx context.Context, name string) (ClientInfo, error) {
	var out ClientInfo
	err := c.do(ctx, http.MethodGet, "/v1/clients/"+esc(name), "", nil, &out)
	return out, err
}

// OnlineClients returns the names of the users online now.
func (c *Client) OnlineClients(ctx context.Context) (ClientList, error) {
	var out ClientList
	err := c.do(ctx, http.MethodGet, "/v1/clients", "", nil, &out)
	return out, err
}

// DeregisterClient ends the session of name, which must own token.
func (c *Client) DeregisterClient(ctx context.Context, name, token string) error {
	return c.do(ctx, http.MethodDelete, "/v1/clients/"+esc(name), token, nil, nil)
}

// PutLatency replaces the latency vector of name, which must own token.
// A nil servers is sent as an empty vector: Central refuses a body without
// its "servers" object.
func (c *Client) PutLatency(ctx context.Context, name, token string, servers map[string]Sample) error {
	if servers == nil {
		servers = map[string]Sample{}
	}
	return c.do(ctx, http.MethodPut, "/v1/clients/"+esc(name)+"/latency", token, LatencyVector{Servers: servers}, nil)
}

// Servers lists the live chat servers (up, draining included and flagged);
// these are the servers a client should measure.
func (c *Client) Servers(ctx context.Context) ([]ServerInfo, error) {
	var out ServerList
	err := c.doLimited(ctx, http.MethodGet, "/v1/servers", "", nil, &out, maxList)
	return out.Servers, err
}

// AllServers lists every registered server, down ones included.
func (c *Client) AllServers(ctx context.Context) ([]ServerInfo, error) {
	var out ServerList
	err := c.do(ctx, http.MethodGet, "/v1/servers?all=1", "", nil, &out)
	return out.Servers, err
}

// Rooms lists every room with its server, members and epoch, sorted by
// id, asking for one page after another.
//
// When Central has a cluster secret, the listing needs it (secret): it
// says who talks where.
func (c *Client) Rooms(ctx context.Context, secret string) ([]RoomInfo, error) {
	var all []RoomInfo
	after := ""
	for {
		var out RoomList
		path := "/v1/rooms"
		if after != "" {
			path += "?after=" + url.QueryEscape(after)
		}
		if err := c.do(ctx, http.MethodGet, path, secret, nil, &out); err != nil {
			return all, err
		}
		all = append(all, out.Rooms...)
		if !out.More || len(out.Rooms) == 0 {
			return all, nil
		}
		after = out.Rooms[len(out.Rooms)-1].ID
	}
}

// Health returns Central's health summary.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var out Health
	err := c.do(ctx, http.MethodGet, "/healthz", "", nil, &out)
	return out, err
}
