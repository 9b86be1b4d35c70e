package central

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"nearchat/central/store"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/selection"
	"nearchat/pkg/tlsconfig"
)

// Body caps by route: a body is read only after its sender is known where
// the route allows, and never past its cap.
const (
	// maxBody bounds a latency vector, the largest body but heartbeats.
	maxBody = 64 << 10
	// maxSmallBody bounds registrations.
	maxSmallBody = 4 << 10
	// maxHeartbeat bounds a heartbeat, which lists every room of a server.
	maxHeartbeat = 8 << 20
	// maxVector bounds the servers in one latency vector.
	maxVector = 1024
)

type apiError struct {
	status        int
	code, message string
	retryAfter    int // seconds, for a Retry-After header (429)
}

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// limited is a 429 for a limit of rate a second, with the Retry-After
// of a token's refill (black-box sweep, 2026-12-04: 429s without one, so
// a client or a proxy could only guess when to try again).
func limited(rate float64, format string, args ...any) *apiError {
	e := errf(http.StatusTooManyRequests, centralapi.CodeRateLimited, format, args...)
	e.retryAfter = 1
	if rate > 0 && rate < 1 {
		e.retryAfter = int(math.Ceil(1 / rate))
	}
	return e
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("X-Content-Type-Options")
	w.WriteHeader(status)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}

func writeErr(w http.ResponseWriter, e *apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	writeJSON(w, e.status, centralapi.Error{Code: e.code, Message: e.message})
}

// handler adapts a route that returns (status, body, error).
func handler(f func(r *http.Request) (int, any, *apiError)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status, body, e := f(r)
		if e != nil {
			writeErr(w, e)
			return
		}
		if body == nil {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, body)
	}
}

// decode reads one JSON value of at most limit bytes into v.
func decode(r *http.Request, limit int64, v any) *apiError {
	if r.ContentLength > limit {
		// Refused before any read, so a client that asked to be told
		// (Expect: 100-continue) is not invited to send it.
		return errf(http.StatusRequestEntityTooLarge, centralapi.CodeTooLarge, "request body of %d bytes exceeds %d", r.ContentLength, limit)
	}
	var seen bytes.Buffer // what the decoder read, for distinctKeys
	body := bufio.NewReader(io.TeeReader(http.MaxBytesReader(nil, r.Body, limit), &seen))
	// Every body is one JSON object with the fields of its request, as
	// every frame is one msgpack map of its message's: null, another
	// kind of value, or a field no request has is refused, where it was
	// taken as an empty request or ignored (black-box sweep, 2026-12-04).
	if first, err := firstByte(body); err == nil && first != '{' {
		return errf(http.StatusBadRequest, centralapi.CodeBadRequest, "the body must be a JSON object, not one beginning %q", first)
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// The body must end with the object: read on to its end, so
		// that one shorter than its Content-Length is not taken (the
		// object was whole, the rest never came) and trailing data is
		// seen.
		if _, err = dec.Token(); err == nil {
			return errf(http.StatusBadRequest, centralapi.CodeBadRequest, "trailing data after the JSON body")
		}
		if err == io.EOF {
			if err := distinctKeys(seen.Bytes(), reflect.TypeOf(v)); err != nil {
				return errf(http.StatusBadRequest, centralapi.CodeBadRequest, "%v", err)
			}
			return nil
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return errf(http.StatusRequestEntityTooLarge, centralapi.CodeTooLarge, "request body exceeds %d bytes", limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errf(http.StatusRequestTimeout, centralapi.CodeTimeout, "the request did not arrive whole within %v (Content-Length %d)", restReadTimeout, r.ContentLength)
	}
	return errf(http.StatusBadRequest, centralapi.CodeBadRequest, "malformed JSON body: %v", err)
}

// distinctKeys refuses a JSON body (one the decoder took into a value of
// type typ) in which an object names a key twice: encoding/json takes the
// last, so two readers of one request could disagree on what it asks
// ({"name": "alice", "name": "mallory"}). The keys of an object decoded
// into a struct are compared as encoding/json matches them to fields,
// without regard to case, at any depth (a latency sample's "median_us"
// and "MEDIAN_US" too: abuse probe, 2026-12-05); those of an object
// decoded into a map exactly, since they are names (a latency vector's
// server ids, where "S1" and "s1" are two servers).
func distinctKeys(body []byte, typ reflect.Type) error {
	type level struct {
		obj, key bool         // an object, and its next string is a key
		typ      reflect.Type // what the object or array decodes into; nil: unknown
		next     reflect.Type // in an object, what the value after its last key decodes into
		seen     map[string]struct{}
	}
	var stack []level
	value := func() { // a value ended: in an object, a key comes next
		if n := len(stack); n > 0 && stack[n-1].obj {
			stack[n-1].key = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // no float parsing: only the shape matters here
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF; anything else the decoder refused already
		}
		switch t := tok.(type) {
		case json.Delim:
			if t == '{' || t == '[' {
				vt := typ
				if n := len(stack); n > 0 {
					vt = stack[n-1].next
					if !stack[n-1].obj {
						vt = elem(stack[n-1].typ)
					}
				}
				for vt != nil && vt.Kind() == reflect.Pointer {
					vt = vt.Elem()
				}
				stack = append(stack, level{obj: t == '{', key: t == '{', typ: vt})
				continue
			}
			stack = stack[:len(stack)-1]
			value()
		case string:
			top := len(stack) - 1
			if top < 0 || !stack[top].obj || !stack[top].key {
				value()
				continue
			}
			k, lv := t, &stack[top]
			lv.next = nil
			switch {
			case lv.typ != nil && lv.typ.Kind() == reflect.Struct:
				k = strings.ToLower(strings.ToUpper(t)) // as encoding/json folds a field's name
				lv.next = fieldType(lv.typ, k)
			case lv.typ != nil && lv.typ.Kind() == reflect.Map:
				lv.next = lv.typ.Elem()
			}
			if lv.seen == nil {
				lv.seen = map[string]struct{}{}
			}
			if _, dup := lv.seen[k]; dup {
				return fmt.Errorf("key %.64q given twice in one JSON object", t)
			}
			lv.seen[k] = struct{}{}
			lv.key = false
		default:
			value()
		}
	}
}

// elem is what the elements of an array of type t decode into, nil when
// t is not a slice or an array.
func elem(t reflect.Type) reflect.Type {
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		return t.Elem()
	}
	return nil
}

// fieldType is the type of struct t's field whose JSON name folds to
// folded, nil when there is none.
func fieldType(t reflect.Type, folded string) reflect.Type {
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if strings.ToLower(strings.ToUpper(name)) == folded {
			return f.Type
		}
	}
	return nil
}

