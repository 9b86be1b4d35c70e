package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
)

// startLog starts Central (bin) with env and args, killed at the test's
// end, and returns its log up to "central running" (all of it, if it
// exits first).
func startLog(t *testing.T, bin string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var log []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log = append(log, sc.Text())
		if strings.Contains(sc.Text(), "central running") {
			break
		}
	}
	return strings.Join(log, "\n")
}

// TestWarnsWhenServersAreNotAuthenticated: a Central that lets any chat
// server register says so at start; one with a secret or a client CA
// does not.
func TestWarnsWhenServersAreNotAuthenticated(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "central")
	if out, err := exec.Command("go", "build", "-o", bin, "nearchat/cmd/central").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	files, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ports := []string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0"}
	tlsFlags := []string{"-tls-cert", files.ServerCert, "-tls-key", files.ServerKey}
	for _, tc := range []struct {
		name string
		args []string
		want string // "" for no warning
	}{
		{"TLS, no secret, no client CA", tlsFlags, "any chat server that reaches the REST port can register"},
		{"TLS, client CA, no secret", append(append([]string{}, tlsFlags...), "-tls-client-ca", files.CA), ""}, // only certificate holders register
		{"plaintext, no secret", nil, "any chat server that reaches the REST port can register"},
		{"secret", []string{"-secret", "s3cret-of-20-bytes.."}, ""},
		// Taken, but said: "abc" and sixteen spaces started without a
		// word (black-box sweep, 2026-12-04).
		{"short secret", []string{"-secret", "s3cret"}, "weak cluster secret: 6 bytes"},
		{"secret of spaces", []string{"-secret", strings.Repeat(" ", 20)}, "weak cluster secret: 20 bytes, 0 of them not spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all := startLog(t, bin, []string{"PATH=/usr/bin:/bin"}, append(append([]string{}, ports...), tc.args...)...)
			if !strings.Contains(all, "central running") {
				t.Fatalf("Central did not start:\n%s", all)
			}
			warned := strings.Contains(all, "level=WARN")
			switch {
			case tc.want == "" && warned:
				t.Errorf("warned with servers authenticated:\n%s", all)
			case tc.want != "" && !strings.Contains(all, tc.want):
				t.Errorf("no warning %q:\n%s", tc.want, all)
			}
		})
	}
}

// A follower takes a leader record naming its own ports however they are
// spelled for itself, and waits: "localhost" for 127.0.0.1 once made one
// relay to itself some 2,000 times (abuse probe, 2026-12-03).
func TestIsSelf(t *testing.T) {
	for _, tc := range []struct {
		addr, listen string
		self         bool
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"localhost:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:8080", "0.0.0.0:8080", true},
		{"127.0.0.1:8080", ":8080", true},
		{"127.0.0.1:8081", "127.0.0.1:8080", false},
		{"127.0.0.2:8080", "127.0.0.1:8080", false}, // another replica on this machine
		{"not an address", "127.0.0.1:8080", false},
	} {
		if got := isSelf(tc.addr, tc.listen); got != tc.self {
			t.Errorf("isSelf(%q, %q) = %v, want %v", tc.addr, tc.listen, got, tc.self)
		}
	}
}

// TestEtcdOptions: the etcd TLS flags go with etcds:// only, the
// certificate with its key, and files that do not load are named.
func TestEtcdOptions(t *testing.T) {
	f, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, ca, cert, key string
		want                     string // in the error; "" for none
		opts                     int
	}{
		{name: "plaintext", url: "etcd://a:2379"},
		{name: "memory", url: "memory"},
		{name: "TLS, system roots", url: "etcds://a:2379", opts: 1},
		{name: "TLS, CA and certificate", url: "etcds://a:2379", ca: f.CA, cert: f.ClientCert, key: f.ClientKey, opts: 1},
		{name: "flags without etcds", url: "etcd://a:2379", ca: f.CA, want: "need -store etcds://"},
		{name: "certificate without key", url: "etcds://a:2379", cert: f.ClientCert, want: "go together"},
		{name: "missing CA file", url: "etcds://a:2379", ca: f.CA + ".nope", want: "-etcd-ca"},
		{name: "key of another certificate", url: "etcds://a:2379", cert: f.ClientCert, key: f.ServerKey, want: "-etcd-cert"},
	} {
		opts, _, err := etcdOptions(tc.url, tc.ca, tc.cert, tc.key)
		if tc.want == "" && (err != nil || len(opts) != tc.opts) || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %d options, %v", tc.name, len(opts), err)
		}
	}
}

