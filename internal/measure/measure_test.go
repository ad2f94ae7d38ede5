package measure

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// stubPath is systemd's EFI stub from Debian's systemd-boot-efi: a real PE
// image, the one make image builds the unified kernel image from.
const stubPath = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// requireFile returns a real artifact's content; missing, it fails under
// CI=true and skips elsewhere.
func requireFile(t testing.TB, path, pkg string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err == nil {
		return b
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI: %v (apt-get install %s)", path, err, pkg)
	}
	t.Skipf("%s missing (apt-get install %s): %v", path, pkg, err)
	return nil
}

func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI: %v (apt-get install %s)", name, err, pkg)
	}
	t.Skipf("%s missing (apt-get install %s): %v", name, pkg, err)
	return ""
}

// minimalPE is a small PE32+ image with two sections, for tests that need
// no real binary: headers in the first 0x200 bytes, .text and .data of
// 0x200 bytes each after them.
func minimalPE() []byte {
	img := make([]byte, 0x600)
	copy(img, "MZ")
	binary.LittleEndian.PutUint32(img[0x3c:], 0x40)
	copy(img[0x40:], "PE\x00\x00")
	coff := 0x44
	binary.LittleEndian.PutUint16(img[coff:], 0x8664)
	binary.LittleEndian.PutUint16(img[coff+2:], 2)
	binary.LittleEndian.PutUint16(img[coff+16:], 240)
	opt := coff + 20
	binary.LittleEndian.PutUint16(img[opt:], 0x20b)
	binary.LittleEndian.PutUint32(img[opt+60:], 0x200) // SizeOfHeaders
	binary.LittleEndian.PutUint32(img[opt+108:], 16)   // NumberOfRvaAndSizes
	sec := opt + 240
	for i, name := range []string{".text", ".data"} {
		h := img[sec+i*40:]
		copy(h, name)
		binary.LittleEndian.PutUint32(h[8:], 0x1f0)                 // VirtualSize
		binary.LittleEndian.PutUint32(h[12:], uint32(0x1000*(i+1))) // VirtualAddress
		binary.LittleEndian.PutUint32(h[16:], 0x200)                // SizeOfRawData
		binary.LittleEndian.PutUint32(h[20:], uint32(0x200*(i+1)))  // PointerToRawData
	}
	for i := 0x200; i < len(img); i++ {
		img[i] = byte(i)
	}
	return img
}

// withCertTable appends a certificate table and points data directory 4 at it.
func withCertTable(img []byte) []byte {
	f, err := parsePE(img)
	if err != nil {
		panic(err)
	}
	out := append(bytes.Clone(img), bytes.Repeat([]byte{0xce}, 64)...)
	binary.LittleEndian.PutUint32(out[f.certDirOff:], uint32(len(img)))
	binary.LittleEndian.PutUint32(out[f.certDirOff+4:], 64)
	return out
}

func TestPEHashIgnoresWhatSigningChanges(t *testing.T) {
	for name, img := range map[string][]byte{"minimal PE": minimalPE(), "systemd EFI stub": requireFile(t, stubPath, "systemd-boot-efi")} {
		t.Run(name, func(t *testing.T) {
			want, err := PEHash(img)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parsePE(img)
			if err != nil {
				t.Fatal(err)
			}
			sum := bytes.Clone(img)
			binary.LittleEndian.PutUint32(sum[f.checksumOff:], 0xdeadbeef)
			signed := withCertTable(img)
			for what, changed := range map[string][]byte{"checksum set": sum, "certificate table appended": signed} {
				if got, err := PEHash(changed); err != nil || got != want {
					t.Errorf("%s: want the same hash %x, got %x (%v)", what, want, got, err)
				}
			}
		})
	}
}

