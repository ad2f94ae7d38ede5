package harness

import (
	"os"
	"path/filepath"
	"testing"
)

// Image is the node image make image builds into .cache/image.
type Image struct {
	Vmlinuz, Initrd, Root string
	// Cmdline is what the image needs on the kernel command line.
	Cmdline string
}

// NodeImage returns the node image. Missing, it fails the test if CI=true
// and skips it otherwise, naming make image.
func NodeImage(t testing.TB) Image {
	t.Helper()
	dir := filepath.Join(RepoRoot(t), ".cache", "image")
	img := Image{
		Vmlinuz: filepath.Join(dir, "vmlinuz"),
		Initrd:  filepath.Join(dir, "initrd.img"),
		Root:    filepath.Join(dir, "root.img"),
		Cmdline: "root=LABEL=cloister-root",
	}
	for _, p := range []string{img.Vmlinuz, img.Initrd, img.Root} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("node image: %v (run make image)", err)
			}
			t.Skipf("node image: %v (run make image)", err)
		}
	}
	return img
}
