package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "new" {
		t.Fatalf("read %q, %v; want new", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Errorf("%d files left in the directory, want 1 (no temporary file)", len(es))
	}
	// Into a directory that does not exist: an error, and nothing written.
	if err := Write(filepath.Join(dir, "no", "such"), []byte("x"), 0o600); err == nil {
		t.Error("wrote into a missing directory")
	}
}

// A set is written whole or not at all: a file that cannot be staged
// leaves the others as they were, with no temporary files behind.
func TestWriteAllIsAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	ca, cert := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem")
	for _, p := range []string{ca, cert} {
		if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := WriteAll([]File{{ca, []byte("new"), 0o644}, {cert, []byte("new"), 0o644}, {filepath.Join(dir, "gone", "key.pem"), []byte("new"), 0o600}})
	if err == nil {
		t.Fatal("a set with an unwritable file was written")
	}
	for _, p := range []string{ca, cert} {
		if b, _ := os.ReadFile(p); string(b) != "old" {
			t.Errorf("%s is %q after a failed set, want old", p, b)
		}
	}
	if es, _ := os.ReadDir(dir); len(es) != 2 {
		t.Errorf("%d files in the directory, want 2 (no temporary file)", len(es))
	}
	if err := WriteAll([]File{{ca, []byte("new"), 0o644}, {cert, []byte("new"), 0o600}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{ca, cert} {
		if b, _ := os.ReadFile(p); string(b) != "new" {
			t.Errorf("%s is %q, want new", p, b)
		}
	}
}