// firstByte returns the first byte of r past JSON's white space, left
// unread; an error when there is none (the decoder then says so).
func firstByte(r *bufio.Reader) (byte, error) {
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return b, r.UnreadByte()
		}
	}
}

// sourceIP is the address a request came from: the connection's peer,
// never a header.
func sourceIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func same(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// restHandler routes /v1/ and /healthz; anything the mux itself rejects
// (unknown path, wrong method) is answered in JSON too.
func (c *Central) restHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", handler(c.health))
	mux.Handle("POST /v1/clients", handler(c.registerClient))
	mux.Handle("GET /v1/clients", handler(c.onlineClients))
	mux.Handle("GET /v1/clients/{name}", handler(c.lookupClient))
	mux.Handle("DELETE /v1/clients/{name}", handler(c.deregisterClient))
	mux.Handle("PUT /v1/clients/{name}/latency", handler(c.putLatency))
	mux.Handle("POST /v1/servers", handler(c.registerServer))
	mux.Handle("GET /v1/servers", handler(c.listServers))
	mux.Handle("POST /v1/servers/{id}/heartbeat", handler(c.heartbeat))
	mux.Handle("POST /v1/servers/{id}/drain", handler(c.drain))
	mux.Handle("DELETE /v1/servers/{id}", handler(c.deregisterServer))
	mux.Handle("GET /v1/rooms", handler(c.listRooms))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if e := checkEnvelope(r); e != nil {
			if path.Clean(r.URL.Path) == r.URL.Path {
				// Counted under the route the request named
				// (observeREST), not as unmatched; the mux matched an
				// unclean path by its clean form, which it did not name.
				r.Pattern = pattern
			}
			writeErr(w, e)
			return
		}
		if pattern == "" {
			sw := &statusOnly{header: w.Header()}
			h.ServeHTTP(sw, r)
			switch sw.status {
			case http.StatusMethodNotAllowed:
				writeErr(w, errf(sw.status, centralapi.CodeMethodNotAllowed, "method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, w.Header().Get("Allow")))
			default:
				writeErr(w, errf(http.StatusNotFound, centralapi.CodeNotFound, "no route %s %.256s", r.Method, r.URL.Path))
			}
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// checkEnvelope refuses what no route takes, before the routes see it:
// HTTP/2's prior-knowledge preface, in plaintext or TLS (net/http hands it
// over as "PRI *", which the mux answered with a redirect), a target that
// is not a path, and a body declared as anything but JSON, which is what
// a browser's form or no-cors fetch sends from another site: no page can
// register users or servers through a visitor's browser (abuse probe,
// 2026-12-02). A body with no Content-Type is taken as JSON.
func checkEnvelope(r *http.Request) *apiError {
	if r.Method == "PRI" || r.ProtoMajor != 1 && r.TLS == nil {
		// Not "use HTTP/2 over TLS" as this said: the TLS port offers no
		// h2 by ALPN either (black-box sweep, 2026-12-04).
		return errf(http.StatusHTTPVersionNotSupported, centralapi.CodeBadVersion,
			"HTTP/2 is not served on this port: use HTTP/1.1")
	}
	if !strings.HasPrefix(r.URL.Path, "/") {
		return errf(http.StatusBadRequest, centralapi.CodeBadRequest, "request target %.64q is not a path", r.RequestURI)
	}
	// The mux would redirect "//" and ".." to the clean path; no client of
	// the API sends those, so it is told, in JSON like every refusal.
	if p := r.URL.Path; path.Clean(p) != p {
		return errf(http.StatusNotFound, centralapi.CodeNotFound, "no route %s %.256s (not a clean path: %.256s)", r.Method, p, path.Clean(p))
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && (r.ContentLength != 0 || r.Body != http.NoBody) {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errf(http.StatusUnsupportedMediaType, centralapi.CodeMediaType,
				"Content-Type %.64q: request bodies are JSON (application/json)", ct)
		}
	}
	return nil
}

// statusOnly records the status the mux's own error handlers write and
// throws their plain-text bodies away; headers (Allow, Location) pass through.
type statusOnly struct {
	header http.Header
	status int
}

func (s *statusOnly) Header() http.Header { return s.header }
func (s *statusOnly) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusOnly) Write(p []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(p), nil
}

func (c *Central) health(*http.Request) (int, any, *apiError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := centralapi.Health{Status: "ok", Online: c.online, Rooms: len(c.rooms), REST: c.RESTAddr()}
	if _, port, err := net.SplitHostPort(c.ctrlAddr); err == nil {
		h.ControlPort, _ = strconv.Atoi(port)
	}
	for _, u := range c.users {
		if !u.placeholder() {
			h.Clients++
		}
	}
	for _, s := range c.servers {
		if !s.gone {
			h.Servers++
			if !s.rec.Down {
				h.Up++
			}
		}
	}
	return http.StatusOK, h, nil
}

func validToken(t string) bool {
	b, err := hex.DecodeString(t)
	return err == nil && len(b) == 32
}

func (c *Central) registerClient(r *http.Request) (int, any, *apiError) {
	var in centralapi.RegisterClientRequest
	if e := decode(r, maxSmallBody, &in); e != nil {
		return 0, nil, e
	}
	if err := proto.CheckUser(in.Name); err != nil {
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "%v", err)
	}
	if in.Token != "" && !validToken(in.Token) {
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "a token is 64 hex digits, as Central issued it")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.regLimit.allow(sourceIP(r), now, c.cfg.RegisterRate, c.cfg.RegisterBurst) {
		return 0, nil, limited(c.cfg.RegisterRate,
			"too many registrations from your address: Central takes at most %g a second from one address; try again shortly", c.cfg.RegisterRate)
	}
	u := c.users[in.Name]
	if u == nil {
		// Names differing only in case are one name: "ALICE" beside
		// "alice" would only confuse their peers.
		if other := c.folded[strings.ToLower(in.Name)]; other != nil {
			return 0, nil, errf(http.StatusConflict, centralapi.CodeNameTaken,
				"user name %q is taken as %q (names that differ only in case are one name); pick another name", in.Name, other.name)
		}
	}
	if u != nil && !u.placeholder() {
		if in.Token != "" && same(in.Token, u.token) {
			return http.StatusOK, centralapi.Session{Name: u.name, Token: u.token}, nil
		}
		if u.sess != nil {
			return 0, nil, errf(http.StatusConflict, centralapi.CodeNameTaken,
				"user name %q is in use by a live session; pick another name, or register with that session's token", in.Name)
		}
		if left := c.cfg.SessionGrace - now.Sub(u.offlineSince); left > 0 {
			return 0, nil, errf(http.StatusConflict, centralapi.CodeNameTaken,
				"user name %q is reserved for %d s for the session that held it, which ended without deregistering; register with that session's token to take it back",
				in.Name, int(left.Seconds()+0.999))
		}
		c.log.Info("expired session's name taken over", "user", u.name)
		c.dropUserLocked(u, "lost its name after the session expired")
		u = nil
	}
	if u != nil && c.checkTok && !c.tokenFor(in.Name, in.Token) {
		// A placeholder stands for a member of a live room that Central
		// learnt of from a report; only that member's token claims it.
		return 0, nil, errf(http.StatusConflict, centralapi.CodeNameTaken,
			"user name %q belongs to a member of a live room; register with that member's token", in.Name)
	}
	token := in.Token
	if token != "" {
		if other := c.tokens[token]; other != nil {
			return 0, nil, errf(http.StatusUnauthorized, centralapi.CodeUnauthorized, "this token belongs to another user")
		}
	} else {
		token = c.newToken(in.Name)
	}
	if u == nil {
		if c.cfg.MaxUsers > 0 && len(c.users) >= c.cfg.MaxUsers && !c.makeRoomForUsersLocked(now) {
			return 0, nil, errf(http.StatusServiceUnavailable, centralapi.CodeFull,
				"Central holds its maximum of %d users, every one of them connected, in a room or awaited by a request; try again later", c.cfg.MaxUsers)
		}
		u = c.newUserLocked(in.Name, token, now)
	} else {
		// A placeholder from a heartbeat: the member of a live room is back.
		u.token, u.reg, u.offlineSince = token, now, now
		c.tokens[token] = u
	}
	u.src = sourceKey(sourceIP(r))
	c.storeErr("put user", c.st.PutUser(u.record()))
	if ok, hushed := c.regLog.allow(now); ok {
		c.log.Info("client registered", c.regLog.attrs(hushed, "user", u.name)...)
	}
	return http.StatusCreated, centralapi.Session{Name: u.name, Token: u.token}, nil
}

// authUserLocked finds the user named in the path and checks the bearer
// token against it.
func (c *Central) authUserLocked(r *http.Request) (*user, *apiError) {
	name := r.PathValue("name")
	u := c.users[name]
	if u == nil || u.placeholder() {
		return nil, errf(http.StatusNotFound, centralapi.CodeUnknownClient, "no registered client %.64q", name) // a name past 64 characters is cut, never echoed whole
	}
	if t := bearer(r); t == "" || !same(t, u.token) {
		return nil, errf(http.StatusUnauthorized, centralapi.CodeUnauthorized, "missing or wrong session token for %.64q (Authorization: Bearer <token>)", name)
	}
	return u, nil
}

func (c *Central) lookupClient(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("name")
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.users[name]
	if u == nil || u.placeholder() {
		return 0, nil, errf(http.StatusNotFound, centralapi.CodeUnknownClient, "no registered client %.64q", name) // a name past 64 characters is cut, never echoed whole
	}
	info := centralapi.ClientInfo{Name: u.name, Online: u.sess != nil, Rooms: []string{}}
	for r := range u.rooms {
		info.Rooms = append(info.Rooms, r.id)
	}
	slices.Sort(info.Rooms)
	return http.StatusOK, info, nil
}

// maxListed bounds GET /v1/clients: a directory for people picking a peer,
// not a dump of a large deployment.
const maxListed = 500

func (c *Central) onlineClients(r *http.Request) (int, any, *apiError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.listAllowedLocked(r); e != nil {
		return 0, nil, e
	}
	names := smallest(maxListed+1, func(yield func(string)) {
		for _, u := range c.users {
			if u.sess != nil && !u.placeholder() {
				yield(u.name)
			}
		}
	}, strings.Compare)
	out := centralapi.ClientList{Clients: names}
	if len(names) > maxListed {
		out.Clients, out.More = names[:maxListed], true
	}
	return http.StatusOK, out, nil
}

// Listings walk every user or room under Central's lock: a flood of them
// held it so long that control connections timed out (abuse sweep,
// 2026-12-03: 57 ms a room listing at 100,000 rooms, which sorted them
// all; 167 ms control round trips under a flood of GET /v1/clients at
// 61,000 users). Both pick their page without sorting everything; the
// user listing, which needs no credential in any mode, is also limited
// per address and in all.
const (
	listRate, listBurst       = 5, 20  // per address
	listAllRate, listAllBurst = 40, 80 // all addresses together
)

// listAllowedLocked takes a user listing's tokens, or says why not.
func (c *Central) listAllowedLocked(r *http.Request) *apiError {
	now := c.now()
	if !c.listLimit.allow(sourceIP(r), now, listRate, listBurst) || !c.listAll.allow(now, listAllRate, listAllBurst) {
		return limited(listRate, "too many listings: Central answers %d a second from one address and %d in all; try again shortly", listRate, listAllRate)
	}
	return nil
}

// smallest returns, sorted, the n smallest of the values seq yields, in
// O(len * log n) with a bounded max-heap instead of sorting them all.
func smallest[T any](n int, seq func(func(T)), cmp func(a, b T) int) []T {
	h := make([]T, 0, n)
	down := func(i int) {
		for {
			l, big := 2*i+1, i
			if l < len(h) && cmp(h[l], h[big]) > 0 {
				big = l
			}
			if l+1 < len(h) && cmp(h[l+1], h[big]) > 0 {
				big = l + 1
			}
			if big == i {
				return
			}
			h[i], h[big] = h[big], h[i]
			i = big
		}
	}
	seq(func(v T) {
		if len(h) < n {
			h = append(h, v)
			for i := len(h) - 1; i > 0 && cmp(h[(i-1)/2], h[i]) < 0; i = (i - 1) / 2 {
				h[i], h[(i-1)/2] = h[(i-1)/2], h[i]
			}
			return
		}
		if n > 0 && cmp(v, h[0]) < 0 {
			h[0] = v
			down(0)
		}
	})
	slices.SortFunc(h, cmp)
	return h
}

// deregisterClient drops the user, and answers once the store has it
// (a Store that writes behind, etcd: rel7 sweep, 2026-12-03, R7-2): a
// deregistration answered and then lost with the leader's step-down left
// the user in its rooms for good. A refusal waits for the store too, so
// that the 401 or 404 a retry gets says the earlier deregistration, if
// any, is stored. A Flush that fails is answered 503: send it again.
func (c *Central) deregisterClient(r *http.Request) (int, any, *apiError) {
	c.mu.Lock()
	u, e := c.authUserLocked(r)
	if e == nil {
		c.log.Info("client deregistered", "user", u.name)
		c.dropUserLocked(u, "deregistered")
	}
	c.mu.Unlock()
	if c.flush != nil {
		ctx, cancel := context.WithTimeout(r.Context(), flushWait)
		err := c.flush.Flush(ctx)
		cancel()
		if err != nil {
			c.log.Warn("deregistration not stored yet", "user", r.PathValue("name"), "err", err)
			return 0, nil, errf(http.StatusServiceUnavailable, centralapi.CodeUnavailable, "the deregistration is not stored yet (%v): send it again", err)
		}
	}
	if e != nil {
		return 0, nil, e
	}
	return http.StatusNoContent, nil, nil
}

// maxSampleUS bounds a reported round trip: an hour, far past any a probe
// waits for.
const maxSampleUS = int64(time.Hour / time.Microsecond)

func (c *Central) putLatency(r *http.Request) (int, any, *apiError) {
	var in centralapi.LatencyVector
	if e := decode(r, maxBody, &in); e != nil {
		return 0, nil, e
	}
	if in.Servers == nil {
		// {} or {"servers":null} replaced the vector with an empty one:
		// a client that measured nothing sends {"servers":{}} (abuse
		// sweep nit, 2026-12-05).
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, `the body has no "servers" object: send {"servers":{}} for a vector with no server in it`)
	}
	lat, err := checkLatency(in.Servers)
	if err != nil {
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "%v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	u, e := c.authUserLocked(r)
	if e != nil {
		return 0, nil, e
	}
	if !c.latencyLocked(u, lat) {
		return 0, nil, limited(latencyRate, "%s", latencyLimited)
	}
	return http.StatusNoContent, nil, nil
}

// latencyLimited says why a latency report over the rate was refused.
var latencyLimited = fmt.Sprintf("more than %d latency reports a second (bursts of %d)", latencyRate, latencyBurst)

// checkLatency checks a reported vector, however it came (REST or a
// control frame), and converts it: at most maxVector servers, valid ids,
// no negative figure and none past an hour.
func checkLatency(in map[string]centralapi.Sample) (map[string]selection.Sample, error) {
	if len(in) > maxVector {
		return nil, fmt.Errorf("%d servers in the vector, limit %d", len(in), maxVector)
	}
	lat := make(map[string]selection.Sample, len(in))
	for id, s := range in {
		if err := proto.CheckServer(id); err != nil {
			return nil, fmt.Errorf("server id: %v", err)
		}
		if s.MedianUS < 0 || s.SpreadUS < 0 || s.Count < 0 {
			return nil, fmt.Errorf("server %s: negative median, spread or count", id)
		}
		if s.MedianUS > maxSampleUS || s.SpreadUS > maxSampleUS {
			// Also keeps the conversion to a Duration from overflowing.
			return nil, fmt.Errorf("server %s: median or spread over %d µs (an hour)", id, int64(maxSampleUS))
		}
		lat[id] = selection.Sample{Median: s.Median(), Spread: s.Spread(), Count: s.Count}
	}
	return lat, nil
}

// latencyLocked takes lat, checked, as u's vector; false when u is over
// its rate of reports (nothing is taken then).
func (c *Central) latencyLocked(u *user, lat map[string]selection.Sample) bool {
	if !u.latLimit.allow(c.now(), latencyRate, latencyBurst) {
		return false
	}
	// Only servers Central knows are kept: a vector of made-up ids cost
	// Central and its store up to 1,024 entries per user (abuse probe,
	// 2026-12-01: 2,000 such users, 550 MB). A server that registers later
	// is measured again in the member's next round.
	for id := range lat {
		if s := c.srvByID[id]; s == nil || s.gone {
			delete(lat, id)
		}
	}
	if u.latGen > c.srvGen && maps.Equal(lat, u.lat) {
		// Nothing new: no store write, no re-evaluation. A vector the
		// same as one from before a server registered is news, though:
		// it says the member does not measure that server (vectorsBehind),
		// and so does the same vector from a round that ended past
		// vectorsBehind's window after the server registered: the scan
		// takes it from there.
		u.latAt = c.now()
		return true
	}
	c.setLatencyLocked(u, lat)
	return true
}

// clusterOK checks that r comes from a member of the cluster: a verified
// client certificate from the cluster CA, or the cluster secret as a bearer
// token or, for registration only, in the (small, capped) body. A Central
// with neither a secret nor a client CA (serverAuthOn) lets anyone in, and
// says so at start. One with a client CA and no secret takes only the
// certificate: it let anyone in too, so that any peer that could reach its
// REST port could register a chat server and have every client probe it
// (abuse probe, 2026-12-02).
func (c *Central) clusterOK(r *http.Request, body string) *apiError {
	if !c.serverAuthOn() {
		return nil
	}
	if _, cert, e := certIDs(r); cert {
		// A client certificate from the cluster CA stands for the
		// secret, unless the server id it was meant to name is unreadable.
		return e
	}
	if c.cfg.ClusterSecret == "" {
		return errf(http.StatusUnauthorized, centralapi.CodeUnauthorized, "this Central admits cluster members by client certificate: present one from the cluster CA (a chat server's -client-cert and -client-key)")
	}
	got := bearer(r)
	if got == "" {
		got = body
	}
	src := sourceIP(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.secretFails.has(src, now, secretFailRate) {
		return limited(secretFailRate, "too many wrong cluster secrets from your address: Central takes %d, then one every %v; check -secret (or NEARCHAT_SECRET)", secretFailBurst, time.Duration(float64(time.Second)/secretFailRate))
	}
	if !same(got, c.cfg.ClusterSecret) {
		c.secretFails.allow(src, now, secretFailRate, secretFailBurst)
		if !c.secretFails.has(src, now, secretFailRate) {
			// Once per spent allowance, not once per try.
			c.log.Warn("wrong cluster secrets from one address: its tries are limited now", "source", src, "tries", secretFailBurst)
		}
		return errf(http.StatusUnauthorized, centralapi.CodeUnauthorized, "missing or wrong cluster secret")
	}
	return nil
}

// secretFailRate and secretFailBurst bound the wrong cluster secrets one
// address may try: 1,000 tries took 0.22 s on one connection, none of
// them logged (black-box sweep, 2026-12-04). A right one past the
// allowance waits too, so the bound holds for a guesser that hits.
const (
	secretFailRate  = 0.2
	secretFailBurst = 10
)

// certFor refuses r when it carries a verified client certificate that
// names chat server ids (tlsconfig.ServerIDURI) other than id: such a
// certificate speaks for its own server alone. A certificate naming no id
// stands for the cluster, as the secret does.
func certFor(r *http.Request, id string) *apiError {
	ids, _, e := certIDs(r)
	if e != nil || len(ids) == 0 || slices.Contains(ids, id) {
		return e
	}
	return errf(http.StatusUnauthorized, centralapi.CodeUnauthorized, "this client certificate is for chat server %s, not %q", strings.Join(ids, ", "), id)
}

// certIDs returns the chat server ids named by r's verified client
// certificate, and whether r has one. A certificate whose server id URI
// is unreadable was meant for some server, but which is unknown: it speaks
// for none (an error).
func certIDs(r *http.Request) (ids []string, cert bool, e *apiError) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, false, nil
	}
	ids, err := tlsconfig.ServerIDs(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return nil, true, errf(http.StatusUnauthorized, centralapi.CodeUnauthorized, "this client certificate speaks for no chat server: %v", err)
	}
	return ids, true, nil
}

// serverAuthOn reports whether chat servers must prove who they are: a
// cluster secret or a TLS client CA is configured. Without either, Central
// runs open (for the demo and tests) and says so at start.
func (c *Central) serverAuthOn() bool {
	return c.cfg.ClusterSecret != "" || (c.cfg.TLS != nil && c.cfg.TLS.ClientCAs != nil)
}

// authServer finds the server named in the path and checks, before any
// body is read, that r carries the token Central issued to that server at
// registration: a server speaks for itself only.
func (c *Central) authServer(r *http.Request) (*serverRec, *apiError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, e := c.serverLocked(r)
	if e != nil {
		return nil, e
	}
	if e := certFor(r, s.rec.ID); e != nil {
		return nil, e
	}
	if c.serverAuthOn() && (s.token == "" || !same(bearer(r), s.token)) {
		return nil, errf(http.StatusUnauthorized, centralapi.CodeUnauthorized,
			"missing or wrong server token for %q (Authorization: Bearer <token from registration>); register again", s.rec.ID)
	}
	return s, nil
}

func (c *Central) serverLocked(r *http.Request) (*serverRec, *apiError) {
	id := r.PathValue("id")
	s := c.srvByID[id]
	if s == nil {
		return nil, errf(http.StatusNotFound, centralapi.CodeUnknownServer, "no registered server %q: register first", id)
	}
	return s, nil
}

func (c *Central) registerServer(r *http.Request) (int, any, *apiError) {
	if bearer(r) != "" {
		if e := c.clusterOK(r, ""); e != nil {
			return 0, nil, e
		}
	}
	var in centralapi.RegisterServerRequest
	if e := decode(r, maxSmallBody, &in); e != nil {
		return 0, nil, e
	}
	if e := c.clusterOK(r, in.Secret); e != nil {
		return 0, nil, e
	}
	if e := certFor(r, in.ID); e != nil {
		return 0, nil, e
	}
	if err := proto.CheckServer(in.ID); err != nil {
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "server id: %v", err)
	}
	if len(in.Addr) > proto.MaxAddr {
		// Every client is told the address, in each announcement and list.
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "addr of %d bytes: a host:port is at most %d", len(in.Addr), proto.MaxAddr)
	}
	host, port, err := net.SplitHostPort(in.Addr)
	if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p <= 0 || p > 65535 {
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "addr %q is not host:port", in.Addr)
	}
	if in.MaxRooms < 0 || in.MaxConns < 0 {
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "negative limits")
	}
	c.mu.Lock()
	now := c.now()
	// Per address, as client registrations are: where Central runs open
	// (no secret, no client CA) anyone may register servers, and each
	// one is announced to every client, which probes it.
	if !c.srvLimit.allow(sourceIP(r), now, serverRegisterRate, serverRegisterBurst) {
		c.mu.Unlock()
		return 0, nil, limited(serverRegisterRate,
			"too many chat server registrations from your address: Central takes %d at once and %g a second after that from one address; try again shortly", serverRegisterBurst, serverRegisterRate)
	}
	s := c.srvByID[in.ID]
	// A live server's id is its own: another holder of the cluster secret
	// may not take it over, re-address it or reset its token, not even at
	// its own address. The server itself, restarted, takes it back with
	// its token (chatserver -token-file), or without once it has been
	// declared down.
	if s != nil && c.serverAuthOn() && s.token != "" && !s.rec.Down && !same(in.Token, s.token) {
		c.mu.Unlock()
		return 0, nil, errf(http.StatusConflict, centralapi.CodeServerTaken,
			"server id %q is registered by a live server at %s; pick another id, present its token, or wait until it is declared down (%v without a heartbeat)",
			in.ID, s.rec.Addr, c.cfg.OfflineAfter)
	}
	if s == nil {
		// Ids differing only in case are one id, as user names are:
		// "SERV1" beside a live "serv1" would only confuse operators.
		for id, o := range c.srvByID {
			if strings.EqualFold(id, in.ID) && !o.rec.Down {
				c.mu.Unlock()
				return 0, nil, errf(http.StatusConflict, centralapi.CodeServerTaken,
					"server id %q is taken as %q by a live server (ids that differ only in case are one id); pick another id", in.ID, id)
			}
		}
	}
	if s == nil && c.cfg.MaxServers > 0 && len(c.srvByID) >= c.cfg.MaxServers && !c.forgetDownServerLocked() {
		c.mu.Unlock()
		return 0, nil, errf(http.StatusServiceUnavailable, centralapi.CodeFull,
			"Central holds its maximum of %d chat servers, none of them down; deregister one first", c.cfg.MaxServers)
	}
	rec := store.Server{ID: in.ID, Addr: in.Addr, MaxRooms: in.MaxRooms, MaxConns: in.MaxConns, Registered: now, LastSeen: now}
	if s == nil {
		s = c.addServerLocked(rec)
	} else {
		rec.Conns, rec.Rooms = s.rec.Conns, s.rec.Rooms
		s.rec = rec
		s.budget = "" // a new process, most likely: its heartbeats say
	}
	if s.token == "" || !same(in.Token, s.token) {
		s.token = randomID("", 32)
	}
	s.rec.Token = s.token
	token := s.token
	s.lapsed, s.byLease = false, false
	c.heardLocked(s, true)
	c.syncSelLocked()
	c.announceLocked(s, proto.ServerUp)
	c.verifyAddrLocked(s)
	c.mu.Unlock()
	c.log.Info("chat server registered", "server", in.ID, "addr", in.Addr)
	c.kickScan()
	return http.StatusOK, centralapi.RegisterServerResponse{
		ID: in.ID, Token: token, HeartbeatIntervalMS: c.cfg.HeartbeatInterval.Milliseconds(), OfflineAfterMS: c.cfg.OfflineAfter.Milliseconds(),
	}, nil
}

