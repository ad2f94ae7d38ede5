package discovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultSMBIOSRoot is where Linux shows the SMBIOS structures.
const DefaultSMBIOSRoot = "/sys/firmware/dmi/entries"

const (
	// smbiosOEMStrings is the SMBIOS structure type of OEM strings.
	smbiosOEMStrings = 11
	// maxSMBIOSEntry bounds one structure: its formatted area is at most
	// 255 bytes and QEMU's strings are short, so 64 KiB is generous.
	maxSMBIOSEntry = 64 << 10
	// maxSMBIOSEntries bounds how many type 11 structures are read.
	maxSMBIOSEntries = 64
)

// SMBIOS reads the configuration from SMBIOS type 11 OEM strings, one
// "cloister.key=value" per string, as QEMU's
// "-smbios type=11,value=cloister.join=10.0.2.2:9000" passes them.
type SMBIOS struct {
	// Root is the directory of SMBIOS entries (default DefaultSMBIOSRoot).
	Root string
}

var _ Discovery = SMBIOS{}

// Discover implements Discovery.
func (s SMBIOS) Discover(_ context.Context) (*Config, error) {
	root := s.Root
	if root == "" {
		root = DefaultSMBIOSRoot
	}
	dirs, err := filepath.Glob(filepath.Join(root, "11-*"))
	if err != nil {
		return nil, fmt.Errorf("discovery: SMBIOS: %w", err)
	}
	if len(dirs) > maxSMBIOSEntries {
		return nil, fmt.Errorf("discovery: SMBIOS: want at most %d OEM-strings structures, got %d", maxSMBIOSEntries, len(dirs))
	}
	sort.Strings(dirs)
	var pairs [][2]string
	for _, d := range dirs {
		raw, err := readLimited(filepath.Join(d, "raw"), maxSMBIOSEntry)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("discovery: SMBIOS %s: %w", filepath.Base(d), err)
		}
		strs, err := ParseSMBIOS(raw)
		if err != nil {
			return nil, fmt.Errorf("discovery: SMBIOS %s: %w", filepath.Base(d), err)
		}
		for _, str := range strs {
			key, val, ok := strings.Cut(str, "=")
			if !ok {
				continue
			}
			pairs = append(pairs, [2]string{key, val})
		}
	}
	return fromPairs("SMBIOS OEM strings", pairs)
}

// ParseSMBIOS returns the strings of one raw SMBIOS type 11 (OEM strings)
// structure, as read from /sys/firmware/dmi/entries/11-*/raw: a 4-byte header
// (type, length of the formatted area, handle), the count of strings at
// offset 4, then the strings, each NUL-terminated, ending with an extra NUL.
func ParseSMBIOS(raw []byte) ([]string, error) {
	if len(raw) > maxSMBIOSEntry {
		return nil, fmt.Errorf("structure larger than %d bytes", maxSMBIOSEntry)
	}
	if len(raw) < 5 {
		return nil, fmt.Errorf("structure: want at least 5 bytes, got %d", len(raw))
	}
	if raw[0] != smbiosOEMStrings {
		return nil, fmt.Errorf("type: want %d (OEM strings), got %d", smbiosOEMStrings, raw[0])
	}
	length := int(raw[1])
	if length < 5 || length > len(raw) {
		return nil, fmt.Errorf("length: want 5-%d, got %d", len(raw), length)
	}
	count := int(raw[4])
	table := raw[length:]
	var strs []string
	for len(table) > 0 && table[0] != 0 {
		end := strings.IndexByte(string(table), 0)
		if end < 0 {
			return nil, errors.New("strings: last string not terminated")
		}
		strs = append(strs, string(table[:end]))
		table = table[end+1:]
	}
	switch {
	case len(strs) == 0 && len(table) < 2:
		// An empty table is two NULs.
		return nil, errors.New("strings: want an empty table to end with two NULs")
	case len(strs) > 0 && len(table) < 1:
		return nil, errors.New("strings: table not terminated")
	}
	if len(strs) != count {
		return nil, fmt.Errorf("count: header says %d strings, table has %d", count, len(strs))
	}
	return strs, nil
}
