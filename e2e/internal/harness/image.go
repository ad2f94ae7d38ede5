package harness

import (
	"os"
	"os/exec"
	"path/filepath"
)

// ImageDirEnv names another directory with vmlinuz, initrd.img and
// root.img than .cache/image.
const ImageDirEnv = "CLOISTER_E2E_IMAGE"

// Image is the node image make image builds into .cache/image.
type Image struct {
	Vmlinuz, Initrd, Root string
	// Cmdline is what the image needs on the kernel command line.
	Cmdline string
}

// NodeImage returns a private copy (sparse, reflinked where possible) of
// the node image, so that a rebuild during a test does not change what its
// nodes boot. Missing, it fails the test if CI=true and skips it otherwise,
// naming make image.
func NodeImage(t TB) Image {
	t.Helper()
	dir := os.Getenv(ImageDirEnv)
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), ".cache", "image")
	}
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
	cp := RequireTool(t, "cp")
	snap := t.TempDir()
	for _, p := range []*string{&img.Vmlinuz, &img.Initrd, &img.Root} {
		dst := filepath.Join(snap, filepath.Base(*p))
		if out, err := exec.Command(cp, "--sparse=always", "--reflink=auto", *p, dst).CombinedOutput(); err != nil {
			t.Fatalf("copying the node image: %v\n%s", err, out)
		}
		*p = dst
	}
	return img
}