func TestPEHashSeesEveryOtherByte(t *testing.T) {
	img := minimalPE()
	want, err := PEHash(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := parsePE(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{0, 0x3d, 0x48, f.checksumOff - 1, f.checksumOff + 4, f.certDirOff - 1, f.certDirOff + 8, 0x1ff, 0x200, 0x3ff, 0x5ff} {
		changed := bytes.Clone(img)
		changed[off] ^= 0x80
		got, err := PEHash(changed)
		if err != nil {
			// A header byte may make the image unreadable: also a change.
			continue
		}
		if got == want {
			t.Errorf("byte %#x flipped: hash unchanged", off)
		}
	}
	// Data after the last section (no certificate table) is hashed too.
	if got, err := PEHash(append(bytes.Clone(img), 1)); err != nil || got == want {
		t.Errorf("appended byte: want another hash, got %x (%v)", got, err)
	}
}

func TestPEHashRefusesMalformed(t *testing.T) {
	img := minimalPE()
	f, _ := parsePE(img)
	cases := map[string]func([]byte) []byte{
		"empty":                         func([]byte) []byte { return nil },
		"no MZ":                         func(b []byte) []byte { b[0] = 'X'; return b },
		"e_lfanew past the end":         func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x3c:], 0xfffffff0); return b },
		"unknown optional header magic": func(b []byte) []byte { b[0x58] = 0x99; return b },
		"section raw data past the end": func(b []byte) []byte { return b[:0x500] },
		"too many data directories":     func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x58+108:], 17); return b },
		"SizeOfHeaders past the end":    func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x58+60:], 0x10000); return b },
		"certificate table not at the end": func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[f.certDirOff:], 0x200)
			binary.LittleEndian.PutUint32(b[f.certDirOff+4:], 16)
			return b
		},
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			d, err := PEHash(change(bytes.Clone(img)))
			if !errors.Is(err, ErrMalformed) || d != ([32]byte{}) {
				t.Fatalf("want ErrMalformed and no hash, got %x, %v", d, err)
			}
		})
	}
}

