package harness

import (
	"errors"
	"os"
	"path/filepath"
)

// RepoRoot returns the repository's root: the nearest directory above the
// working directory that holds go.work.
func RepoRoot(t TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("finding the repository root: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("finding the repository root: %v", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("finding the repository root: no go.work above the working directory")
		}
		dir = parent
	}
}

// CacheDir returns .cache/<name> in the repository (created), where what is
// downloaded or built once is kept and reused.
func CacheDir(t TB, name string) string {
	t.Helper()
	dir := filepath.Join(RepoRoot(t), ".cache", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating cache directory: %v", err)
	}
	return dir
}
