package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Kernel is Debian's current kernel for amd64, unpacked under
// <cache>/e2e/kernel/<package>/ (CacheDir).
type Kernel struct {
	// Version is the module directory name, like 6.1.0-56-amd64.
	Version string
	// Vmlinuz is the kernel image QEMU boots with -kernel.
	Vmlinuz string
	// Root holds lib/modules/<Version>, with depmod's indexes.
	Root string
}

// DebianKernel returns the kernel that linux-image-amd64 depends on today,
// downloading and unpacking it the first time. The version is resolved on
// every run (it moves with security updates), never pinned.
func DebianKernel(t TB) Kernel {
	t.Helper()
	aptCache := RequireTool(t, "apt-cache")
	aptGet := RequireTool(t, "apt-get")
	dpkgDeb := RequireTool(t, "dpkg-deb")
	depmod := RequireTool(t, "depmod")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, aptCache, "depends", "linux-image-amd64").Output()
	if err != nil {
		t.Fatalf("apt-cache depends linux-image-amd64: %v", err)
	}
	pkg, err := kernelPackage(out)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(CacheDir(t, "e2e/kernel"), pkg)
	if k, err := loadKernel(dir); err == nil {
		return k
	}

	// Unpack into a fresh directory next to the final one, then rename it,
	// so an interrupted run never leaves a half-unpacked kernel behind.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), pkg+".tmp-")
	if err != nil {
		t.Fatalf("creating kernel directory: %v", err)
	}
	defer os.RemoveAll(tmp)
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
	}
	run(aptGet, "download", "-q", pkg)
	debs, err := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if err != nil || len(debs) != 1 {
		t.Fatalf("apt-get download %s: want one .deb, got %v (%v)", pkg, debs, err)
	}
	run(dpkgDeb, "-x", debs[0], "root")
	if err := os.Remove(debs[0]); err != nil {
		t.Fatalf("removing %s: %v", debs[0], err)
	}
	mods, err := os.ReadDir(filepath.Join(tmp, "root/lib/modules"))
	if err != nil || len(mods) != 1 {
		t.Fatalf("%s: want one lib/modules/<version>, got %d entries (%v)", pkg, len(mods), err)
	}
	run(depmod, "-b", "root", mods[0].Name())
	if err := os.Rename(tmp, dir); err != nil && !isExistErr(err) {
		t.Fatalf("moving kernel into the cache: %v", err)
	}
	k, err := loadKernel(dir)
	if err != nil {
		t.Fatalf("unpacked kernel %s: %v", pkg, err)
	}
	return k
}

// kernelPackage picks linux-image-<version> from apt-cache depends output.
func kernelPackage(aptDepends []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(aptDepends))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") && len(f[1]) > len("linux-image-") && f[1][len("linux-image-")] >= '0' && f[1][len("linux-image-")] <= '9' {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("apt-cache depends linux-image-amd64: no linux-image-<version> dependency in %q", aptDepends)
}

func loadKernel(dir string) (Kernel, error) {
	root := filepath.Join(dir, "root")
	mods, err := os.ReadDir(filepath.Join(root, "lib/modules"))
	if err != nil {
		return Kernel{}, err
	}
	if len(mods) != 1 {
		return Kernel{}, fmt.Errorf("want one lib/modules/<version>, got %d", len(mods))
	}
	v := mods[0].Name()
	k := Kernel{Version: v, Vmlinuz: filepath.Join(root, "boot", "vmlinuz-"+v), Root: root}
	for _, p := range []string{k.Vmlinuz, filepath.Join(root, "lib/modules", v, "modules.dep")} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, err
		}
	}
	return k, nil
}

// ModulePaths lists the files of modules and their dependencies, in load
// order, relative to k.Root.
func (k Kernel) ModulePaths(t TB, modules ...string) []string {
	t.Helper()
	modprobe := RequireTool(t, "modprobe")
	seen := map[string]bool{}
	var paths []string
	for _, m := range modules {
		out, err := exec.Command(modprobe, "-d", k.Root, "-S", k.Version, "--show-depends", m).CombinedOutput()
		if err != nil {
			t.Fatalf("modprobe --show-depends %s: %v\n%s", m, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "insmod" {
				continue // builtin modules print "builtin <name>"
			}
			rel, err := filepath.Rel(k.Root, f[1])
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("modprobe --show-depends %s: module %s outside %s", m, f[1], k.Root)
			}
			if !seen[rel] {
				seen[rel] = true
				paths = append(paths, rel)
			}
		}
	}
	return paths
}

// isExistErr reports whether a rename failed because another run filled
// the cache first.
func isExistErr(err error) bool {
	return errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY)
}
