package harness

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// FirstPartition returns the byte offset and size of the first GPT
// partition in a raw disk image (512-byte sectors, as NewStateDisk makes).
func FirstPartition(path string) (offset, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	const sector = 512
	hdr := make([]byte, 92)
	if _, err := f.ReadAt(hdr, sector); err != nil {
		return 0, 0, fmt.Errorf("reading GPT header of %s: %w", path, err)
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return 0, 0, fmt.Errorf("%s: no GPT header", path)
	}
	entries := int64(binary.LittleEndian.Uint64(hdr[72:80]))
	entry := make([]byte, 48)
	if _, err := f.ReadAt(entry, entries*sector); err != nil && err != io.EOF {
		return 0, 0, fmt.Errorf("reading GPT entry of %s: %w", path, err)
	}
	first := int64(binary.LittleEndian.Uint64(entry[32:40]))
	last := int64(binary.LittleEndian.Uint64(entry[40:48]))
	if first == 0 || last < first {
		return 0, 0, fmt.Errorf("%s: first GPT entry is empty", path)
	}
	return first * sector, (last - first + 1) * sector, nil
}
