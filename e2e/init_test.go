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

// TestInitThenVerify boots a control-plane node, takes a bootstrap policy
// from its PCRs (UNVERIFIED, trust on first use, as an operator would on a
// first boot), runs `cloister init` through the forwarded attested port and
// then `cloister verify --cluster-dir`: the node's cluster-ID latch (PCR 15)
// must equal the cluster ID init returned. The image's kubeadm is the test
// double the image names as such.
func TestInitThenVerify(t *testing.T) {
	cp := newControlPlane(t, nodeOptions{})
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
	// policy is the bootstrap policy file (PCRs 0-9 of a first boot).
	policy string
	// roots are the CLI's --tpm-ek-roots flags for the node's vTPM.
	roots []string
	// clusterDir is where `cloister init` is to write the cluster's files.
	clusterDir string

	// What workers of the same cluster share with the control plane: the
	// policy document and EK roots baked into their images, the boot disk,
	// the root image and the TPM CA.
	policyDoc, rootsPEM []byte
	esp                 string
	image               harness.Image
	ca                  *harness.TPMCA
}

// newControlPlane boots the image once on its own node to read its PCRs:
// the bootstrap policy (UNVERIFIED, trust on first use) that the operator
// then bakes into the image with the EK roots the join service needs. It
// returns a second, not yet booted node of the same image with those files
// and extraFiles baked in. Both nodes boot the same UKI disk with the same
// OEM strings: the same measurements.
func newControlPlane(t *testing.T, opts nodeOptions) *controlPlane {
	t.Helper()
	harness.Enabled(t)
	img := harness.NodeImage(t)
	cli := buildCLI(t)
	ca := harness.NewTPMCA(t)
	// One boot disk for both boots: the same measurements.
	esp := harness.NewESP(t, t.TempDir(), img.Vmlinuz, img.Initrd, harness.KernelCmdline(img.Cmdline))
	config := func(name string, files map[string][]byte) harness.NodeConfig {
		cfg := harness.NodeConfig{
			Name:     name,
			ESP:      esp,
			RootDisk: img.Root,
			// The same OEM strings for both boots: the same PCRs.
			OEMStrings:   []string{"cloister.role=control-plane", "cloister.node=cp-1"},
			RootFiles:    files,
			StateDiskMiB: 512,
			Forwards:     []int{joinServicePort, attestedPort, statusPort},
			TPMCA:        ca,
			OVMF:         true,
			MemoryMiB:    2048,
			Timeout:      10 * time.Minute,
		}
		if opts.kubernetes {
			// kubeadm's preflight wants 2 CPUs and 1.7 GiB on a control
			// plane; etcd and the API server under TCG want more memory.
			cfg.CPUs, cfg.MemoryMiB, cfg.StateDiskMiB = 2, 3072, 2048
			cfg.Forwards = append(cfg.Forwards, kubeAPIPort, metricsPort)
			cfg.Timeout = 40 * time.Minute
		}
		return cfg
	}
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")

	measure := harness.NewNode(t, config("measure", nil))
	// The guest's evidence carries its EK certificate but not the local
	// CA's intermediate, so the CLI trusts the intermediate as an anchor too.
	roots := []string{"--tpm-ek-roots=" + ca.RootPEM, "--tpm-ek-roots=" + ca.IssuerPEM}
	vm := bootUntilWaiting(t, measure)
	runCLI(t, cli, 2*time.Minute, append([]string{"policy", "from-node", "--node", measure.Addr(attestedPort), "--variant", "tpm", "--pcrs", "0-9", "--policy", pol}, roots...)...)
	vm.Stop()
	policyDoc, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	var rootsPEM []byte
	for _, f := range []string{ca.RootPEM, ca.IssuerPEM} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rootsPEM = append(rootsPEM, b...)
	}
	files := map[string][]byte{
		"/etc/cloister/policy.yaml":              policyDoc,
		"/etc/cloister/join-service-policy.yaml": policyDoc,
		"/etc/cloister/trust/tpm-ek-roots.pem":   rootsPEM,
	}
	for name, b := range opts.files {
		files[name] = b
	}
	return &controlPlane{
		cli:        cli,
		node:       harness.NewNode(t, config("cp", files)),
		policy:     pol,
		policyDoc:  policyDoc,
		roots:      roots,
		rootsPEM:   rootsPEM,
		clusterDir: filepath.Join(dir, "cluster"),
		esp:        esp,
		image:      img,
		ca:         ca,
	}
}

// nodeOptions vary a scenario's nodes.
type nodeOptions struct {
	// files are baked into the node's root disk (path → content).
	files map[string][]byte
	// kubernetes sizes the node for a real control plane (CPUs, memory,
	// state disk) and forwards the API server's port.
	kubernetes bool
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
