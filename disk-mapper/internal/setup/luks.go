package setup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
)

// LUKS opens and formats state-disk headers with internal/cryptsetup.
type LUKS struct {
	// Options are the header options every state disk is formatted and
	// validated with.
	Options cryptsetup.FormatOptions
}

var _ headers = LUKS{}

// luksMagic and secondaryMagic start LUKS primary and LUKS2 secondary
// headers; secondary headers sit at one of these offsets.
var (
	luksMagic        = []byte("LUKS\xba\xbe")
	secondaryMagic   = []byte("SKUL\xba\xbe")
	secondaryOffsets = []int64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}
)

// hasLUKSHeader reports whether the disk carries a LUKS magic, primary or
// secondary. A disk with only a secondary header is not fresh: its primary
// header was damaged, and formatting over it would destroy what an operator
// may still restore.
func hasLUKSHeader(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, len(luksMagic))
	for i, off := range append([]int64{0}, secondaryOffsets...) {
		_, err := f.ReadAt(buf, off)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false, fmt.Errorf("reading %s at %d: %w", path, off, err)
		}
		want := secondaryMagic
		if i == 0 {
			want = luksMagic
		}
		if string(buf) == string(want) {
			return true, nil
		}
	}
	return false, nil
}

// Open implements headers: ErrNoHeader for a disk without LUKS magic,
// ErrHeaderInvalid (and the *cryptsetup.HeaderError naming the field) for a
// header cryptsetup refuses.
func (l LUKS) Open(path string) (Header, error) {
	ok, err := hasLUKSHeader(path)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNoHeader
	}
	d, err := cryptsetup.Open(path, l.Options)
	var he *cryptsetup.HeaderError
	if errors.As(err, &he) {
		return nil, fmt.Errorf("%w: %w", ErrHeaderInvalid, err)
	}
	if err != nil {
		return nil, err
	}
	return luksHeader{d}, nil
}

// Format implements headers.
func (l LUKS) Format(ctx context.Context, path string, passphrase []byte) (Header, error) {
	if _, err := cryptsetup.Format(ctx, path, passphrase, l.Options); err != nil {
		return nil, err
	}
	d, err := cryptsetup.Open(path, l.Options)
	if err != nil {
		return nil, fmt.Errorf("opening the header just formatted: %w", err)
	}
	return luksHeader{d}, nil
}

type luksHeader struct{ d *cryptsetup.Device }

var _ Header = luksHeader{}

func (h luksHeader) UUID() string { return h.d.UUID() }
func (h luksHeader) Close() error { return h.d.Close() }

func (h luksHeader) CheckKey(key []byte) error {
	_, err := h.d.CheckKey(key)
	if errors.Is(err, cryptsetup.ErrKeyRejected) {
		return fmt.Errorf("%w: %w", unlock.ErrWrongKey, err)
	}
	return err
}

func (h luksHeader) State() (DiskState, error) {
	s, err := h.d.ReadState()
	return DiskState{Keyed: s.Keyed, Generation: s.Generation}, err
}

// DeviceMapper opens state disks through device-mapper (dm-crypt).
type DeviceMapper struct {
	Options cryptsetup.FormatOptions
}

var _ mapper = DeviceMapper{}

// Activate implements mapper: it validates the header again and maps the
// disk as /dev/mapper/name.
func (m DeviceMapper) Activate(_ context.Context, path, name string, key []byte) (string, error) {
	d, err := cryptsetup.Open(path, m.Options)
	if err != nil {
		return "", err
	}
	defer d.Close()
	if err := d.Activate(name, key); err != nil {
		return "", err
	}
	return "/dev/mapper/" + name, nil
}

// Ext4 makes and mounts the state filesystem with mkfs.ext4 and mount(2).
type Ext4 struct{}

var _ filesystem = Ext4{}

// Mkfs implements filesystem.
func (Ext4) Mkfs(ctx context.Context, device string) error {
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "cloister-state", device).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", device, err, out)
	}
	return nil
}

// Mount implements filesystem: nodev, nosuid, so that nothing on the state
// disk becomes a device node or a privilege.
func (Ext4) Mount(_ context.Context, device, target string) error {
	if err := os.MkdirAll(filepath.Clean(target), 0o755); err != nil {
		return err
	}
	if err := unix.Mount(device, target, "ext4", unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", device, target, err)
	}
	return nil
}
