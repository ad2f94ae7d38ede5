package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// StateDiskLabel is the GPT partition label disk-mapper finds the state disk by.
const StateDiskLabel = "cloister-state"

// NewStateDisk creates a blank raw disk image of sizeMiB in dir with one GPT
// partition labelled cloister-state spanning the disk, as a cloud would
// attach an empty volume. It returns the image's path.
func NewStateDisk(t TB, dir string, sizeMiB int64) string {
	t.Helper()
	sgdisk := RequireTool(t, "sgdisk")
	path := filepath.Join(dir, "state.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("creating state disk: %v", err)
	}
	err = f.Truncate(sizeMiB << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("sizing state disk: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The partition starts at 1 MiB and has a whole number of MiB: LUKS2
	// with 4096-byte sectors refuses a device whose size is not a multiple
	// of 4096 (sgdisk's default end, before the backup GPT, is not).
	if sizeMiB < 4 {
		t.Fatalf("state disk of %d MiB: want at least 4", sizeMiB)
	}
	out, err := exec.CommandContext(ctx, sgdisk, fmt.Sprintf("--new=1:2048:+%dM", sizeMiB-2), "--change-name=1:"+StateDiskLabel, "--typecode=1:8300", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	return path
}

// ContainsAny reports which of the needles occur in the file at path (read
// in chunks, so a needle split across chunks is still found).
func ContainsAny(t TB, path string, needles ...[]byte) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	defer f.Close()
	longest := 0
	for _, n := range needles {
		longest = max(longest, len(n))
	}
	const chunk = 4 << 20
	buf := make([]byte, 0, chunk+longest)
	found := make([]bool, len(needles))
	for {
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		for i, needle := range needles {
			if !found[i] && len(needle) > 0 && bytes.Contains(buf, needle) {
				found[i] = true
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// A short read must not pass as "not found".
			t.Fatalf("reading %s: %v", path, err)
		}
		// Keep the tail so a needle across the boundary is found.
		keep := min(longest, len(buf))
		copy(buf, buf[len(buf)-keep:])
		buf = buf[:keep]
	}
	var out [][]byte
	for i, ok := range found {
		if ok {
			out = append(out, needles[i])
		}
	}
	return out
}
