package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
	"github.com/cloister-dev/cloister/e2e/internal/scenario"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/measure"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

var (
	// verityOpened is the initrd's marker once the root is opened through
	// dm-verity with the root hash from the measured command line.
	verityOpened = regexp.MustCompile(`CLOISTER-MARKER verity-root (\S+) root_hash=([0-9a-f]{64})`)
	// verityCorrupted is dm-verity refusing a block of the root file system.
	verityCorrupted = regexp.MustCompile(`device-mapper: verity: [0-9:]+: data block \d+ is corrupted`)
	// cloisterStarted is any line of a Cloister daemon.
	cloisterStarted = regexp.MustCompile(`(disk-mapper|bootstrapper|joinservice)\[\d+\]:`)
)

// TestMeasuredBoot checks the image's predicted reference values against
// real boots under OVMF with a vTPM, one VM at a time:
//
//   - the genuine image, with 1 and with 2 vCPUs: `cloister verify` with
//     the reference values make image predicted for that shape passes, so
//     every pinned PCR the TPM quotes equals its prediction;
//   - a modified kernel, initrd or kernel command line (each a unified kernel
//     image rebuilt from the genuine one with one section changed) and a
//     different firmware build: the node boots, and `cloister verify` with
//     the same reference values refuses it, naming the PCR with want and got,
//     and so does `cloister init` through the node's attested port (no
//     secrets sent, the node keeps waiting); the PCRs that differ from the
//     prediction are exactly those the changed part is measured into;
//   - one flipped byte in the root file system: dm-verity fails the boot in
//     the initrd, before any Cloister daemon runs.
func TestMeasuredBoot(t *testing.T) {
	harness.Enabled(t)
	img := harness.NodeImage(t)
	cli := scenario.BuildCLI(t)
	ca := harness.NewTPMCA(t)
	predicted := policyPCRs(t, img.ReferenceValues)
	t.Logf("predicted reference values (%s): %s", img.ReferenceValues, formatPCRs(predicted))
	roots := []string{"--tpm-ek-roots=" + ca.RootPEM, "--tpm-ek-roots=" + ca.IssuerPEM}
	uki, err := os.ReadFile(img.UKI)
	if err != nil {
		t.Fatal(err)
	}

	node := func(t *testing.T, name, esp, root string, cpus int, fw ...string) *harness.Node {
		cfg := harness.NodeConfig{
			Name:         name,
			ESP:          esp,
			RootDisk:     root,
			OEMStrings:   []string{"cloister.role=worker", "cloister.node=" + name},
			StateDiskMiB: 512,
			Forwards:     []int{scenario.AttestedPort, scenario.StatusPort},
			TPMCA:        ca,
			OVMF:         true,
			CPUs:         cpus,
			MemoryMiB:    2048,
			Timeout:      6 * time.Minute,
		}
		if len(fw) == 2 {
			cfg.FirmwareCode, cfg.FirmwareVars = fw[0], fw[1]
		}
		return harness.NewNode(t, cfg)
	}
	genuineESP := harness.NewESP(t, t.TempDir(), img.UKI)

	// The genuine image, once per VM shape make image measured the firmware
	// for (OVMF's PCR 0 depends on the vCPU count).
	for _, cpus := range slices.Sorted(maps.Keys(img.ReferenceValuesByCPUs)) {
		refs := img.ReferenceValuesByCPUs[cpus]
		t.Run(fmt.Sprintf("genuine image %d vCPU", cpus), func(t *testing.T) {
			predicted := policyPCRs(t, refs)
			n := node(t, fmt.Sprintf("genuine-%d", cpus), genuineESP, img.Root, cpus)
			vm := n.Boot(t)
			vm.Console.FailOn = scenario.BootFailures
			m := vm.Expect(t, verityOpened, 2*time.Minute)
			if !strings.Contains(img.Cmdline, "cloister.verity="+m[2]+",") {
				t.Errorf("initrd opened the root with root hash %s, not the one on the measured command line %q", m[2], img.Cmdline)
			}
			vm.Expect(t, scenario.DiskFormatted, 4*time.Minute)
			vm.Expect(t, scenario.BootstrapperWaiting, 2*time.Minute)
			// Its attested port serves once the bootstrapper says it waits.
			harness.WaitStatus(t, n.Addr(scenario.StatusPort), time.Minute, func(r *statusv1.GetResponse) bool {
				return r.GetComponent() == "bootstrapper" && r.GetPhase() == "waiting-for-init-or-join"
			})
			out := scenario.RunCLI(t, cli, 3*time.Minute, append([]string{"verify", "--node", n.Addr(scenario.AttestedPort), "--policy", refs, "-o", "json"}, roots...)...)
			var report struct {
				Verified     bool
				Measurements []struct{ Name, Value string }
			}
			if err := json.Unmarshal([]byte(out), &report); err != nil || !report.Verified {
				t.Fatalf("cloister verify: want a verified report, got %v:\n%s", err, out)
			}
			got := map[int]string{}
			for _, m := range report.Measurements {
				if i, ok := pcrIndex(m.Name); ok {
					got[i] = m.Value
				}
			}
			for _, i := range measure.SortedPCRs(predicted) {
				if got[i] != predicted[i] {
					t.Errorf("pcr[%d]: predicted %s, the TPM quoted %s", i, predicted[i], got[i])
				}
			}
			t.Logf("prediction equals reality for PCRs %v (%s)", measure.SortedPCRs(predicted), filepath.Base(refs))
		})
	}

	tampered := []struct {
		name string
		// uki changes one section of the genuine image; nil keeps it.
		section string
		change  func(t *testing.T, data []byte) []byte
		// firmware boots another OVMF build (code, vars).
		firmware []string
		// wantCheck is the check verify names: the first differing PCR.
		wantCheck string
		// wantDiff are the predicted PCRs that must differ; unaffected
		// predicted PCRs must not.
		wantDiff []int
	}{
		{
			name: "modified kernel", section: ".linux", change: stampKernel,
			wantCheck: "pcr[4]", wantDiff: []int{4, 11},
		},
		{
			name: "modified initrd", section: ".initrd", change: appendToInitrd,
			wantCheck: "pcr[4]", wantDiff: []int{4, 9, 11},
		},
		{
			name: "modified kernel command line", section: ".cmdline", change: appendToCmdline,
			wantCheck: "pcr[4]", wantDiff: []int{4, 9, 11},
		},
		{
			name:      "different firmware",
			firmware:  []string{harness.RequireFile(t, "/usr/share/OVMF/OVMF_CODE.fd", "ovmf"), harness.RequireFile(t, "/usr/share/OVMF/OVMF_VARS.fd", "ovmf")},
			wantCheck: "pcr[0]", wantDiff: []int{0},
		},
	}
	for i, tc := range tampered {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			esp := genuineESP
			if tc.section != "" {
				orig, ok, err := measure.Section(uki, tc.section)
				if err != nil || !ok {
					t.Fatalf("genuine image has no %s section: %v", tc.section, err)
				}
				changed := tc.change(t, slices.Clone(orig))
				if bytes.Equal(changed, orig) {
					t.Fatal("the change changed nothing")
				}
				dir := t.TempDir()
				esp = harness.NewESP(t, dir, harness.RebuildUKI(t, dir, img.UKI, map[string][]byte{tc.section: changed}))
			}
			n := node(t, fmt.Sprintf("tampered-%d", i), esp, img.Root, 1, tc.firmware...)
			vm := scenario.BootUntilWaiting(t, n)
			stdout, stderr, err := scenario.CLIResult(cli, 3*time.Minute, append([]string{"verify", "--node", n.Addr(scenario.AttestedPort), "--policy", img.ReferenceValues, "-o", "json"}, roots...)...)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitRefusedCode {
				t.Fatalf("cloister verify of a node with a %s: want exit %d (refused), got %v\nstdout:\n%s\nstderr:\n%s", tc.name, exitRefusedCode, err, stdout, stderr)
			}
			var report struct {
				Failure struct{ Check, Want, Got, Message string }
			}
			if err := json.Unmarshal([]byte(stdout), &report); err != nil {
				t.Fatalf("cloister verify -o json: %v\n%s", err, stdout)
			}
			f := report.Failure
			if f.Check != tc.wantCheck || f.Want == "" || f.Got == "" || f.Want == f.Got {
				t.Errorf("refusal: want check %s with want and got, got %+v", tc.wantCheck, f)
			}
			t.Logf("refused: %s", f.Message)

			// `cloister init` attests through the same port first: the
			// tampered node gets no secrets, and no cluster is created.
			clusterDir := filepath.Join(t.TempDir(), "cluster")
			_, stderr, err = scenario.CLIResult(cli, 3*time.Minute, append([]string{"init", "--node", n.Addr(scenario.AttestedPort), "--policy", img.ReferenceValues, "--cluster-dir", clusterDir}, roots...)...)
			if !errors.As(err, &exit) || exit.ExitCode() != exitRefusedCode || !strings.Contains(stderr, tc.wantCheck) {
				t.Errorf("cloister init of a node with a %s: want exit %d naming %s, got %v\nstderr:\n%s", tc.name, exitRefusedCode, tc.wantCheck, err, stderr)
			}
			if _, err := os.Stat(clusterDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("refused init created the cluster directory (%v)", err)
			}
			harness.WaitStatus(t, n.Addr(scenario.StatusPort), 30*time.Second, func(r *statusv1.GetResponse) bool {
				return r.GetComponent() == "bootstrapper" && r.GetPhase() == "waiting-for-init-or-join"
			})

			// Which predicted PCRs differ: exactly those the change is
			// measured into (read as a trust-on-first-use policy would).
			actual := nodePCRs(t, cli, n, roots)
			var diff []int
			for _, i := range measure.SortedPCRs(predicted) {
				if actual[i] != predicted[i] {
					diff = append(diff, i)
				}
			}
			if !slices.Equal(diff, tc.wantDiff) {
				t.Errorf("PCRs that differ from the prediction: want %v, got %v (actual %s)", tc.wantDiff, diff, formatPCRs(actual))
			}
			vm.Stop()
		})
	}

	t.Run("root bit flip fails verity", func(t *testing.T) {
		root := flipRootByte(t, img.Root, "/usr/lib/systemd/systemd")
		n := node(t, "flipped-root", genuineESP, root, 1)
		vm := n.Boot(t)
		vm.Expect(t, verityOpened, 2*time.Minute)
		m := vm.Expect(t, verityCorrupted, 2*time.Minute)
		t.Logf("dm-verity: %s", m[0])
		vm.WaitExit(t, 2*time.Minute)
		text, err := vm.Console.Text()
		if err != nil {
			t.Fatal(err)
		}
		if l := cloisterStarted.FindString(text); l != "" {
			t.Errorf("a Cloister daemon ran on a corrupted root: %q", l)
		}
	})
}