// buildUKI assembles a unified kernel image from the real stub with
// objcopy, by make image's recipe (sections at 1 MiB-aligned addresses).
func buildUKI(t *testing.T, sections [][2]string) []byte {
	t.Helper()
	requireFile(t, stubPath, "systemd-boot-efi")
	objcopy := requireTool(t, "objcopy", "binutils")
	dir := t.TempDir()
	addr := uint64(1 << 24)
	var args []string
	for _, s := range sections {
		p := filepath.Join(dir, s[0])
		if err := os.WriteFile(p, []byte(s[1]), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--add-section", s[0]+"="+p, "--change-section-vma", fmt.Sprintf("%s=0x%x", s[0], addr))
		addr += 1 << 20
	}
	out := filepath.Join(dir, "uki.efi")
	if b, err := exec.Command(objcopy, append(args, stubPath, out)...).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPredictUKIBuiltFromTheRealStub(t *testing.T) {
	kernel := string(minimalPE())
	const cmdline = "root=LABEL=x ro console=ttyS0\x00"
	uki := buildUKI(t, [][2]string{{".osrel", "ID=test\n"}, {".cmdline", cmdline}, {".linux", kernel}, {".initrd", "initrd bytes"}})
	for name, want := range map[string]string{".osrel": "ID=test\n", ".cmdline": cmdline, ".linux": kernel, ".initrd": "initrd bytes"} {
		got, ok, err := Section(uki, name)
		if err != nil || !ok || string(got) != want {
			t.Errorf("section %s: want the %d bytes added, got %d bytes (%v, %v)", name, len(want), len(got), ok, err)
		}
	}
	events, err := Predict(uki)
	if err != nil {
		t.Fatal(err)
	}
	ukiHash, _ := PEHash(uki)
	kernelHash, _ := PEHash([]byte(kernel))
	h := func(s string) [32]byte { return sha256.Sum256([]byte(s)) }
	utf16 := func(s string) string {
		var b []byte
		for _, c := range []byte(s) {
			b = append(b, c, 0)
		}
		return string(append(b, 0, 0))
	}
	want := []struct {
		pcr    int
		digest [32]byte
	}{
		{4, h("Calling EFI Application from Boot Option")},
		{4, h("\x00\x00\x00\x00")},
		{4, ukiHash},
		{4, kernelHash},
		{9, h(utf16("root=LABEL=x ro console=ttyS0"))},
		{9, h("initrd bytes")},
		// systemd-stub's order: .linux, .osrel, .cmdline, .initrd.
		{11, h(".linux\x00")}, {11, h(kernel)},
		{11, h(".osrel\x00")}, {11, h("ID=test\n")},
		{11, h(".cmdline\x00")}, {11, h(cmdline)},
		{11, h(".initrd\x00")}, {11, h("initrd bytes")},
	}
	if len(events) != len(want) {
		t.Fatalf("want %d events, got %d: %+v", len(want), len(events), events)
	}
	for i, w := range want {
		if events[i].PCR != w.pcr || events[i].Digest != w.digest {
			t.Errorf("event %d: want pcr %d %x, got pcr %d %x (%s)", i, w.pcr, w.digest, events[i].PCR, events[i].Digest, events[i].Description)
		}
	}
	pcrs := Replay(events, PredictedPCRs)
	if pcrs[12] != ([32]byte{}) || pcrs[13] != ([32]byte{}) {
		t.Errorf("PCRs 12 and 13: want zero, got %x %x", pcrs[12], pcrs[13])
	}
	var p11 [32]byte
	for _, w := range want[6:] {
		p11 = Extend(p11, w.digest)
	}
	if pcrs[11] != p11 {
		t.Errorf("PCR 11: want %x, got %x", p11, pcrs[11])
	}

	// A signed image (certificate table appended) measures the same.
	if d, err := PEHash(withCertTable(uki)); err != nil || d != ukiHash {
		t.Errorf("signed image: want the same Authenticode hash, got %x (%v)", d, err)
	}
}

func TestPredictRefusesAnImageWithoutKernelOrCmdline(t *testing.T) {
	for _, missing := range []string{".linux", ".cmdline"} {
		var secs [][2]string
		for _, s := range [][2]string{{".cmdline", "x\x00"}, {".linux", string(minimalPE())}} {
			if s[0] != missing {
				secs = append(secs, s)
			}
		}
		if _, err := Predict(buildUKI(t, secs)); err == nil {
			t.Errorf("image without %s: want an error", missing)
		}
	}
}

func TestLoadOptions(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a b\x00", "a b"},
		{"a b", "a b"},
		{"a\nb  \n\x00junk", "a b"},
		{"", ""},
	} {
		got, err := loadOptions([]byte(tc.in))
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		var want []byte
		for _, c := range []byte(tc.want) {
			want = append(want, c, 0)
		}
		want = append(want, 0, 0)
		if !bytes.Equal(got, want) {
			t.Errorf("%q: want %q, got %q", tc.in, want, got)
		}
	}
	if _, err := loadOptions([]byte("caf\xc3\xa9")); err == nil {
		t.Error("non-ASCII command line: want an error")
	}
}

// TestPEChecksumAgreesWithTheLinker compares peChecksum with the CheckSum
// the linker wrote into systemd's stub and objcopy into a UKI.
func TestPEChecksumAgreesWithTheLinker(t *testing.T) {
	uki := buildUKI(t, [][2]string{{".cmdline", "x\x00"}, {".linux", string(minimalPE())}})
	for name, img := range map[string][]byte{"systemd EFI stub": requireFile(t, stubPath, "systemd-boot-efi"), "objcopy's UKI": uki} {
		f, err := parsePE(img)
		if err != nil {
			t.Fatal(err)
		}
		want := binary.LittleEndian.Uint32(img[f.checksumOff:])
		if got := peChecksum(img, f.checksumOff); got != want {
			t.Errorf("%s: header says %#x, computed %#x", name, want, got)
		}
	}
}

func TestNormalizeMakesTheHashIndependentOfTheBuildTime(t *testing.T) {
	a := buildUKI(t, [][2]string{{".cmdline", "x\x00"}, {".linux", string(minimalPE())}})
	b := bytes.Clone(a)
	// Another build time, as objcopy stamps it.
	binary.LittleEndian.PutUint32(b[binary.LittleEndian.Uint32(b[0x3c:])+8:], 0x12345678)
	if ha, _ := PEHash(a); ha == must(PEHash(b)) {
		t.Fatal("the time stamp should be part of the Authenticode hash")
	}
	for _, img := range [][]byte{a, b} {
		if err := Normalize(img, 1700000000); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(a, b) {
		t.Error("normalized images differ")
	}
	f, _ := parsePE(a)
	if got, want := binary.LittleEndian.Uint32(a[f.checksumOff:]), peChecksum(a, f.checksumOff); got != want {
		t.Errorf("checksum after Normalize: %#x, want %#x", got, want)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
