// Package etcdtest starts real etcd members (the etcd binary, Debian's
// etcd-server, installed by `make deps`) on loopback ports for tests. A test
// that calls Start without etcd on PATH skips and says so.
package etcdtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"nearchat/pkg/freeport"
	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
)

// Member is one running etcd process.
type Member struct {
	Name, Client, Peer string // Client and Peer are http:// URLs (Client https:// with TLS)
	dir                string
	args               []string
	cmd                *exec.Cmd
	t                  testing.TB
}

// Cluster is a set of etcd members started together.
type Cluster struct {
	Members []*Member
	TLS     *tls.Config // a client's settings, with StartTLS
}

// Client returns a client of the cluster (over TLS with StartTLS's
// client certificate), closed when the test ends. Its log is off: its
// retry warnings, one JSON line every few seconds while a test has a
// member down, were most of a CI log, and the test sees the errors.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, TLS: c.TLS, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Endpoints returns the members' client URLs.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.Client
	}
	return out
}

// Hosts returns the members' client host:port list, comma-separated, for an
// etcd:// URL.
func (c *Cluster) Hosts() string {
	hosts := make([]string, len(c.Members))
	for i, m := range c.Members {
		_, hosts[i], _ = strings.Cut(m.Client, "://")
	}
	return strings.Join(hosts, ",")
}

// freePort is a loopback address for a member to bind: etcd binds it
// after it starts, and Restart binds it again after a kill, so it lies
// outside the range other tests' :0 listeners draw from (freeport).
func freePort(t testing.TB) string {
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Start runs an n-member etcd cluster and waits until it answers. The
// members are killed when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return start(t, n, nil)
}

// StartTLS is Start with the members' client URLs served over TLS with
// the development CA in f (its server certificate), and each client
// required to present a certificate from that CA (--client-cert-auth).
// The peers talk plaintext among themselves.
func StartTLS(t testing.TB, n int, f tlsconfig.Files) *Cluster {
	t.Helper()
	return start(t, n, &f)
}

func start(t testing.TB, n int, f *tlsconfig.Files) *Cluster {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd not installed (make deps installs Debian's etcd-server as root)")
	}
	scheme := "http://"
	var tc *tls.Config
	if f != nil {
		scheme = "https://"
		if tc, err = tlsconfig.Client(f.CA, f.ClientCert, f.ClientKey); err != nil {
			t.Fatal(err)
		}
	}
	c := &Cluster{TLS: tc}
	var initial []string
	for i := range n {
		m := &Member{Name: fmt.Sprintf("m%d", i), Client: scheme + freePort(t), Peer: "http://" + freePort(t),
			dir: filepath.Join(t.TempDir(), "data"), t: t}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.Peer)
	}
	for _, m := range c.Members {
		m.args = MemberArgs(m.Name, m.dir, m.Client, m.Peer, strings.Join(initial, ","))
		if f != nil {
			m.args = append(m.args, "--cert-file", f.ServerCert, "--key-file", f.ServerKey,
				"--trusted-ca-file", f.CA, "--client-cert-auth")
		}
		m.start(bin)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
		}
	})
	cli := c.Client(t)
	testkit.WaitFor(t, 30*time.Second, "etcd to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "health")
		return err == nil
	})
	return c
}

// MemberArgs are the etcd flags of one member of a new loopback cluster:
// client and peer are its http:// URLs, initial the cluster's
// name=peerURL list. Leader election is tuned for loopback (50 ms
// heartbeat, 500 ms election timeout).
func MemberArgs(name, dir, client, peer, initial string) []string {
	return []string{"--name", name, "--data-dir", dir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", initial, "--initial-cluster-state", "new",
		"--initial-cluster-token", "nearchat-test",
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
		"--logger", "zap", "--log-level", "error"}
}

func (m *Member) start(bin string) {
	m.cmd = exec.Command(bin, m.args...)
	m.cmd.Stdout, m.cmd.Stderr = testkit.Writer(m.t), testkit.Writer(m.t)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start etcd %s: %v", m.Name, err)
	}
}

// Kill SIGKILLs the member and waits for it to exit; a no-op if it is not
// running.
func (m *Member) Kill() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	m.cmd.Wait()
	m.cmd = nil
}

// Restart starts a killed member again on the same ports and data.
func (m *Member) Restart() {
	if m.cmd != nil {
		return
	}
	bin, _ := exec.LookPath("etcd")
	if _, err := os.Stat(m.dir); err != nil {
		m.t.Fatalf("etcd %s data: %v", m.Name, err)
	}
	m.start(bin)
}
