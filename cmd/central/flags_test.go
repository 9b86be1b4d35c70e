package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"nearchat/pkg/testkit"
)

// TestBadFlagsRefused runs the real binary with flags out of range: each
// exits 2 at once with one line naming the flag, the value and the range,
// instead of starting with them (a scan that spins, a gain percentage no
// move can reach) or failing later (a port past 65535 at bind).
func TestBadFlagsRefused(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "central")
	if out, err := exec.Command("go", "build", "-o", bin, "nearchat/cmd/central").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"scan", []string{"-scan", "0"}, []string{"-scan", "0s", "10ms to 24h"}},
		{"min gain pct", []string{"-min-gain-pct", "200"}, []string{"-min-gain-pct", "200", "0 to 100"}},
		{"rest port", []string{"-rest", "127.0.0.1:99999"}, []string{"-rest", "99999", "0 to 65535"}},
		{"leader ttl", []string{"-leader-ttl", "1500ms"}, []string{"-leader-ttl", "1.5s", "whole seconds"}},
		{"etcd compact", []string{"-etcd-compact", "-1s"}, []string{"-etcd-compact", "-1s", "0s to 720h"}},
		{"store", []string{"-store", "etcd:/nowhere"}, []string{"-store", "etcd://host:port"}},
		{"dashboard socket", []string{"-dashboard", "unix:"}, []string{"-dashboard", "unix:PATH"}},
		{"offline before heartbeat", []string{"-heartbeat", "5s", "-offline-after", "1s"}, []string{"-offline-after", "1s", "5s to 720h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s"}, tc.args...)
			testkit.ExpectRefused(t, bin, args, append([]string{"central: invalid value"}, tc.want...)...)
		})
	}
}

// TestDashboardAddr: -dashboard takes a Unix socket as well as host:port
// (the Mininet scripts give unix:PATH; refusing it stopped their Central).
func TestDashboardAddr(t *testing.T) {
	for v, ok := range map[string]bool{
		"": true, "127.0.0.1:8088": true, "unix:/tmp/dash.sock": true, "unix:rel.sock": true,
		"unix:": false, "127.0.0.1:99999": false, "nowhere": false,
	} {
		if err := dashboardAddr(v); (err == nil) != ok {
			t.Errorf("-dashboard %q: %v", v, err)
		}
	}
}
