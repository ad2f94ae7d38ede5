package harness

import (
	"context"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/internal/measure"
)

// ukiSections are the sections make image adds to systemd's EFI stub, in
// the order it adds them (hack/image/build.sh, step 6).
var ukiSections = []string{".osrel", ".cmdline", ".linux", ".initrd"}

// NewESP puts a unified kernel image on a GPT disk image with an EFI system
// partition as \EFI\BOOT\BOOTX64.EFI, the path firmware boots without any
// boot entry, and returns the disk image's path.
//
// Why not QEMU's -kernel: OVMF's direct kernel boot measures the kernel as
// an EFI application before its "Calling EFI Application" event, and the
// go-tpm-tools event log parser (which our tpm validator uses) refuses that
// log; SeaBIOS's log has error separators it refuses as well. A boot from an
// ESP is what real UEFI machines do, and its log parses. The kernel command
// line is part of the measured image: it is the same for every node, which
// is configured through SMBIOS OEM strings.
func NewESP(t TB, dir, uki string) string {
	t.Helper()
	sgdisk := RequireTool(t, "sgdisk")
	mkfs := RequireTool(t, "mkfs.vfat")
	mmd := RequireTool(t, "mmd")
	mcopy := RequireTool(t, "mcopy")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
	}
	// A GPT disk with one EFI system partition from 1 MiB; FAT written into
	// the file at that offset, never mounted.
	ukiInfo, err := os.Stat(uki)
	if err != nil {
		t.Fatal(err)
	}
	espMiB := ukiInfo.Size()>>20 + 16
	disk := filepath.Join(dir, "esp.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate((espMiB + 2) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("sizing ESP disk: %v", err)
	}
	run(sgdisk, fmt.Sprintf("--new=1:2048:+%dM", espMiB), "--typecode=1:ef00", "--change-name=1:ESP", disk)
	run(mkfs, "--offset=2048", disk, fmt.Sprint(espMiB<<10))
	img := disk + "@@1M"
	run(mmd, "-i", img, "::/EFI", "::/EFI/BOOT")
	run(mcopy, "-i", img, uki, "::/EFI/BOOT/BOOTX64.EFI")
	return disk
}

// RebuildUKI makes a unified kernel image in dir from uki, with the
// sections in replace instead of uki's, by make image's recipe: the EFI
// stub (uki without its added sections), then .osrel, .cmdline, .linux and
// .initrd, each at a 1 MiB-aligned address above the previous one. With
// nothing replaced it gives an image that measures like uki. It returns the
// new image's path. Tamper scenarios use it to change one part of a real
// image.
func RebuildUKI(t TB, dir, uki string, replace map[string][]byte) string {
	t.Helper()
	objcopy := RequireTool(t, "objcopy")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, objcopy, args...).CombinedOutput(); err != nil {
			t.Fatalf("objcopy %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	orig, err := os.ReadFile(uki)
	if err != nil {
		t.Fatal(err)
	}
	for name := range replace {
		if !slices.Contains(ukiSections, name) {
			t.Fatalf("harness: RebuildUKI: unknown section %q (want one of %v)", name, ukiSections)
		}
	}
	stub := filepath.Join(dir, "stub.efi")
	var rm []string
	for _, name := range ukiSections {
		rm = append(rm, "--remove-section", name)
	}
	run(append(rm, uki, stub)...)
	base, err := stubEnd(stub)
	if err != nil {
		t.Fatalf("reading %s: %v", stub, err)
	}
	args := []string{}
	addr := alignUp(base, 1<<20)
	for _, name := range ukiSections {
		data, ok := replace[name]
		if !ok {
			data, ok, err = measure.Section(orig, name)
			if err != nil || !ok {
				t.Fatalf("harness: %s has no section %s (%v)", uki, name, err)
			}
		}
		file := filepath.Join(dir, "section"+name)
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--add-section", name+"="+file, "--change-section-vma", fmt.Sprintf("%s=0x%x", name, addr))
		addr = alignUp(addr+uint64(len(data)), 1<<20)
	}
	out := filepath.Join(dir, "uki.efi")
	run(append(args, stub, out)...)
	// objcopy stamps the current time into the PE header; make image sets
	// the original's (SOURCE_DATE_EPOCH).
	rebuilt, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := measure.Normalize(rebuilt, peTimestamp(orig)); err != nil {
		t.Fatalf("normalizing %s: %v", out, err)
	}
	if err := os.WriteFile(out, rebuilt, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// peTimestamp is a PE image's COFF time stamp (0 if it has none).
func peTimestamp(img []byte) uint32 {
	if len(img) < 0x40 {
		return 0
	}
	off := int(binary.LittleEndian.Uint32(img[0x3c:]))
	if off < 0 || off+12 > len(img) {
		return 0
	}
	return binary.LittleEndian.Uint32(img[off+8:])
}

// stubEnd is the first virtual address after the stub's sections.
func stubEnd(path string) (uint64, error) {
	f, err := pe.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var imageBase uint64
	switch h := f.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		imageBase = h.ImageBase
	default:
		return 0, fmt.Errorf("%s: not a PE32+ image", path)
	}
	var end uint64
	for _, s := range f.Sections {
		end = max(end, uint64(s.VirtualAddress)+uint64(max(s.VirtualSize, s.Size)))
	}
	return imageBase + end, nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
