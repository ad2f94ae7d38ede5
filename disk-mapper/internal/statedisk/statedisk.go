package statedisk

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultLabel is the GPT partition label of the state disk.
const DefaultLabel = "cloister-state"

var (
	// ErrNotFound is wrapped when no device answers to the identifier.
	ErrNotFound = errors.New("state disk not found")
	// ErrBootDisk is wrapped when the identifier points at the disk that
	// holds the root filesystem.
	ErrBootDisk = errors.New("state disk is on the boot disk")
)

// Options say how to find the state disk. The zero value looks for the
// partition labelled DefaultLabel on the running system.
type Options struct {
	// Label is the GPT partition label (default DefaultLabel). Ignored when
	// ByID is set.
	Label string
	// ByID is a /dev/disk/by-id/... path that names the state disk.
	ByID string
	// DevRoot, SysRoot and MountInfo locate /dev, /sys and
	// /proc/self/mountinfo (tests point them at fake trees).
	DevRoot, SysRoot, MountInfo string
}

// Disk is a resolved state disk.
type Disk struct {
	// Path is the device node, symlinks resolved (e.g. /dev/vdb1).
	Path string
	// Identifier is what the disk was found by.
	Identifier string
	// WholeDisk is the name of the disk the device lives on (e.g. vdb).
	WholeDisk string
}

func (o Options) withDefaults() (Options, error) {
	if o.DevRoot == "" {
		o.DevRoot = "/dev"
	}
	if o.SysRoot == "" {
		o.SysRoot = "/sys"
	}
	if o.MountInfo == "" {
		o.MountInfo = "/proc/self/mountinfo"
	}
	if o.ByID != "" {
		if !strings.HasPrefix(o.ByID, "/dev/disk/by-id/") || strings.Contains(o.ByID, "..") {
			return o, fmt.Errorf("statedisk: by-id path %q: want /dev/disk/by-id/<name>", o.ByID)
		}
		return o, nil
	}
	if o.Label == "" {
		o.Label = DefaultLabel
	}
	if strings.ContainsAny(o.Label, "/\x00") || o.Label == "." || o.Label == ".." {
		return o, fmt.Errorf("statedisk: partition label %q: must not contain '/' or be '.' or '..'", o.Label)
	}
	return o, nil
}

// identifier is the /dev path the disk is looked up by, in the real /dev.
func (o Options) identifier() string {
	if o.ByID != "" {
		return o.ByID
	}
	return "/dev/disk/by-partlabel/" + o.Label
}

// Find resolves the state disk. Its errors name what was looked for; they
// wrap ErrNotFound when nothing answers to the identifier and ErrBootDisk
// when it is the disk of the root filesystem.
func Find(opts Options) (*Disk, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	id := o.identifier()
	link := filepath.Join(o.DevRoot, strings.TrimPrefix(id, "/dev/"))
	path, err := filepath.EvalSymlinks(link)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("looking for state disk %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("resolving state disk %s: %w", id, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("state disk %s -> %s: %w", id, path, err)
	}
	// Fake trees in tests hold regular files; a real /dev holds device nodes.
	if fi.IsDir() {
		return nil, fmt.Errorf("state disk %s -> %s: a directory, not a block device", id, path)
	}
	name := filepath.Base(path)
	whole, err := o.wholeDisk(name)
	if err != nil {
		return nil, fmt.Errorf("state disk %s -> %s: %w", id, path, err)
	}
	bootDisks, err := o.rootDisks()
	if err != nil {
		return nil, fmt.Errorf("finding the boot disk to keep it apart from state disk %s: %w", id, err)
	}
	if bootDisks[whole] {
		return nil, fmt.Errorf("state disk %s -> %s is on disk %s, which holds the root filesystem: %w", id, path, whole, ErrBootDisk)
	}
	return &Disk{Path: path, Identifier: id, WholeDisk: whole}, nil
}

// wholeDisk returns the disk a block device lives on: the device itself, or
// the parent directory of a partition in sysfs.
func (o Options) wholeDisk(name string) (string, error) {
	real, err := filepath.EvalSymlinks(filepath.Join(o.SysRoot, "class/block", name))
	if err != nil {
		return "", fmt.Errorf("block device %s not in sysfs: %w", name, err)
	}
	return o.parentIfPartition(real), nil
}

func (o Options) parentIfPartition(sysPath string) string {
	if _, err := os.Stat(filepath.Join(sysPath, "partition")); err == nil {
		return filepath.Base(filepath.Dir(sysPath))
	}
	return filepath.Base(sysPath)
}

// rootDisks returns the whole disks under the root filesystem: the disk of
// its device and, for stacked devices (dm-verity, dm-crypt, md), the disks of
// every device below it. A root with no block device (tmpfs, overlay in an
// initramfs) has none.
func (o Options) rootDisks() (map[string]bool, error) {
	devNum, err := o.rootDevice()
	if err != nil {
		return nil, err
	}
	disks := map[string]bool{}
	if strings.HasPrefix(devNum, "0:") { // anonymous device: tmpfs, overlayfs
		return disks, nil
	}
	real, err := filepath.EvalSymlinks(filepath.Join(o.SysRoot, "dev/block", devNum))
	if err != nil {
		return nil, fmt.Errorf("root device %s not in sysfs: %w", devNum, err)
	}
	// Walk down through holders' slaves; bounded, so a looping fake tree
	// cannot hang us.
	queue := []string{real}
	for i := 0; len(queue) > 0 && i < 64; i++ {
		cur := queue[0]
		queue = queue[1:]
		disks[o.parentIfPartition(cur)] = true
		slaves, err := os.ReadDir(filepath.Join(cur, "slaves"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading slaves of %s: %w", filepath.Base(cur), err)
		}
		for _, s := range slaves {
			next, err := filepath.EvalSymlinks(filepath.Join(cur, "slaves", s.Name()))
			if err != nil {
				return nil, fmt.Errorf("resolving slave %s of %s: %w", s.Name(), filepath.Base(cur), err)
			}
			queue = append(queue, next)
		}
	}
	return disks, nil
}

// rootDevice returns the major:minor of the filesystem mounted at / from
// mountinfo.
func (o Options) rootDevice() (string, error) {
	f, err := os.Open(o.MountInfo)
	if err != nil {
		return "", err
	}
	defer f.Close()
	dev, err := parseRootDevice(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", o.MountInfo, err)
	}
	return dev, nil
}

// maxMountInfoLines bounds how much of mountinfo is read.
const maxMountInfoLines = 1 << 16

// parseRootDevice finds the root mount in mountinfo (proc(5): the 5th field
// is the mount point, the 3rd the device's major:minor). The last mount at /
// is the one in effect.
func parseRootDevice(r io.Reader) (string, error) {
	var dev string
	sc := bufio.NewScanner(r)
	for n := 0; sc.Scan(); n++ {
		if n >= maxMountInfoLines {
			return "", fmt.Errorf("more than %d mounts", maxMountInfoLines)
		}
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && fields[4] == "/" {
			dev = fields[2]
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if dev == "" {
		return "", errors.New("no root mount")
	}
	maj, min, ok := strings.Cut(dev, ":")
	if !ok || !isDigits(maj) || !isDigits(min) {
		return "", fmt.Errorf("root mount device %q: want major:minor", dev)
	}
	return dev, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
