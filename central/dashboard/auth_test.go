package dashboard_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/central/dashboard"
)

type fixed struct{ snap central.Snapshot }

func (f fixed) Snapshot() central.Snapshot { return f.snap }

// TestDashboardRefusesOpenAddressWithoutTokenAndTLS: off loopback the
// dashboard needs both.
func TestDashboardRefusesOpenAddressWithoutTokenAndTLS(t *testing.T) {
	for _, cfg := range []dashboard.Config{
		{Listen: "0.0.0.0:0"},
		{Listen: "0.0.0.0:0", Token: "secret"},
		{Listen: ":8088", Token: "secret"},
	} {
		if d, err := dashboard.New(cfg, fixed{}); err == nil {
			d.Close()
			t.Errorf("%+v: started, want refused", cfg)
		} else if !strings.Contains(err.Error(), "token and TLS") {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
}

// TestDashboardToken: with a token, every route wants it, as a header, a
// cookie, or once as ?token= (which sets the cookie).
func TestDashboardToken(t *testing.T) {
	d, err := dashboard.New(dashboard.Config{Listen: "127.0.0.1:0", Token: "s3cret"}, fixed{central.Snapshot{At: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	base := "http://" + d.Addr()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, edit func(*http.Request)) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if edit != nil {
			edit(req)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, path := range []string{"/", "/api/snapshot", "/app.js"} {
		if r := get(path, nil); r.StatusCode != http.StatusUnauthorized || !r.Close {
			t.Errorf("%s without token: %s, closed %v; want 401 and the connection closed", path, r.Status, r.Close)
		}
		if r := get(path, func(q *http.Request) { q.Header.Set("Authorization", "Bearer wrong") }); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %s", path, r.Status)
		}
	}
	if r := get("/api/snapshot", func(q *http.Request) { q.Header.Set("Authorization", "Bearer s3cret") }); r.StatusCode != http.StatusOK {
		t.Errorf("bearer token: %s", r.Status)
	}
	r := get("/?token=s3cret", nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" || len(r.Cookies()) != 1 || !r.Cookies()[0].HttpOnly {
		t.Fatalf("?token=: %s, location %q, cookies %v", r.Status, r.Header.Get("Location"), r.Cookies())
	}
	cookie := r.Cookies()[0]
	if r := get("/api/snapshot", func(q *http.Request) { q.AddCookie(cookie) }); r.StatusCode != http.StatusOK {
		t.Errorf("cookie: %s", r.Status)
	}
}

// TestDashboardServesOnlyLoopbackNames: a dashboard without a token
// answers only requests that name localhost or a loopback address, so a
// web page that points a name of its own at 127.0.0.1 (DNS rebinding)
// cannot read it; the refusal closes the connection.
func TestDashboardServesOnlyLoopbackNames(t *testing.T) {
	d, err := dashboard.New(dashboard.Config{Listen: "127.0.0.1:0"}, fixed{central.Snapshot{At: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for host, want := range map[string]int{
		"":                    http.StatusOK, // the dialed address
		"localhost":           http.StatusOK,
		"LOCALHOST:8088":      http.StatusOK,
		"view.localhost:8088": http.StatusOK,
		"127.0.0.1:8088":      http.StatusOK,
		"127.1.2.3":           http.StatusOK,
		"[::1]:8088":          http.StatusOK,
		"attacker.example":    http.StatusForbidden,
		"attacker.example:80": http.StatusForbidden,
		"localhost.example":   http.StatusForbidden,
		"10.0.0.1:8088":       http.StatusForbidden,
	} {
		req, _ := http.NewRequest("GET", "http://"+d.Addr()+"/api/snapshot", nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("Host %q: %v", host, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || (want != http.StatusOK) != resp.Close {
			t.Errorf("Host %q: %s, closed %v; want %d", host, resp.Status, resp.Close, want)
		}
	}
}
