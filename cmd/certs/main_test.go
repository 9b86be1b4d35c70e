package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nearchat/pkg/tlsconfig"
)

// TestRefusesToOverwrite: a second run keeps the CA and the ticket key
// (a running cluster trusts them) unless told -force.
func TestRefusesToOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errOut bytes.Buffer
	if rc := run([]string{"-dir", dir}, &out, &errOut); rc != 0 {
		t.Fatalf("first run: rc %d: %s", rc, errOut.String())
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "ticket.key"))
	if err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if rc := run([]string{"-dir", dir}, &out, &errOut); rc == 0 {
		t.Fatal("second run without -force succeeded")
	}
	if !strings.Contains(errOut.String(), "already exists") || !strings.Contains(errOut.String(), "-force") {
		t.Errorf("message %q does not say what exists and how to replace it", errOut.String())
	}
	t.Logf("message: %s", errOut.String())
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); !bytes.Equal(again, ca) {
		t.Error("the CA was overwritten")
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ticket.key")); !bytes.Equal(again, key) {
		t.Error("the ticket key was overwritten")
	}
	// A ticket key alone (no CA yet) is protected too.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "ticket.key"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rc := run([]string{"-dir", other}, &out, &errOut); rc == 0 {
		t.Error("overwrote a lone ticket key without -force")
	}
	if rc := run([]string{"-dir", dir, "-force"}, &out, &errOut); rc != 0 {
		t.Fatalf("-force: rc %d: %s", rc, errOut.String())
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); bytes.Equal(again, ca) {
		t.Error("-force kept the old CA")
	}
}

// TestServerIDs: -server-ids issues each chat server a client certificate
// naming its id, at first and, with the CA kept, for servers added later.
func TestServerIDs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errOut bytes.Buffer
	if rc := run([]string{"-dir", dir, "-server-ids", "serv1"}, &out, &errOut); rc != 0 {
		t.Fatalf("first run: rc %d: %s", rc, errOut.String())
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if rc := run([]string{"-dir", dir, "-server-ids", "serv2, serv3"}, &out, &errOut); rc != 0 {
		t.Fatalf("adding servers: rc %d: %s", rc, errOut.String())
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); !bytes.Equal(again, ca) {
		t.Error("adding servers replaced the CA")
	}
	for _, id := range []string{"serv1", "serv2", "serv3"} {
		certFile, _ := tlsconfig.ServerClientFiles(dir, id)
		b, err := os.ReadFile(certFile)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if ids, err := tlsconfig.ServerIDs(cert); err != nil || len(ids) != 1 || ids[0] != id {
			t.Errorf("%s names %v, want [%s]", certFile, ids, id)
		}
	}
	t.Logf("%s", out.String())
}

// TestBadArgumentsWriteNothing: a bad host, server id or validity is
// refused with status 2 and a line naming the flag before any file is
// written, where it used to leave a CA (and, for a validity below the
// hour of back-dating, certificates expired from the start) behind.
func TestBadArgumentsWriteNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"host with a space", []string{"-hosts", "example.org,bad host"}, `invalid value "bad host" for -hosts`},
		{"host with a slash", []string{"-hosts", "a/b"}, `invalid value "a/b" for -hosts`},
		{"negative validity", []string{"-validity", "-2h"}, "invalid value -2h for -validity: want 1m to 87600h"},
		{"validity past ten years", []string{"-validity", "100000h"}, "invalid value 100000h for -validity"},
		{"server id outside the directory", []string{"-server-ids", "serv1,../x"}, `invalid value "../x" for -server-ids`},
		{"stray argument", []string{"serv1"}, `unexpected argument "serv1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "certs")
			var out, errOut bytes.Buffer
			if rc := run(append([]string{"-dir", dir}, tc.args...), &out, &errOut); rc != 2 {
				t.Errorf("rc %d, want 2; stderr %q", rc, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("stderr %q does not say %q", errOut.String(), tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				es, _ := os.ReadDir(dir)
				t.Errorf("the refused run made %s (%d files)", dir, len(es))
			}
		})
	}
}