func (c *Central) heartbeat(r *http.Request) (int, any, *apiError) {
	// Authenticate before reading a body of up to maxHeartbeat.
	s, e := c.authServer(r)
	if e != nil {
		return 0, nil, e
	}
	var in centralapi.HeartbeatRequest
	if e := decode(r, maxHeartbeat, &in); e != nil {
		return 0, nil, e
	}
	if in.Conns < 0 || in.Total < 0 {
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "negative conns or total")
	}
	c.mu.Lock()
	if c.srvByID[s.rec.ID] != s {
		c.mu.Unlock()
		return 0, nil, errf(http.StatusNotFound, centralapi.CodeUnknownServer, "server %q was deregistered meanwhile: register again", s.rec.ID)
	}
	now := c.now()
	revived := s.rec.Down
	s.rec.Down, s.lapsed, s.byLease = false, false, false
	s.rec.LastSeen = now
	s.rec.Conns, s.rec.Rooms = in.Conns, max(in.Total, len(in.Rooms))
	s.admits = in.Admits
	budget := in.Budget
	if len(budget) > maxBudgetText {
		budget = strings.ToValidUTF8(budget[:maxBudgetText], "")
	}
	if budget != s.budget {
		if budget != "" {
			c.log.Warn("chat server refuses new rooms: counted full", "server", s.rec.ID, "why", budget)
		} else {
			c.log.Info("chat server takes new rooms again", "server", s.rec.ID)
		}
		s.budget = budget
	}
	s.fresh = 0
	c.adoptLocked(s, in.Rooms, now)
	c.heardLocked(s, revived)
	c.syncSelLocked()
	if revived {
		c.announceLocked(s, proto.ServerUp)
	}
	if s.addrErr != "" && time.Since(s.verifiedAt) >= verifyRetry {
		c.verifyAddrLocked(s)
	}
	out := centralapi.HeartbeatResponse{HeartbeatIntervalMS: c.cfg.HeartbeatInterval.Milliseconds(), Draining: s.rec.Draining, AddrError: s.addrErr}
	c.revocationsLocked(&out, in.RevokeLog, in.RevokeSeq, now)
	c.mu.Unlock()
	if revived {
		c.log.Info("chat server back up", "server", s.rec.ID)
		c.kickScan()
	}
	return http.StatusOK, out, nil
}