// exitRefusedCode is the CLI's exit code for a node that failed attestation.
const exitRefusedCode = 3

// policyPCRs reads the tpm PCRs of a policy document as hex.
func policyPCRs(t testing.TB, path string) map[int]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if pol.TPM == nil {
		t.Fatalf("%s: no tpm section", path)
	}
	out := map[int]string{}
	for i, v := range pol.TPM.PCRs {
		out[i] = hex.EncodeToString(v.Want)
	}
	return out
}

// nodePCRs reads PCRs 0-14 of a booted node through `cloister policy
// from-node` (trust on first use: the AK chain is checked, the values are not).
func nodePCRs(t testing.TB, cli string, n *harness.Node, roots []string) map[int]string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "actual.yaml")
	scenario.RunCLI(t, cli, 3*time.Minute, append([]string{"policy", "from-node", "--node", n.Addr(scenario.AttestedPort), "--variant", "tpm", "--pcrs", "0-14", "--policy", out}, roots...)...)
	return policyPCRs(t, out)
}

func pcrIndex(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "pcr[")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(strings.TrimSuffix(s, "]"))
	return i, err == nil
}

func formatPCRs(m map[int]string) string {
	var b strings.Builder
	for _, i := range measure.SortedPCRs(m) {
		v := m[i]
		fmt.Fprintf(&b, " %d=%s…", i, v[:min(12, len(v))])
	}
	return b.String()
}

