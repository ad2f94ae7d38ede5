package harness

import (
	"context"
	"crypto/aes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/xts"
)

// StateFS is the plaintext of a node's encrypted state file system,
// decrypted on the host: the host has no device-mapper, so the scenarios
// read what a node wrote (its markers, kubeadm's log, kubelet's files)
// through an independent path: cryptsetup unlocks a copy of the LUKS2
// header with the disk key and dumps the volume key, this file decrypts
// the data segment (aes-xts-plain64, the IV counting 512-byte sectors) and
// debugfs reads the ext4 image without mounting it.
type StateFS struct {
	image string
	// What WriteBack needs to encrypt the image into the disk again.
	disk         string
	cipher       *xts.Cipher
	dataOff      int64
	sector, size int64
}

// DecryptStateDisk decrypts the state disk image disk into a temporary
// plaintext image, with the passphrase passphraseFor returns for the disk's
// LUKS2 UUID (the derived disk key of the token's generation). Decrypt only
// a powered-off node's disk.
func DecryptStateDisk(t TB, disk string, passphraseFor func(diskUUID string) []byte) *StateFS {
	t.Helper()
	cryptsetup := RequireTool(t, "cryptsetup")
	md, dataOff := LUKSDump(t, disk)
	seg := md.Segments["0"]
	if seg.Encryption != "aes-xts-plain64" {
		t.Fatalf("state disk: segment encryption %q, this reader knows aes-xts-plain64 only", seg.Encryption)
	}
	partOff, partSize, err := FirstPartition(disk)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hdr := filepath.Join(dir, "header")
	copyRange(t, disk, hdr, partOff, min(partSize, luksHeaderBytes))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	uuid, err := exec.CommandContext(ctx, cryptsetup, "luksUUID", hdr).Output()
	if err != nil {
		t.Fatalf("cryptsetup luksUUID: %v", err)
	}
	keyFile := filepath.Join(dir, "passphrase")
	vkFile := filepath.Join(dir, "volume-key")
	if err := os.WriteFile(keyFile, passphraseFor(strings.TrimSpace(string(uuid))), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, cryptsetup, "luksDump", "--batch-mode", "--dump-volume-key",
		"--volume-key-file", vkFile, "--key-file", keyFile, hdr).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksDump --dump-volume-key: %v\n%s", err, out)
	}
	vk, err := os.ReadFile(vkFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := xts.NewCipher(aes.NewCipher, vk)
	if err != nil {
		t.Fatalf("volume key (%d bytes): %v", len(vk), err)
	}

	sector := int64(seg.SectorSize)
	dataSize := partOff + partSize - dataOff
	src, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	plain := filepath.Join(dir, "state.ext4")
	dst, err := os.Create(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	const chunk = 1 << 20
	in, out := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < dataSize; off += chunk {
		n, err := src.ReadAt(in[:min(chunk, dataSize-off)], dataOff+off)
		if err != nil && err != io.EOF {
			t.Fatalf("reading the state disk: %v", err)
		}
		n -= n % int(sector)
		for s := 0; s < n; s += int(sector) {
			// plain64: the IV is the 512-byte sector number.
			c.Decrypt(out[s:s+int(sector)], in[s:s+int(sector)], uint64((off+int64(s))/512))
		}
		if _, err := dst.WriteAt(out[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	// ext4's superblock magic (0xEF53 at byte 1080): the key and the IVs
	// were right.
	magic := make([]byte, 2)
	if _, err := dst.ReadAt(magic, 1080); err != nil || magic[0] != 0x53 || magic[1] != 0xef {
		t.Fatalf("decrypted state disk has no ext4 superblock (magic %x): wrong key or cipher layout", magic)
	}
	// The node was powered off, not shut down: replay the journal in this
	// private copy, as a mount would.
	fsck := RequireTool(t, "e2fsck")
	if out, err := exec.CommandContext(ctx, fsck, "-fy", plain).CombinedOutput(); err != nil {
		var exit *exec.ExitError
		// 1 and 2: errors corrected.
		if !errors.As(err, &exit) || exit.ExitCode() > 2 {
			t.Fatalf("e2fsck of the decrypted state disk: %v\n%s", err, out)
		}
	}
	return &StateFS{image: plain, disk: disk, cipher: c, dataOff: dataOff, sector: sector, size: dataSize}
}

// Remove deletes path from the plaintext image (debugfs, not mounted);
// WriteBack puts the change on the disk.
func (s *StateFS) Remove(t TB, path string) {
	t.Helper()
	debugfs := RequireTool(t, "debugfs")
	p := "/" + strings.TrimPrefix(path, "/")
	if strings.ContainsAny(p, " \"\n") {
		t.Fatalf("state fs: path %q: no spaces or quotes", p)
	}
	if _, err := s.ReadFile(t, p); err != nil {
		t.Fatalf("state fs: removing %s: %v", p, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, debugfs, "-w", "-R", "rm "+p, s.image).CombinedOutput(); err != nil {
		t.Fatalf("state fs: debugfs rm %s: %v\n%s", p, err, out)
	}
	if _, err := s.ReadFile(t, p); err == nil {
		t.Fatalf("state fs: %s still there after debugfs rm", p)
	}
}

// WriteBack encrypts the plaintext image into the disk's data segment
// again (the node must be powered off): what someone holding the disk
// key could do to a node's disk.
func (s *StateFS) WriteBack(t TB) {
	t.Helper()
	src, err := os.Open(s.image)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(s.disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 1 << 20
	in, out := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < s.size; off += chunk {
		n, err := src.ReadAt(in[:min(chunk, s.size-off)], off)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		n -= n % int(s.sector)
		for i := 0; i < n; i += int(s.sector) {
			s.cipher.Encrypt(out[i:i+int(s.sector)], in[i:i+int(s.sector)], uint64((off+int64(i))/512))
		}
		if _, err := dst.WriteAt(out[:n], s.dataOff+off); err != nil {
			t.Fatal(err)
		}
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// ReadFile returns the file at path (relative to the state file system's
// root, e.g. "k8s/var-lib-kubelet/config.yaml").
func (s *StateFS) ReadFile(t TB, path string) ([]byte, error) {
	t.Helper()
	debugfs := RequireTool(t, "debugfs")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := "/" + strings.TrimPrefix(path, "/")
	if strings.ContainsAny(p, " \"\n") {
		return nil, fmt.Errorf("state fs: path %q: no spaces or quotes", p)
	}
	// debugfs exits 0 when a request fails and says so on stderr.
	var stdout, stderr strings.Builder
	cmd := exec.CommandContext(ctx, debugfs, "-R", "cat "+p, s.image)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("state fs: debugfs cat %s: %w: %s", p, err, stderr.String())
	}
	if e := stderr.String(); strings.Contains(e, "not found") || strings.Contains(e, "Bad magic") || strings.Contains(e, "while ") {
		return nil, fmt.Errorf("state fs: %s: %s", p, strings.TrimSpace(e))
	}
	return []byte(stdout.String()), nil
}

func copyRange(t TB, from, to string, off, n int64) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, io.NewSectionReader(src, off, n))
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("copying %s: %v", from, err)
	}
}