// heardLocked records a registration or heartbeat of s in the store: the
// record when changed says so, or always without a store that keeps
// liveness. With one (etcd) a heartbeat costs a lease refresh there, not
// a write: the record's load figures and LastSeen are the leader's alone,
// and a new leader has them from the next heartbeat and the lease.
func (c *Central) heardLocked(s *serverRec, changed bool) {
	if c.live == nil || changed {
		c.storeErr("put server", c.st.PutServer(s.rec))
	}
	if c.live != nil {
		c.live.Heard(s.rec.ID, c.cfg.OfflineAfter)
	}
}

func (c *Central) drain(r *http.Request) (int, any, *apiError) {
	s, e := c.authServer(r)
	if e != nil {
		return 0, nil, e
	}
	c.mu.Lock()
	if c.srvByID[s.rec.ID] != s {
		c.mu.Unlock()
		return 0, nil, errf(http.StatusNotFound, centralapi.CodeUnknownServer, "server %q was deregistered meanwhile", s.rec.ID)
	}
	s.rec.Draining = true
	c.storeErr("put server", c.st.PutServer(s.rec))
	c.syncSelLocked()
	c.announceLocked(s, proto.ServerDraining)
	n := s.assigned
	c.mu.Unlock()
	c.log.Info("chat server draining", "server", s.rec.ID, "rooms", n)
	c.kickScan()
	return http.StatusNoContent, nil, nil
}

