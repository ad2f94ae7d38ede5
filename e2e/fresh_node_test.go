package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
	"github.com/cloister-dev/cloister/e2e/internal/scenario"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// Ports the image's daemons serve on (disk-mapper recovery, then the
// bootstrapper's init server, on 9100; status.v1 on 9101).
// plaintextMarkers are names the guest writes into /var/lib/cloister on a
// fresh node: ext4's lost+found, and the bootstrapper's kubeadm log it opens
// before it waits. On an encrypted disk they must not be in the raw image.
var plaintextMarkers = [][]byte{[]byte("lost+found"), []byte("kubeadm.log")}

// TestFreshNodeFormatsItsStateDisk boots the node image (OVMF measured boot,
// vTPM) with a blank state disk: disk-mapper formats it LUKS2 and mounts it,
// the bootstrapper waits for init or join (status.v1 through the 127.0.0.1
// forward says so); then, on the host, cryptsetup reads a LUKS2 header with
// aes-xts-plain64 and our token, and the names the guest wrote into the state
// directory are not in the raw disk image while its data area is written.
func TestFreshNodeFormatsItsStateDisk(t *testing.T) {
	harness.Enabled(t)
	img := harness.NodeImage(t)
	node := harness.NewNode(t, harness.NodeConfig{
		Name:         "fresh",
		ESP:          harness.NewESP(t, t.TempDir(), img.UKI),
		RootDisk:     img.Root,
		OEMStrings:   []string{"cloister.role=control-plane", "cloister.node=fresh-1"},
		StateDiskMiB: 512,
		Forwards:     []int{scenario.AttestedPort, scenario.StatusPort},
		TPMCA:        harness.NewTPMCA(t),
		OVMF:         true,
		MemoryMiB:    2048,
		Timeout:      8 * time.Minute,
	})
	vm := node.Boot(t)
	vm.Console.FailOn = scenario.BootFailures
	vm.Expect(t, scenario.DiskFormatted, 5*time.Minute)
	if m := vm.Expect(t, scenario.BootstrapperWaiting, 2*time.Minute); m[1] != "fresh-1" {
		t.Errorf("bootstrapper's node name: want fresh-1 (SMBIOS OEM string), got %s", m[1])
	}
	st := harness.WaitStatus(t, node.Addr(scenario.StatusPort), time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && r.GetPhase() == "waiting-for-init-or-join"
	})
	t.Logf("bootstrapper waiting after %s; disk %s", time.Since(vm.Started).Round(100*time.Millisecond), st.GetDiskUuid())
	// ext4 commits its journal every 5 s; give the directory entries time
	// to reach the disk before the power is cut.
	time.Sleep(7 * time.Second)
	vm.Stop()

	md, dataOffset := harness.LUKSDump(t, node.StateDisk)
	seg := md.Segments["0"]
	t.Logf("luksDump: segment 0 %+v, tokens %+v, %d keyslot(s); data at byte %d", seg, md.Tokens, len(md.Keyslots), dataOffset)
	if seg.Type != "crypt" || seg.Encryption != "aes-xts-plain64" || seg.SectorSize != 4096 {
		t.Errorf("LUKS2 segment 0: want crypt aes-xts-plain64 with 4096-byte sectors, got %+v", seg)
	}
	if tok, ok := md.Tokens["0"]; !ok || tok.Type != "cloister-state" || len(md.Tokens) != 1 {
		t.Errorf("LUKS2 tokens: want exactly token 0 of type cloister-state, got %+v", md.Tokens)
	} else if tok.Keyed || tok.Generation != 0 {
		t.Errorf("fresh disk's token: want not keyed, generation 0 (one-time passphrase), got %+v", tok)
	}
	if len(md.Keyslots) != 1 {
		t.Errorf("LUKS2 keyslots: want exactly one (the one-time passphrase), got %d", len(md.Keyslots))
	}

	// The data area was written: its first block is ciphertext (few zero
	// bytes), not an unwritten or plaintext ext4 block (mostly zeros).
	if zeros := zeroBytes(t, node.StateDisk, dataOffset, 4096); zeros > 256 {
		t.Errorf("first 4 KiB of the data segment: %d zero bytes; want ciphertext (about 16)", zeros)
	}
	if leaked := harness.ContainsAny(t, node.StateDisk, plaintextMarkers...); len(leaked) > 0 {
		t.Errorf("raw state disk shows plaintext the guest wrote: %q", leaked)
	}
}

// TestPlaintextMarkersShowOnAnUnencryptedDisk is the control for the check
// above: the same search finds the same names on an unencrypted ext4 image
// that holds a kubeadm.log, so "not found" there means encrypted, not a
// search that cannot find anything.
func TestPlaintextMarkersShowOnAnUnencryptedDisk(t *testing.T) {
	harness.Enabled(t)
	mkfs := harness.RequireTool(t, "mkfs.ext4")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "kubeadm.log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "plain.raw")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, mkfs, "-q", "-F", "-d", tree, raw, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if found := harness.ContainsAny(t, raw, plaintextMarkers...); len(found) != len(plaintextMarkers) {
		t.Fatalf("unencrypted ext4: want all of %q found, got %q", plaintextMarkers, found)
	}
	if zeros := zeroBytes(t, raw, 0, 4096); zeros <= 256 {
		t.Fatalf("unencrypted ext4's first block: %d zero bytes; the ciphertext check would not tell it apart", zeros)
	}
}

func zeroBytes(t testing.TB, path string, off int64, n int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatalf("reading %s at %d: %v", path, off, err)
	}
	return bytes.Count(buf, []byte{0})
}