// TestHelpHidesSecretsFromEnv: -h printed the cluster secret and the
// dashboard token taken from the environment as the flags' defaults, for
// anyone who pastes -h output (usability review 7, H2), and a stray
// argument printed the whole usage with no word of what was wrong. The
// secret from the environment still counts: Central does not warn that
// servers are unauthenticated. Nor does the log show the dashboard's
// token (it did, in the dashboard's URL).
func TestHelpHidesSecretsFromEnv(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	env := []string{"PATH=/usr/bin:/bin", "NEARCHAT_SECRET=topsecret-env-of-24-bytes", "NEARCHAT_DASHBOARD_TOKEN=dashtok-env"}
	cmd := exec.Command(bin, "-h")
	cmd.Env = env
	out, _ := cmd.CombinedOutput()
	if strings.Contains(string(out), "topsecret-env-of-24-bytes") || strings.Contains(string(out), "dashtok-env") || !strings.Contains(string(out), "$NEARCHAT_SECRET") {
		t.Fatalf("-h shows a secret from the environment, or does not name the variable:\n%s", out)
	}
	for _, bad := range []struct{ flag, want string }{{"-heartbeat=5", "a duration such as"}, {"-max-outbound=4MiB", "whole number of bytes"}} {
		out, err := exec.Command(bin, bad.flag).CombinedOutput()
		if lines := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; err == nil || lines != 1 || !strings.Contains(string(out), bad.want) {
			t.Errorf("%s: %v, %d lines, want one line saying %q:\n%s", bad.flag, err, lines, bad.want, out)
		}
	}
	if out, err := exec.Command(bin, "-h").Output(); err != nil || !strings.Contains(string(out), "Flags:") {
		t.Errorf("-h: %v; want the usage on stdout, exit 0:\n%s", err, out)
	}
	cmd = exec.Command(bin, "-rest", "127.0.0.1:0", "-multicore", "false")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if lines := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; err == nil || lines != 1 || !strings.Contains(string(out), "-multicore=false") {
		t.Fatalf("a stray argument after a boolean flag: %v, %d lines:\n%s", err, lines, out)
	}
	if all := startLog(t, bin, env, "-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-dashboard", "127.0.0.1:0"); !strings.Contains(all, "central running") || strings.Contains(all, "level=WARN") {
		t.Fatalf("with $NEARCHAT_SECRET set, Central did not start, or warned that servers are unauthenticated:\n%s", all)
	} else if !strings.Contains(all, "msg=dashboard") || strings.Contains(all, "dashtok-env") {
		t.Fatalf("the dashboard's line is missing, or shows its token (L13):\n%s", all)
	}
}

// TestSaysEtcdIsUnreachable: with no etcd at the store's address, Central
// said only that it relays while waiting to lead, then the etcd client
// wrote a JSON line of its own every 2 s, and nothing said that etcd could
// not be reached (usability review 7, M10).
func TestSaysEtcdIsUnreachable(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	dead := deadAddr(t)
	cmd := exec.Command(bin, "-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-store", "etcd://"+dead)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	var log []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		log = append(log, line)
		if strings.HasPrefix(line, "{") {
			t.Fatalf("a JSON line of the etcd client's among Central's:\n%s", strings.Join(log, "\n"))
		}
		if strings.Contains(line, "etcd unreachable") && strings.Contains(line, dead) {
			return
		}
	}
	t.Fatalf("no word that etcd is unreachable:\n%s", strings.Join(log, "\n"))
}