func (c *Central) deregisterServer(r *http.Request) (int, any, *apiError) {
	s, e := c.authServer(r)
	if e != nil {
		return 0, nil, e
	}
	c.mu.Lock()
	if c.srvByID[s.rec.ID] != s {
		c.mu.Unlock()
		return 0, nil, errf(http.StatusNotFound, centralapi.CodeUnknownServer, "server %q was deregistered meanwhile", s.rec.ID)
	}
	c.dropServerLocked(s)
	c.mu.Unlock()
	c.log.Info("chat server deregistered", "server", s.rec.ID)
	c.kickScan()
	return http.StatusNoContent, nil, nil
}

// dropServerLocked forgets s, as its deregistration does; its rooms move
// at the next scan.
func (c *Central) dropServerLocked(s *serverRec) {
	s.gone = true
	c.announceLocked(s, proto.ServerDown)
	delete(c.srvByID, s.rec.ID)
	c.storeErr("delete server", c.st.DeleteServer(s.rec.ID))
	if c.live != nil {
		c.live.Forget(s.rec.ID)
	}
	c.compactLocked()
	c.syncSelLocked()
}

// forgetDownServerLocked makes room for a server past MaxServers by
// forgetting the one down longest (a down server comes back only by
// registering again), and reports false when none is down.
func (c *Central) forgetDownServerLocked() bool {
	var old *serverRec
	for _, s := range c.srvByID {
		if s.rec.Down && (old == nil || s.rec.LastSeen.Before(old.rec.LastSeen)) {
			old = s
		}
	}
	if old == nil {
		return false
	}
	c.log.Warn("chat server forgotten: Central holds its maximum of servers", "server", old.rec.ID, "down_since", old.rec.LastSeen, "max", c.cfg.MaxServers)
	c.dropServerLocked(old)
	return true
}

