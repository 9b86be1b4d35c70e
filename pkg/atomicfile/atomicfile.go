// Package atomicfile writes a file so that its path holds either the old
// content or the whole new content, never a part: the data goes to a
// temporary file in the same directory, synced, then renamed over the path.
// Keys and certificates are written this way, so a run that fails (a full
// disk, a kill) never leaves a truncated PEM file where a good one was.
// WriteAll does the same for a set of files that only work together (a
// CA and the certificates it signed).
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// File is one file of a set for WriteAll.
type File struct {
	Path string
	Data []byte
	Perm os.FileMode
}

// Write writes data to path with permissions perm, atomically.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteAll([]File{{path, data, perm}})
}

// WriteAll writes every file of set, each atomically, and none unless all
// of them could be written and synced: a failure before the renames
// leaves every path as it was. Only a rename failing midway (which on one
// file system takes a crash) could leave the set mixed.
func WriteAll(set []File) error {
	tmps := make([]string, 0, len(set))
	defer func() {
		for _, t := range tmps {
			os.Remove(t) // the renamed ones are gone already
		}
	}()
	for _, f := range set {
		name, err := stage(f)
		if err != nil {
			return err
		}
		tmps = append(tmps, name)
	}
	for i, f := range set {
		if err := os.Rename(tmps[i], f.Path); err != nil {
			return err
		}
	}
	return nil
}

// stage writes f to a synced temporary file beside its path.
func stage(f File) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".tmp-*")
	if err != nil {
		return "", err
	}
	name := tmp.Name()
	_, err = tmp.Write(f.Data)
	err = errors.Join(err, tmp.Chmod(f.Perm), tmp.Sync(), tmp.Close())
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}
