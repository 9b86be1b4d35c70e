package tlsconfig

import (
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"slices"
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

// TestServerIDsMalformed: a nearchat URI that is not nearchat:server:ID
// with a valid id was skipped, so a certificate meant for one server whose
// URI was misspelt stood for the whole cluster (abuse sweep, 2026-12-03).
func TestServerIDsMalformed(t *testing.T) {
	parse := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		uris []string
		ids  []string
		bad  bool
	}{
		{nil, nil, false},
		{[]string{"https://example.com/x"}, nil, false},
		{[]string{"nearchat:server:serv1"}, []string{"serv1"}, false},
		{[]string{"nearchat:server:serv1", "nearchat:server:serv2"}, []string{"serv1", "serv2"}, false},
		{[]string{"nearchat://server/serv1"}, nil, true},
		{[]string{"nearchat:server:"}, nil, true},
		{[]string{"nearchat:client:serv1"}, nil, true},
		{[]string{"nearchat:server:serv1", "nearchat:server:bad id"}, nil, true},
		{[]string{"nearchat:server:serv1?x=1"}, nil, true},
	} {
		cert := &x509.Certificate{}
		for _, s := range tc.uris {
			cert.URIs = append(cert.URIs, parse(s))
		}
		ids, err := ServerIDs(cert)
		if (err != nil) != tc.bad || !slices.Equal(ids, tc.ids) {
			t.Errorf("%v: ids %v, err %v; want %v, malformed %v", tc.uris, ids, err, tc.ids, tc.bad)
		}
	}
}
