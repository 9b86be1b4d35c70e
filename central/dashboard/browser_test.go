package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	benchcluster "nearchat/bench/cluster"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"

	"github.com/chromedp/chromedp"
)

// browser starts a headless Chromium (Debian's chromium package; make test
// installs it as root) and returns a chromedp context, and the console
// errors and exceptions the pages report.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("skipping the browser test: no chromium on PATH (make test installs Debian's chromium as root)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })

	// Start the browser, then follow its console: calls of the console
	// API, uncaught exceptions and the browser log (failed loads).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleException, "error", "warning", "assert":
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

// TestDashboardInBrowser drives the dashboard in a real headless Chromium:
// the page loads with no console errors, shows the servers, the clients'
// RTTs and the room, and when the room moves the page shows it through the
// event stream, without reloading. It saves a screenshot as an artifact
// (go test -artifacts; NEARCHAT_DASHBOARD_PNG=path also writes one there).
func TestDashboardInBrowser(t *testing.T) {
	ctx, problems := browser(t)
	c := startCluster(t)
	for _, id := range []string{"serv1", "serv3", "serv4"} {
		c.startServer(id)
	}
	alice, bob := c.user("alice"), c.user("bob")
	sa, sb, first := c.chat(alice, bob)
	// On a loaded machine a probe round can come out late and the room
	// start, or move, elsewhere; the page must show wherever it is.
	t.Logf("room started on %s", first)
	// Wherever a late probe round put it, Central's scan must bring the
	// room to serv1, which the emulation ranks first (after the 10 s
	// minimum dwell at worst).
	testkit.WaitFor(t, 30*time.Second, "the room on serv1, the best server", func() bool { return c.roomServer() == "serv1" })
	send(t, sa, bob, 5)

	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(tctx, actions...); err != nil {
			t.Fatalf("%s: %v (page problems: %q)", what, err, problems())
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	do("load the page",
		chromedp.Navigate(c.dash.URL()),
		chromedp.WaitVisible(chromedp.CSS(`#rooms tbody tr[data-server]`)),
		chromedp.WaitVisible(chromedp.CSS(`#live.on`)),
	)
	servers := eval(`Array.from(document.querySelectorAll("#servers tbody tr")).map(r => r.dataset.server + "=" + r.dataset.state).join(",")`)
	heatCells := eval(`String(document.querySelectorAll("#heat td.cell").length)`)
	roomServer := eval(`document.querySelector("#rooms tbody tr").dataset.server`)
	// A mark that a reload would wipe.
	eval(`window.nearchatMark = "still here"`)
	if servers != "serv1=up,serv3=up,serv4=up" {
		t.Errorf("servers on the page: %q, want serv1, serv3, serv4 all up", servers)
	}
	if heatCells != "6" {
		t.Errorf("heatmap cells: %s, want 2 clients x 3 servers", heatCells)
	}
	t.Logf("room on %s on the page, on %s at Central", roomServer, c.roomServer())

	// Drain the room's server: the room moves, and the page must follow.
	from := roomServer
	if err := c.drain(from); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the room off "+from, func() bool { s := c.roomServer(); return s != "" && s != from })
	send(t, sb, alice, 5)
	do("see the move",
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#rooms tbody tr:not([data-server=%q])`, from))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#moves tbody tr[data-from=%q][data-reason="server_draining"]`, from))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#servers tbody tr[data-server=%q][data-state="draining"]`, from))),
	)
	mark := eval(`String(window.nearchatMark)`)
	moveRow := eval(fmt.Sprintf(`document.querySelector('#moves tbody tr[data-from=%q][data-reason="server_draining"]').textContent`, from))
	if mark != "still here" {
		t.Errorf("the page was reloaded (mark %q): updates must come through the event stream", mark)
	}
	if !strings.Contains(moveRow, from+" → serv") || !strings.Contains(moveRow, "server draining") {
		t.Errorf("move row %q, want %s → another server, for draining", moveRow, from)
	}
	t.Logf("servers %s; move row %q", servers, moveRow)

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))
	if p := os.Getenv("NEARCHAT_DASHBOARD_PNG"); p != "" {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the page reported problems: %q", p)
	}
}

// TestDashboardFlagsUnreachableAddress: a chat server registered at an
// address that does not answer Central's check is listed with an
// "unreachable" badge whose title says why; one that answers has none.
func TestDashboardFlagsUnreachableAddress(t *testing.T) {
	ctx, problems := browser(t)
	c := startCluster(t)
	c.startServer("serv1")
	dead, err := benchcluster.FreeAddr() // below the ephemeral range: no :0 listener takes it meanwhile
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.api.Register(context.Background(), centralapi.RegisterServerRequest{ID: "astray", Addr: dead, Secret: secret}); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx,
		chromedp.Navigate(c.dash.URL()),
		chromedp.WaitVisible(chromedp.CSS(`#servers tbody tr[data-server="astray"][data-addr-error] .badge.unreachable`)),
	); err != nil {
		t.Fatalf("the unreachable badge: %v (page problems: %q)", err, problems())
	}
	why, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#servers tbody tr[data-server="astray"] td:nth-child(2)').title`))
	if err != nil {
		t.Fatal(err)
	}
	flagged, err := chromedp.Run(ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#servers tbody tr[data-addr-error]")).map(r => r.dataset.server).join(",")`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("astray at %s: %q", dead, why)
	if !strings.Contains(why, "refused") {
		t.Errorf("badge title %q, want the check's error (connection refused)", why)
	}
	if flagged != "astray" {
		t.Errorf("flagged rows %q, want astray alone", flagged)
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the page reported problems: %q", p)
	}
}
