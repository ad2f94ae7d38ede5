package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	// ReferenceValues is the policy document with the predicted PCRs for
	// nodes with 1 vCPU (OVMF's PCR 0 depends on the vCPU count).
	ReferenceValues string
	// ReferenceValuesByCPUs has the documents for every vCPU count make
	// image measured the firmware for (reference-values-<n>cpu.yaml).
	ReferenceValuesByCPUs map[int]string
	// Cmdline is the kernel command line the UKI carries.
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
	img.ReferenceValuesByCPUs = map[int]string{1: img.ReferenceValues}
	more, err := filepath.Glob(filepath.Join(dir, "reference-values-*cpu.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range more {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "reference-values-"), "cpu.yaml"))
		if err != nil || n < 1 {
			t.Fatalf("node image: unexpected file %s", p)
		}
		img.ReferenceValuesByCPUs[n] = p
	}
	cp := RequireTool(t, "cp")
	snap := t.TempDir()
	for _, p := range []*string{&img.UKI, &img.Root} {
		dst := filepath.Join(snap, filepath.Base(*p))
		if out, err := exec.Command(cp, "--sparse=always", "--reflink=auto", *p, dst).CombinedOutput(); err != nil {
			t.Fatalf("copying the node image: %v\n%s", err, out)
		}
		*p = dst
	}
	for n, p := range img.ReferenceValuesByCPUs {
		dst := filepath.Join(snap, filepath.Base(p))
		if out, err := exec.Command(cp, p, dst).CombinedOutput(); err != nil {
			t.Fatalf("copying the node image: %v\n%s", err, out)
		}
		img.ReferenceValuesByCPUs[n] = dst
	}
	img.ReferenceValues = img.ReferenceValuesByCPUs[1]
	return img
}
