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

// CacheDirEnv names the build cache outside the checkout (the Makefile sets
// it from hack/cachedir.sh).
const CacheDirEnv = "CLOISTER_CACHE"

// CacheDir returns <cache>/<name> (created): what is downloaded or built
// once is kept there and reused by every checkout. The cache is
// $CLOISTER_CACHE, else the user's cache directory's cloister/ (like
// hack/cachedir.sh). Entries are keyed by their inputs (a package name with
// its version), never by the checkout.
func CacheDir(t TB, name string) string {
	t.Helper()
	root := os.Getenv(CacheDirEnv)
	if root == "" {
		userCache, err := os.UserCacheDir()
		if err != nil {
			t.Fatalf("finding the build cache: %v (set %s)", err, CacheDirEnv)
		}
		root = filepath.Join(userCache, "cloister")
	}
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating cache directory: %v", err)
	}
	return dir
}
