package harness

import (
	"context"
	"debug/pe"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const efiStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// NewESP builds a unified kernel image (systemd's EFI stub with kernel,
// initrd and cmdline as sections) and puts it on a GPT disk image with an
// EFI system partition as \EFI\BOOT\BOOTX64.EFI, the path firmware boots
// without any boot entry. It returns the disk image's path.
//
// Why not QEMU's -kernel: OVMF's direct kernel boot measures the kernel as
// an EFI application before its "Calling EFI Application" event, and the
// go-tpm-tools event log parser (which our tpm validator uses) refuses that
// log; SeaBIOS's log has error separators it refuses as well. A boot from an
// ESP is what real UEFI machines do, and its log parses. The kernel command
// line is part of the measured image: keep it the same for every node of a
// cluster and configure nodes through SMBIOS OEM strings.
func NewESP(t TB, dir, kernel, initrd, cmdline string) string {
	t.Helper()
	stub := RequireFile(t, efiStub, "systemd-boot-efi")
	objcopy := RequireTool(t, "objcopy")
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

	cmdFile := filepath.Join(dir, "cmdline")
	writeFile(t, cmdFile, cmdline+"\x00")
	osrel := filepath.Join(dir, "os-release")
	writeFile(t, osrel, "ID=cloister-e2e\nNAME=\"Cloister e2e node\"\n")
	// Sections go after the stub's own, each at an aligned address above
	// the previous one.
	base, err := stubEnd(stub)
	if err != nil {
		t.Fatalf("reading %s: %v", stub, err)
	}
	uki := filepath.Join(dir, "uki.efi")
	args := []string{}
	addr := alignUp(base, 1<<20)
	for _, s := range []struct{ name, file string }{
		{".osrel", osrel}, {".cmdline", cmdFile}, {".linux", kernel}, {".initrd", initrd},
	} {
		fi, err := os.Stat(s.file)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--add-section", s.name+"="+s.file, "--change-section-vma", fmt.Sprintf("%s=0x%x", s.name, addr))
		addr = alignUp(addr+uint64(fi.Size()), 1<<20)
	}
	run(objcopy, append(args, stub, uki)...)

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
