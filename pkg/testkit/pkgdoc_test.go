package testkit_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs fails for every directory of the repository whose Go
// package has no package comment (tailscale's pkgdoc_test.go rule): a
// package says what it is for where go doc shows it.
func TestPackageDocs(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from the test's directory: %v", err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
			return filepath.SkipDir
		}
		fset := token.NewFileSet()
		files, err := filepath.Glob(filepath.Join(path, "*.go"))
		if err != nil {
			return err
		}
		docs := map[string]bool{} // package name -> has a doc comment
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(fset, f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				return err
			}
			docs[af.Name.Name] = docs[af.Name.Name] || af.Doc != nil
		}
		for pkg, ok := range docs {
			checked++
			if !ok {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("no package doc in %s (package %s)", rel, pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packages checked", checked)
	if checked < 10 {
		t.Fatalf("only %d packages found under %s", checked, root)
	}
}
