package statedisk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSystem is a FAKE /dev, /sys and mountinfo laid out like the kernel's:
// disks vda (root on vda2) and vdb (state on vdb1), nvme0n1, and dm-0 (a
// dm-verity root over vdc1).
type fakeSystem struct {
	dev, sys, mountinfo string
}

func newFakeSystem(t *testing.T, rootDev string) *fakeSystem {
	t.Helper()
	root := t.TempDir()
	f := &fakeSystem{dev: filepath.Join(root, "dev"), sys: filepath.Join(root, "sys"), mountinfo: filepath.Join(root, "mountinfo")}
	devices := filepath.Join(f.sys, "devices")
	// name → (sysfs path under devices, major:minor, partition?)
	blocks := []struct{ name, path, num string }{
		{"vda", "pci0/virtio1/block/vda", "252:0"},
		{"vda1", "pci0/virtio1/block/vda/vda1", "252:1"},
		{"vda2", "pci0/virtio1/block/vda/vda2", "252:2"},
		{"vdb", "pci0/virtio2/block/vdb", "252:16"},
		{"vdb1", "pci0/virtio2/block/vdb/vdb1", "252:17"},
		{"vdc", "pci0/virtio3/block/vdc", "252:32"},
		{"vdc1", "pci0/virtio3/block/vdc/vdc1", "252:33"},
		{"nvme0n1", "pci0/nvme0/nvme/nvme0/nvme0n1", "259:0"},
		{"dm-0", "virtual/block/dm-0", "253:0"},
	}
	for _, b := range blocks {
		dir := filepath.Join(devices, b.path)
		mkdir(t, dir)
		if strings.Count(b.path, "/block/") == 1 && strings.HasPrefix(filepath.Base(filepath.Dir(dir)), "vd") {
			write(t, filepath.Join(dir, "partition"), "1\n")
		}
		symlink(t, dir, filepath.Join(f.sys, "class/block", b.name))
		symlink(t, dir, filepath.Join(f.sys, "dev/block", b.num))
		write(t, filepath.Join(f.dev, b.name), "")
	}
	mkdir(t, filepath.Join(devices, "virtual/block/dm-0/slaves"))
	symlink(t, filepath.Join(devices, "pci0/virtio3/block/vdc/vdc1"), filepath.Join(devices, "virtual/block/dm-0/slaves/vdc1"))
	symlink(t, "../../vdb1", filepath.Join(f.dev, "disk/by-partlabel/cloister-state"))
	symlink(t, "../../vda2", filepath.Join(f.dev, "disk/by-partlabel/root"))
	symlink(t, "../../vdc1", filepath.Join(f.dev, "disk/by-partlabel/verity-data"))
	symlink(t, "../../vdb1", filepath.Join(f.dev, "disk/by-id/virtio-state-part1"))
	symlink(t, "../../nvme0n1", filepath.Join(f.dev, "disk/by-id/nvme-Fake_State_Disk"))
	symlink(t, "../../vda1", filepath.Join(f.dev, "disk/by-partlabel/esp-on-boot-disk"))
	symlink(t, "../../nowhere", filepath.Join(f.dev, "disk/by-partlabel/dangling"))
	write(t, f.mountinfo, strings.Join([]string{
		"22 1 " + rootDev + " / / rw,relatime shared:1 - ext4 /dev/root rw",
		"23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw",
		"24 22 0:5 / /dev rw,nosuid shared:3 - devtmpfs devtmpfs rw",
		"",
	}, "\n"))
	return f
}

func (f *fakeSystem) options(label, byID string) Options {
	return Options{Label: label, ByID: byID, DevRoot: f.dev, SysRoot: f.sys, MountInfo: f.mountinfo}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	mkdir(t, filepath.Dir(path))
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	mkdir(t, filepath.Dir(link))
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestFindOnFakeSysfs(t *testing.T) {
	tests := []struct {
		name      string
		rootDev   string
		label     string
		byID      string
		wantPath  string
		wantWhole string
		wantErr   error
	}{
		{name: "default partition label", rootDev: "252:2", wantPath: "vdb1", wantWhole: "vdb"},
		{name: "by-id path to a partition", rootDev: "252:2", byID: "/dev/disk/by-id/virtio-state-part1", wantPath: "vdb1", wantWhole: "vdb"},
		{name: "by-id path to a whole nvme disk", rootDev: "252:2", byID: "/dev/disk/by-id/nvme-Fake_State_Disk", wantPath: "nvme0n1", wantWhole: "nvme0n1"},
		{name: "root on tmpfs has no boot disk", rootDev: "0:24", wantPath: "vdb1", wantWhole: "vdb"},
		{name: "label points at the root partition", rootDev: "252:2", label: "root", wantErr: ErrBootDisk},
		{name: "label points at another partition of the boot disk", rootDev: "252:2", label: "esp-on-boot-disk", wantErr: ErrBootDisk},
		{name: "label points at the disk under a dm-verity root", rootDev: "253:0", label: "verity-data", wantErr: ErrBootDisk},
		{name: "root is the state disk itself", rootDev: "252:17", wantErr: ErrBootDisk},
		{name: "missing label", rootDev: "252:2", label: "no-such-label", wantErr: ErrNotFound},
		{name: "missing by-id", rootDev: "252:2", byID: "/dev/disk/by-id/virtio-gone", wantErr: ErrNotFound},
		{name: "dangling label symlink", rootDev: "252:2", label: "dangling", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSystem(t, tt.rootDev)
			d, err := Find(f.options(tt.label, tt.byID))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || d != nil {
					t.Fatalf("Find = %+v, %v; want nil, %v", d, err, tt.wantErr)
				}
				// The error names what was looked for.
				want := tt.byID
				if want == "" {
					want = "/dev/disk/by-partlabel/" + tt.label
					if tt.label == "" {
						want += DefaultLabel
					}
				}
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if d.Path != filepath.Join(f.dev, tt.wantPath) || d.WholeDisk != tt.wantWhole {
				t.Errorf("Find = %+v, want path %s on disk %s", d, tt.wantPath, tt.wantWhole)
			}
		})
	}
}

func TestFindRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{ByID: "/dev/sdb"},
		{ByID: "/dev/disk/by-id/../../sda"},
		{Label: "../by-id/x"},
		{Label: ".."},
	} {
		if d, err := Find(o); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Find(%+v) = %+v, %v; want an option error", o, d, err)
		}
	}
}

func TestFindWithoutRootMount(t *testing.T) {
	f := newFakeSystem(t, "252:2")
	write(t, f.mountinfo, "23 22 0:21 / /proc rw - proc proc rw\n")
	if d, err := Find(f.options("", "")); err == nil {
		t.Fatalf("Find = %+v without a root mount in mountinfo; want an error (never skip the boot-disk check)", d)
	}
}
