package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

const joinServicePort = 9000

// TestInitThenVerify boots a control-plane node with the image's predicted
// reference values as the policy (no trust on first use), runs `cloister
// init` through the forwarded attested port and then `cloister verify
// --cluster-dir`: the node's cluster-ID latch (PCR 15)
// must equal the cluster ID init returned. The image's kubeadm is the test
// double the image names as such.
func TestInitThenVerify(t *testing.T) {
	cp := newControlPlane(t, nil)
	cli, node, pol, clusterDir, roots := cp.cli, cp.node, cp.policy, cp.clusterDir, cp.roots
	vm := bootUntilWaiting(t, node)
	start := time.Now()
	out, stderr, err := cliResult(cli, 8*time.Minute, append([]string{"init", "--node", node.Addr(attestedPort), "--policy", pol, "--cluster-dir", clusterDir}, roots...)...)
	t.Logf("cloister init took %s (%s after the start of QEMU)", time.Since(start).Round(100*time.Millisecond), time.Since(vm.Started).Round(100*time.Millisecond))
	if err != nil {
		// Until the image has a Kubernetes API server, init ends at its
		// last step: the join service cannot start without one. Everything
		// before it is checked here; anything else failing is a failure.
		vm.Console.FailOn = nil // the failed step logs an ERROR
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		m, _, werr := vm.Console.Wait(ctx, initStoppedAtJoinService, 0)
		cancel()
		if werr != nil || m == nil {
			t.Fatalf("cloister init: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
		}
		// The phases before it, in order: keyed (re-keyed to the derived
		// disk key), configured (after the latch extend), kubeadm-started.
		from := 0
		for _, phase := range []string{"keyed", "configured", "kubeadm-started"} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, end, err := vm.Console.Wait(ctx, regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"state transition".*"phase":"`+phase+`","path":"init"`), from)
			cancel()
			if err != nil {
				t.Errorf("init: bootstrapper never reached phase %s before the join service step: %v", phase, err)
			}
			from = max(from, end)
		}
		vm.Stop()
		md, _ := harness.LUKSDump(t, node.StateDisk)
		if tok := md.Tokens["0"]; tok.Type != "cloister-state" || !tok.Keyed || tok.Generation != 1 {
			t.Errorf("after init the state disk must be keyed with the derived key, generation 1; token: %+v", md.Tokens)
		}
		if len(md.Keyslots) != 1 {
			t.Errorf("after the re-key: want one keyslot (the one-time passphrase gone), got %d", len(md.Keyslots))
		}
		t.Skip("KNOWN GAP: init attested the node, delivered the secrets, re-keyed the disk and extended the latch, " +
			"then stopped at the join service, which needs a Kubernetes API the image does not have yet (its kubeadm is a test double); " +
			"cloister verify needs that service's attested port and was not run")
	}
	idFile, err := os.ReadFile(filepath.Join(clusterDir, "cluster-id"))
	if err != nil {
		t.Fatalf("cloister init wrote no cluster ID: %v", err)
	}
	clusterID := strings.TrimSpace(string(idFile))
	if !strings.Contains(out, clusterID) {
		t.Errorf("cloister init printed %q, want the cluster ID %s", out, clusterID)
	}

	// After init the bootstrapper is gone; the join service serves the
	// attested port the CLI verifies through.
	verify := runCLI(t, cli, 5*time.Minute, append([]string{"verify", "--node", node.Addr(joinServicePort), "--policy", pol, "--cluster-dir", clusterDir}, roots...)...)
	if !strings.Contains(verify, clusterID) {
		t.Errorf("cloister verify output does not name the cluster ID %s:\n%s", clusterID, verify)
	}
}

// controlPlane is a control-plane node ready for `cloister init`, with what
// the operator's CLI needs to talk to it.
type controlPlane struct {
	cli string
	// node has a fresh state disk; it has not booted yet.
	node *harness.Node
	// policy is the policy file: the reference values make image predicted
	// for the image.
	policy string
	// roots are the CLI's --tpm-ek-roots flags for the node's vTPM.
	roots []string
	// clusterDir is where `cloister init` is to write the cluster's files.
	clusterDir string
}

// newControlPlane returns a control-plane node of the image, not yet
// booted, whose policies (its join service's and the one it checks join
// services against) are the image's predicted reference values, and which
// trusts the EK roots of the test's vTPMs. extraFiles are more files for
// /etc/cloister (by their path there); the image's root file system is
// verity-protected, so the node gets them through fw_cfg (the image's test
// hook), as it gets the policies.
func newControlPlane(t *testing.T, extraFiles map[string][]byte) *controlPlane {
	t.Helper()
	harness.Enabled(t)
	img := harness.NodeImage(t)
	cli := buildCLI(t)
	ca := harness.NewTPMCA(t)
	esp := harness.NewESP(t, t.TempDir(), img.UKI)
	dir := t.TempDir()
	// The guest's evidence carries its EK certificate but not the local
	// CA's intermediate, so the CLI trusts the intermediate as an anchor too.
	roots := []string{"--tpm-ek-roots=" + ca.RootPEM, "--tpm-ek-roots=" + ca.IssuerPEM}
	files := map[string]string{
		"policy.yaml":              img.ReferenceValues,
		"join-service-policy.yaml": img.ReferenceValues,
		// swtpm_localca writes the CA's certificates when the node's vTPM
		// is manufactured, in NewNode below: the hook reads this file then.
		"tpm-ek-roots.pem": filepath.Join(dir, "tpm-ek-roots.pem"),
	}
	for name, b := range extraFiles {
		base, ok := strings.CutPrefix(name, "/etc/cloister/")
		if !ok || strings.Contains(base, "/") {
			t.Fatalf("extra file %s: only files directly in /etc/cloister reach the node", name)
		}
		f := filepath.Join(dir, base)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files[base] = f
	}
	node := harness.NewNode(t, harness.NodeConfig{
		Name:     "cp",
		ESP:      esp,
		RootDisk: img.Root,
		// Node settings: SMBIOS OEM strings, outside the measured image.
		OEMStrings:   []string{"cloister.role=control-plane", "cloister.node=cp-1"},
		FwCfgFiles:   files,
		StateDiskMiB: 512,
		Forwards:     []int{joinServicePort, attestedPort, statusPort},
		TPMCA:        ca,
		OVMF:         true,
		MemoryMiB:    2048,
		Timeout:      10 * time.Minute,
	})
	var rootsPEM []byte
	for _, f := range []string{ca.RootPEM, ca.IssuerPEM} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rootsPEM = append(rootsPEM, b...)
	}
	if err := os.WriteFile(files["tpm-ek-roots.pem"], rootsPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return &controlPlane{
		cli:        cli,
		node:       node,
		policy:     img.ReferenceValues,
		roots:      roots,
		clusterDir: filepath.Join(dir, "cluster"),
	}
}

// initStoppedAtJoinService is the bootstrapper's terminal transition when
// the join service does not start (no Kubernetes API behind it).
var initStoppedAtJoinService = regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"state transition".*"phase":"failed","path":"init","reason":"join-service: `)

// bootUntilWaiting boots node and waits until disk-mapper has formatted its
// state disk and the bootstrapper waits for init or join (serial markers and
// status.v1).
func bootUntilWaiting(t testing.TB, node *harness.Node) *harness.VM {
	t.Helper()
	vm := node.Boot(t)
	vm.Console.FailOn = bootFailures
	vm.Expect(t, diskReady, 5*time.Minute)
	vm.Expect(t, bootstrapperWaiting, 2*time.Minute)
	harness.WaitStatus(t, node.Addr(statusPort), time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && r.GetPhase() == "waiting-for-init-or-join"
	})
	return vm
}

// buildCLI builds cmd/cloister from this checkout.
func buildCLI(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cloister")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cli/cmd/cloister")
	cmd.Dir = harness.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cloister: %v\n%s", err, out)
	}
	return bin
}

// runCLI runs the CLI and fails t unless it exits 0; it returns stdout.
func runCLI(t testing.TB, cli string, d time.Duration, args ...string) string {
	t.Helper()
	stdout, stderr, err := cliResult(cli, d, args...)
	if err != nil {
		t.Fatalf("cloister %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args[:min(2, len(args))], " "), err, stdout, stderr)
	}
	t.Logf("cloister %s: ok", strings.Join(args[:min(2, len(args))], " "))
	return stdout
}

// cliResult runs the CLI under a deadline.
func cliResult(cli string, d time.Duration, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}
