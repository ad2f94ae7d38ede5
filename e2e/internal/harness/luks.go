package harness

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// LUKSMetadata is the part of a LUKS2 header's JSON metadata the scenarios
// check, as cryptsetup (an independent reader) prints it.
type LUKSMetadata struct {
	Keyslots map[string]struct {
		Type string `json:"type"`
	} `json:"keyslots"`
	Tokens map[string]struct {
		Type string `json:"type"`
		// Keyed and Generation are fields of Cloister's token.
		Keyed      bool   `json:"keyed"`
		Generation uint32 `json:"generation"`
	} `json:"tokens"`
	Segments map[string]struct {
		Type       string `json:"type"`
		Offset     string `json:"offset"`
		Encryption string `json:"encryption"`
		SectorSize int    `json:"sector_size"`
	} `json:"segments"`
}

// luksHeaderBytes is what is copied out of the partition for luksDump: the
// default LUKS2 header with its keyslot area (16 MiB).
const luksHeaderBytes = 16 << 20

// LUKSDump reads the LUKS2 header of the first partition of a raw disk
// image with `cryptsetup luksDump --dump-json-metadata` (which refuses
// anything but LUKS2). The host cannot attach the partition without a loop
// device, so the header region is copied into a file first. It returns the
// metadata and the data segment's byte offset in the image.
func LUKSDump(t TB, disk string) (*LUKSMetadata, int64) {
	t.Helper()
	cryptsetup := RequireTool(t, "cryptsetup")
	off, size, err := FirstPartition(disk)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	hdr := filepath.Join(t.TempDir(), "luks-header")
	dst, err := os.Create(hdr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, io.NewSectionReader(src, off, min(size, luksHeaderBytes)))
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("copying the LUKS header out of %s: %v", disk, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cryptsetup, "luksDump", "--dump-json-metadata", hdr).Output()
	if err != nil {
		t.Fatalf("cryptsetup luksDump --dump-json-metadata of the state disk: %v", err)
	}
	var md LUKSMetadata
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatalf("luksDump JSON: %v\n%s", err, out)
	}
	seg, ok := md.Segments["0"]
	if !ok {
		t.Fatalf("luksDump: no segment 0 in %s", out)
	}
	segOff, err := strconv.ParseInt(seg.Offset, 10, 64)
	if err != nil {
		t.Fatalf("luksDump: segment 0 offset %q: %v", seg.Offset, err)
	}
	return &md, off + segOff
}
