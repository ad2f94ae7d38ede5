package harness

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// customRoot copies the ext4 root image into dir (sparse, a reflink where
// the file system allows) and writes files into the copy with debugfs,
// without mounting: what an operator bakes into their image (trust anchors,
// the cluster policy). Parent directories are created 0755, files 0644.
func customRoot(t TB, dir, root string, files map[string][]byte) string {
	t.Helper()
	cp := RequireTool(t, "cp")
	debugfs := RequireTool(t, "debugfs")
	out := filepath.Join(dir, "root.raw")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if b, err := exec.CommandContext(ctx, cp, "--sparse=always", "--reflink=auto", root, out).CombinedOutput(); err != nil {
		t.Fatalf("copying root image: %v\n%s", err, b)
	}
	var script strings.Builder
	dirs := map[string]bool{}
	names := make([]string, 0, len(files))
	for name := range files {
		if !path.IsAbs(name) || path.Clean(name) != name || strings.ContainsAny(name, " \"\n") {
			t.Fatalf("harness: root file %q: want a clean absolute path without spaces or quotes", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		var parents []string
		for d := path.Dir(name); d != "/" && !dirs[d]; d = path.Dir(d) {
			parents = append(parents, d)
			dirs[d] = true
		}
		for j := len(parents) - 1; j >= 0; j-- {
			// mkdir of an existing directory only prints an error.
			script.WriteString("mkdir " + parents[j] + "\n")
		}
		local := filepath.Join(dir, "rootfile-"+strings.Repeat("x", i+1))
		if err := os.WriteFile(local, files[name], 0o644); err != nil {
			t.Fatal(err)
		}
		script.WriteString("rm " + name + "\n")
		script.WriteString("write " + local + " " + name + "\n")
		script.WriteString("sif " + name + " mode 0100644\n")
	}
	cmd := exec.CommandContext(ctx, debugfs, "-w", "-f", "-", out)
	cmd.Stdin = strings.NewReader(script.String())
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs writing root files: %v\n%s", err, b)
	}
	// debugfs exits 0 on failed requests: read every file back.
	for _, name := range names {
		got, err := exec.CommandContext(ctx, debugfs, "-R", "cat "+name, out).Output()
		if err != nil || string(got) != string(files[name]) {
			t.Fatalf("debugfs: %s not written into the root image (%v)\n%s", name, err, b)
		}
	}
	return out
}
