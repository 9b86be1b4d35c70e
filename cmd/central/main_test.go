package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/tlsconfig"
)

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
		{"secret", []string{"-secret", "s3cret"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append(append([]string{}, ports...), tc.args...)...)
			cmd.Env = []string{"PATH=/usr/bin:/bin"}
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			var log []string
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				log = append(log, sc.Text())
				if strings.Contains(sc.Text(), "central running") {
					break
				}
			}
			all := strings.Join(log, "\n")
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
		opts, err := etcdOptions(tc.url, tc.ca, tc.cert, tc.key)
		if tc.want == "" && (err != nil || len(opts) != tc.opts) || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %d options, %v", tc.name, len(opts), err)
		}
	}
}
