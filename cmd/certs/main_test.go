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
		if ids := tlsconfig.ServerIDs(cert); len(ids) != 1 || ids[0] != id {
			t.Errorf("%s names %v, want [%s]", certFile, ids, id)
		}
	}
	t.Logf("%s", out.String())
}
