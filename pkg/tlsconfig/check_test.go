package tlsconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"example.org", true},
		{"10.0.0.6", true},
		{"::1", true},
		{"fe80::1%eth0", false},
		{"serv-1.lab", true},
		{"*.lab.example", true},
		{"localhost", true},
		{"", false},
		{"bad host", false},
		{"a/b", false},
		{"-a.org", false},
		{"a-.org", false},
		{"a..org", false},
		{strings.Repeat("a", 64) + ".org", false},
		{strings.Repeat("a.", 127) + "ab", false},
		{"héllo.org", false},
		{"*", false},
		{"a.*.org", false},
	} {
		if err := CheckHost(tc.host); (err == nil) != tc.ok {
			t.Errorf("CheckHost(%q) = %v, want ok %v", tc.host, err, tc.ok)
		}
	}
}

func TestCheckValidity(t *testing.T) {
	for _, tc := range []struct {
		d  time.Duration
		ok bool
	}{
		{time.Hour, true}, {MinValidity, true}, {MaxValidity, true},
		{0, false}, {-time.Hour, false}, {time.Second, false}, {MaxValidity + 1, false},
	} {
		if err := CheckValidity(tc.d); (err == nil) != tc.ok {
			t.Errorf("CheckValidity(%v) = %v, want ok %v", tc.d, err, tc.ok)
		}
	}
}

// TestWriteDevRefusesBeforeWriting: WriteDev called with a bad host or
// validity writes no file, so no half-made CA is left to trip the next
// run's "already exists".
func TestWriteDevRefusesBeforeWriting(t *testing.T) {
	for name, call := range map[string]func(dir string) error{
		"bad host":     func(dir string) error { _, err := WriteDev(dir, []string{"ok.org", "not ok"}, time.Hour); return err },
		"bad validity": func(dir string) error { _, err := WriteDev(dir, nil, -time.Hour); return err },
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "certs")
			if err := call(dir); err == nil {
				t.Fatal("WriteDev accepted it")
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("WriteDev made %s", dir)
			}
		})
	}
	t.Run("bad server id", func(t *testing.T) {
		dir := t.TempDir()
		f, err := WriteDev(dir, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := WriteServerClient(f, "../x", time.Hour); err == nil {
			t.Error("WriteServerClient accepted id ../x")
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "client-..")); err == nil {
			t.Error("wrote outside the directory")
		}
	})
}