// stampKernel changes the kernel's COFF time stamp: different bytes in the
// measured kernel that still boot.
func stampKernel(t *testing.T, k []byte) []byte {
	t.Helper()
	if len(k) < 0x40 {
		t.Fatal("kernel too short")
	}
	pe := int(binary.LittleEndian.Uint32(k[0x3c:]))
	if pe+12 > len(k) || string(k[pe:pe+4]) != "PE\x00\x00" {
		t.Fatal("kernel is not a PE image")
	}
	ts := binary.LittleEndian.Uint32(k[pe+8:])
	binary.LittleEndian.PutUint32(k[pe+8:], ts^0x5a5a5a5a)
	return k
}

// appendToInitrd appends an uncompressed newc cpio archive with one file,
// as someone adding a script to the initrd would; the kernel unpacks
// concatenated archives.
func appendToInitrd(t *testing.T, initrd []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	entry := func(name string, mode uint32, data []byte) {
		fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		b.WriteString(name + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.Write(data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	entry("cloister-tampered", 0o100644, []byte("added after the build\n"))
	entry("TRAILER!!!", 0, nil)
	for len(initrd)%4 != 0 {
		initrd = append(initrd, 0)
	}
	return append(initrd, b.Bytes()...)
}

// appendToCmdline adds a parameter to the command line (before its NUL).
func appendToCmdline(t *testing.T, c []byte) []byte {
	t.Helper()
	s := strings.TrimRight(string(c), "\x00")
	return []byte(s + " cloister.tampered=1\x00")
}

// flipRootByte copies the root image and flips one byte in the first block
// of file's data, found with debugfs; it returns the copy.
func flipRootByte(t testing.TB, root, file string) string {
	t.Helper()
	debugfs := harness.RequireTool(t, "debugfs")
	cp := harness.RequireTool(t, "cp")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, debugfs, "-R", "bmap "+file+" 0", root).Output()
	if err != nil {
		t.Fatalf("debugfs bmap %s: %v", file, err)
	}
	block, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || block <= 0 {
		t.Fatalf("debugfs bmap %s: %q", file, out)
	}
	dst := filepath.Join(t.TempDir(), "root-flipped.img")
	if b, err := exec.CommandContext(ctx, cp, "--sparse=always", "--reflink=auto", root, dst).CombinedOutput(); err != nil {
		t.Fatalf("copying root image: %v\n%s", err, b)
	}
	f, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off := block*4096 + 100
	buf := make([]byte, 1)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	buf[0] ^= 0x01
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped bit 0 of byte %d (block %d, first block of %s) in the root image", off, block, file)
	return dst
}
