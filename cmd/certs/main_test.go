package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
