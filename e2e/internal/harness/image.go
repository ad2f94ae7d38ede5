package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ImageDirEnv names another directory with the node image than .cache/image.
const ImageDirEnv = "CLOISTER_E2E_IMAGE"

// Image is the node image make image builds into .cache/image: a unified
// kernel image (kernel, initrd and the measured command line that carries
// the root file system's dm-verity root hash), the verity-protected root
// file system, and the reference values predicted for them.
type Image struct {
	// UKI is the unified kernel image (uki.efi); NewESP puts it on a boot disk.
	UKI string
	// Root is root.img: ext4 followed by its dm-verity hash tree.
	Root string
	// ReferenceValues is the policy document with the predicted PCRs.
	ReferenceValues string
	// Cmdline is the kernel command line the UKI carries.
	Cmdline string
}

// NodeImage returns a private copy (sparse, reflinked where possible) of
// the node image, so that a rebuild during a test does not change what its
// nodes boot. Missing, it fails the test if CI=true and skips it otherwise,
// naming make image.
func NodeImage(t testing.TB) Image {
	t.Helper()
	dir := os.Getenv(ImageDirEnv)
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), ".cache", "image")
	}
	img := Image{
		UKI:             filepath.Join(dir, "uki.efi"),
		Root:            filepath.Join(dir, "root.img"),
		ReferenceValues: filepath.Join(dir, "reference-values.yaml"),
	}
	cmdlineFile := filepath.Join(dir, "cmdline")
	for _, p := range []string{img.UKI, img.Root, img.ReferenceValues, cmdlineFile} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("node image: %v (run make image)", err)
			}
			t.Skipf("node image: %v (run make image)", err)
		}
	}
	cmdline, err := os.ReadFile(cmdlineFile)
	if err != nil {
		t.Fatal(err)
	}
	img.Cmdline = strings.TrimSpace(string(cmdline))
	cp := RequireTool(t, "cp")
	snap := t.TempDir()
	for _, p := range []*string{&img.UKI, &img.Root, &img.ReferenceValues} {
		dst := filepath.Join(snap, filepath.Base(*p))
		if out, err := exec.Command(cp, "--sparse=always", "--reflink=auto", *p, dst).CombinedOutput(); err != nil {
			t.Fatalf("copying the node image: %v\n%s", err, out)
		}
		*p = dst
	}
	return img
}
