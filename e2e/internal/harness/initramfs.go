package harness

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BusyboxInitramfs builds a gzipped newc initramfs in dir: busybox-static
// as every tool, the kernel's modules (with dependencies, in load order) and
// script as /init. Before script runs, /init mounts proc, sys and devtmpfs
// (Debian's kernel does not mount /dev by itself), installs the busybox
// applets and loads the modules. It returns the initramfs's path.
func BusyboxInitramfs(t TB, dir string, k Kernel, script string, modules ...string) string {
	t.Helper()
	busybox := RequireFile(t, "/bin/busybox", "busybox-static")
	cpio := RequireTool(t, "cpio")
	// Debian's busybox package is dynamic; busybox-static is what an
	// initramfs without libc needs.
	if out, err := exec.Command("file", "-L", busybox).Output(); err == nil && !bytes.Contains(out, []byte("statically linked")) {
		t.Skipf("%s is not statically linked: apt-get install busybox-static", busybox)
	}

	tree := filepath.Join(dir, "initramfs")
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "mnt", "etc"} {
		mkdirAll(t, filepath.Join(tree, d))
	}
	copyFile(t, busybox, filepath.Join(tree, "bin/busybox"), 0o755)
	var load strings.Builder
	for _, rel := range k.ModulePaths(t, modules...) {
		mkdirAll(t, filepath.Join(tree, filepath.Dir(rel)))
		copyFile(t, filepath.Join(k.Root, rel), filepath.Join(tree, rel), 0o644)
		fmt.Fprintf(&load, "insmod /%s\n", rel)
	}
	init := "#!/bin/busybox sh\n" +
		"/bin/busybox --install -s /bin\n" +
		"export PATH=/bin\n" +
		"mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n" +
		load.String() + script
	if err := os.WriteFile(filepath.Join(tree, "init"), []byte(init), 0o755); err != nil {
		t.Fatalf("writing /init: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	find := exec.CommandContext(ctx, "find", ".", "-mindepth", "1")
	find.Dir = tree
	list, err := find.Output()
	if err != nil {
		t.Fatalf("listing the initramfs tree: %v", err)
	}
	var archive bytes.Buffer
	pack := exec.CommandContext(ctx, cpio, "-o", "-H", "newc", "--quiet", "--owner", "0:0")
	pack.Dir, pack.Stdin, pack.Stdout = tree, bytes.NewReader(list), &archive
	var stderr bytes.Buffer
	pack.Stderr = &stderr
	if err := pack.Run(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, stderr.Bytes())
	}
	path := filepath.Join(dir, "initramfs.cpio.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("creating initramfs: %v", err)
	}
	zw := gzip.NewWriter(f)
	_, err = io.Copy(zw, &archive)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("writing initramfs: %v", err)
	}
	return path
}

func mkdirAll(t TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating %s: %v", dir, err)
	}
}

func copyFile(t TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("copying %s: %v", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		t.Fatalf("copying to %s: %v", dst, err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
}