// Server registrations one source address may make: a burst enough for a
// host of chat servers registering at once (after a Central restart),
// then a few a second.
const (
	serverRegisterRate  = 2.0
	serverRegisterBurst = 64
)

func (c *Central) listServers(r *http.Request) (int, any, *apiError) {
	all := r.URL.Query().Get("all")
	withDown := all != "" && all != "0" && all != "false"
	c.mu.Lock()
	defer c.mu.Unlock()
	out := centralapi.ServerList{Servers: []centralapi.ServerInfo{}}
	for _, s := range c.servers {
		if s.gone || (s.rec.Down && !withDown) {
			continue
		}
		out.Servers = append(out.Servers, centralapi.ServerInfo{
			ID: s.rec.ID, Addr: s.rec.Addr, Up: !s.rec.Down, Draining: s.rec.Draining, Full: s.full(),
			Conns: s.rec.Conns, Rooms: s.assigned, MaxRooms: s.rec.MaxRooms, MaxConns: s.rec.MaxConns, LastSeen: s.rec.LastSeen,
			AddrError: s.addrErr,
		})
	}
	slices.SortFunc(out.Servers, func(a, b centralapi.ServerInfo) int { return strings.Compare(a.ID, b.ID) })
	return http.StatusOK, out, nil
}

func (c *Central) listRooms(r *http.Request) (int, any, *apiError) {
	if c.serverAuthOn() {
		if e := c.clusterOK(r, ""); e != nil {
			return 0, nil, e
		}
		// A certificate for one chat server speaks for it alone, not for
		// the cluster whose rooms this lists (abuse sweep, 2026-12-03).
		if ids, _, _ := certIDs(r); len(ids) > 0 {
			return 0, nil, errf(http.StatusUnauthorized, centralapi.CodeUnauthorized, "this client certificate is for chat server %s, not the cluster: listing the rooms takes the secret or a certificate naming no server", strings.Join(ids, ", "))
		}
	}
	q := r.URL.Query()
	after, limit := q.Get("after"), centralapi.RoomPage
	if len(after) > proto.MaxRoom {
		return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "after: %d bytes, no room id is longer than %d", len(after), proto.MaxRoom)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > centralapi.RoomPage {
			return 0, nil, errf(http.StatusBadRequest, centralapi.CodeBadRequest, "limit %.16q: want 1 to %d", v, centralapi.RoomPage)
		}
		limit = n
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// One page, so a listing of a large deployment costs each request
	// (and its answer) a page, not every room.
	page := smallest(limit+1, func(yield func(*room)) {
		for _, rm := range c.rooms {
			if rm.id > after {
				yield(rm)
			}
		}
	}, func(a, b *room) int { return strings.Compare(a.id, b.id) })
	out := centralapi.RoomList{Rooms: make([]centralapi.RoomInfo, 0, min(len(page), limit))}
	if len(page) > limit {
		page, out.More = page[:limit], true
	}
	for _, rm := range page {
		info := centralapi.RoomInfo{ID: rm.id, Epoch: rm.epoch, Members: rm.memberNames(), LastMove: rm.lastMove, Adopted: rm.adopted}
		if rm.srv != nil {
			info.Server, info.Addr = rm.srv.rec.ID, rm.srv.rec.Addr
			info.Waiting = rm.srv.gone || rm.srv.rec.Down
		} else {
			// A server this Central does not know (it was deregistered
			// before a restart or a takeover, or has not registered
			// again since): the room waits for it or a new placement.
			info.Server, info.Waiting = rm.lostSrv, true
		}
		out.Rooms = append(out.Rooms, info)
	}
	return http.StatusOK, out, nil
}
