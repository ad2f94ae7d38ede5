// Package scenario drives Cloister clusters of QEMU nodes the way an
// operator does: it builds the CLI from this checkout, measures the node
// image's first boot for a bootstrap policy, boots a control plane, runs
// `cloister init` and `cloister verify`, adds workers that join by
// themselves, and reads the cluster through client-go. The end-to-end
// tests and the demo share it; it reports through harness.TB and tells what
// it does through Progress.
package scenario

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
	"github.com/cloister-dev/cloister/internal/keys"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// Guest ports the scenarios reach through 127.0.0.1 forwards.
const (
	JoinServicePort = 9000
	MetricsPort     = 9091
	// JoinServiceStatusPort is the join service's plain port: status.v1,
	// grpc.health.v1 and reflection, for probes.
	JoinServiceStatusPort = 9092
	AttestedPort          = 9100
	StatusPort            = 9101
	KubeAPIPort           = 6443
)

// Serial console markers (image/README.md lists them).
var (
	DiskFormatted = regexp.MustCompile(`"msg":"state disk ready".*"formatted":true`)
	// BootstrapperWaiting: the bootstrapper logs its configuration right
	// before it waits.
	BootstrapperWaiting = regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"node configuration".*"node":"([a-z0-9-]+)"`)
	// Joined is the bootstrapper's last transition of a join or init.
	Joined = regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"state transition".*"phase":"joined"`)
	// KeyedDiskWaits is disk-mapper finding a keyed disk at boot.
	KeyedDiskWaits = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"state disk is keyed: waiting for its key".*"disk_uuid":"([0-9a-f-]+)"`)
	// LatchExtended names the cluster ID disk-mapper extended into PCR 15.
	LatchExtended = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"extended cluster-ID latch".*"cluster_id":"([0-9a-f]+)"`)
	// RejoinReady is disk-mapper opening a keyed disk with the key a join
	// service released after a reboot.
	RejoinReady = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"state disk ready".*"formatted":false,"key_source":"rejoin"`)
	// JoinedBefore is the bootstrapper finding a Joined state file.
	JoinedBefore = regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"node joined before"`)
	// StatusServing is the bootstrapper of a joined node listening on its
	// status ports, the attested one included (`cloister verify`).
	StatusServing = regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"serving the joined node's status"`)
)

// BootFailures end a wait early: a Cloister unit failed, or the boot did.
var BootFailures = []*regexp.Regexp{
	regexp.MustCompile(`Failed to start .*(disk-mapper|[Bb]ootstrapper|[Cc]loister)`),
	regexp.MustCompile(`Kernel panic`),
	regexp.MustCompile(`(disk-mapper|bootstrapper)\[\d+\]: .*"level":"ERROR"`),
}

// shape is a machine type. A cluster's nodes all have one, as in a cloud:
// OVMF's PCR 0 differs between machines of different vCPU counts (and
// below 2 GiB of memory), and make image predicts it per vCPU count.
type shape struct {
	cpus, memoryMiB int
	stateDiskMiB    int64
}

var (
	// smallShape runs Cloister's daemons.
	smallShape = shape{cpus: 1, memoryMiB: 2048, stateDiskMiB: 512}
	// kubernetesShape runs a control plane: kubeadm's preflight wants 2
	// CPUs and 1.7 GiB; etcd and the API server under TCG want more memory.
	kubernetesShape = shape{cpus: 2, memoryMiB: 3072, stateDiskMiB: 2048}
)

// Options vary a cluster.
type Options struct {
	// ControlPlaneFiles are baked into the control plane's root disk
	// (path → content) besides the policy and trust anchors.
	ControlPlaneFiles map[string][]byte
	// Kubernetes sizes the control plane for a real Kubernetes control
	// plane (CPUs, memory, state disk) and forwards the API server's port
	// and the join service's metrics.
	Kubernetes bool
	// Progress receives one line per step; nil logs through t.
	Progress func(format string, args ...any)
}

// Cluster is a control plane ready for `cloister init`, with what the
// operator's CLI needs to talk to it and what its workers share.
type Cluster struct {
	// CLI is the cloister binary built from this checkout.
	CLI string
	// ControlPlane has a fresh state disk; it has not booted yet.
	ControlPlane *harness.Node
	// Policy is the policy file: the reference values make image predicted
	// for the image on the cluster's machine shape.
	Policy string
	// Roots are the CLI's --tpm-ek-roots flags for the nodes' vTPMs.
	Roots []string
	// ClusterDir is where `cloister init` writes the cluster's files.
	ClusterDir string

	// What workers share with the control plane: their configuration
	// files, the boot disk, the image, the TPM CA, the machine shape.
	RootsFile string
	ESP       string
	Image     harness.Image
	CA        *harness.TPMCA

	shape    shape
	dir      string
	progress func(format string, args ...any)
}

// New returns a cluster whose control plane (not yet booted) and workers
// boot the image's unified kernel image, check each other against the
// reference values make image predicted for the image (no trust on first
// use), and trust the EK roots of the test's vTPMs. The image's root file
// system is verity-protected: nodes get their files through fw_cfg (the
// image's test hook) and their settings through SMBIOS OEM strings.
func New(t harness.TB, opts Options) *Cluster {
	t.Helper()
	progress := opts.Progress
	if progress == nil {
		progress = t.Logf
	}
	img := harness.NodeImage(t)
	sh := smallShape
	if opts.Kubernetes {
		sh = kubernetesShape
	}
	pol, ok := img.ReferenceValuesByCPUs[sh.cpus]
	if !ok {
		t.Fatalf("node image: no reference values for %d vCPUs (make image measures the firmware per vCPU count)", sh.cpus)
	}
	progress("building the cloister CLI")
	cli := BuildCLI(t)
	ca := harness.NewTPMCA(t)
	dir := t.TempDir()
	c := &Cluster{
		CLI:    cli,
		Policy: pol,
		// The guest's evidence carries its EK certificate but not the local
		// CA's intermediate, so the CLI trusts the intermediate as an anchor too.
		Roots:      []string{"--tpm-ek-roots=" + ca.RootPEM, "--tpm-ek-roots=" + ca.IssuerPEM},
		ClusterDir: filepath.Join(dir, "cluster"),
		RootsFile:  filepath.Join(dir, "tpm-ek-roots.pem"),
		ESP:        harness.NewESP(t, t.TempDir(), img.UKI),
		Image:      img,
		CA:         ca,
		shape:      sh,
		dir:        dir,
		progress:   progress,
	}
	files := map[string]string{
		"policy.yaml":              pol,
		"join-service-policy.yaml": pol,
		"tpm-ek-roots.pem":         c.RootsFile,
	}
	for name, b := range opts.ControlPlaneFiles {
		f := filepath.Join(dir, "cp-"+name)
		if strings.Contains(name, "/") || os.WriteFile(f, b, 0o644) != nil {
			t.Fatalf("control-plane file %q: want a file name the fw_cfg hook knows", name)
		}
		files[name] = f
	}
	cfg := harness.NodeConfig{
		Name:         "cp",
		ESP:          c.ESP,
		RootDisk:     img.Root,
		OEMStrings:   []string{"cloister.role=control-plane", "cloister.node=cp-1"},
		FwCfgFiles:   files,
		StateDiskMiB: sh.stateDiskMiB,
		Forwards:     []int{JoinServicePort, AttestedPort, StatusPort},
		TPMCA:        ca,
		OVMF:         true,
		CPUs:         sh.cpus,
		MemoryMiB:    sh.memoryMiB,
		Timeout:      10 * time.Minute,
	}
	if opts.Kubernetes {
		cfg.Forwards = append(cfg.Forwards, KubeAPIPort, MetricsPort, JoinServiceStatusPort)
		cfg.Timeout = 60 * time.Minute
	}
	c.ControlPlane = harness.NewNode(t, cfg)
	// swtpm's local CA writes its certificates when the first vTPM is
	// manufactured (NewNode); the hook reads the file at boot.
	var rootsPEM []byte
	for _, f := range []string{ca.RootPEM, ca.IssuerPEM} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rootsPEM = append(rootsPEM, b...)
	}
	if err := os.WriteFile(c.RootsFile, rootsPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// NewWorker prepares a worker: the cluster's boot disk, image, policy,
// EK roots and machine shape, and 10.0.2.2:joinPort (a host port that
// reaches the control plane's join service) as its join endpoint, for the
// first join and after reboots.
func (c *Cluster) NewWorker(t harness.TB, name string, joinPort int) *harness.Node {
	t.Helper()
	return c.NewNode(t, name, c.ESP, joinPort, name)
}

// NewNode is NewWorker with its own boot disk and Kubernetes node name.
func (c *Cluster) NewNode(t harness.TB, name, esp string, joinPort int, nodeName string) *harness.Node {
	t.Helper()
	join := "10.0.2.2:" + strconv.Itoa(joinPort)
	nodeYAML := filepath.Join(c.dir, name+"-node.yaml")
	if err := os.WriteFile(nodeYAML, fmt.Appendf(nil, "joinEndpoints: [%q]\n", join), 0o644); err != nil {
		t.Fatal(err)
	}
	return harness.NewNode(t, harness.NodeConfig{
		Name:     name,
		ESP:      esp,
		RootDisk: c.Image.Root,
		FwCfgFiles: map[string]string{
			"join-service-policy.yaml": c.Policy,
			"tpm-ek-roots.pem":         c.RootsFile,
			"node.yaml":                nodeYAML,
		},
		OEMStrings:   []string{"cloister.role=worker", "cloister.node=" + nodeName, "cloister.join=" + join},
		StateDiskMiB: c.shape.stateDiskMiB,
		Forwards:     []int{StatusPort, AttestedPort},
		TPMCA:        c.CA,
		OVMF:         true,
		CPUs:         c.shape.cpus,
		MemoryMiB:    c.shape.memoryMiB,
		Timeout:      60 * time.Minute,
	})
}

// Init runs `cloister init` against the booted control plane with the API
// server reachable by every node at endpoint, and returns the cluster ID.
// On failure it reads kubeadm's log from the control plane's state disk,
// decrypted on the host, into the error.
func (c *Cluster) Init(t harness.TB, vm *harness.VM, endpoint string) string {
	t.Helper()
	args := append([]string{"init", "--node", c.ControlPlane.Addr(AttestedPort), "--policy", c.Policy, "--cluster-dir", c.ClusterDir}, c.Roots...)
	if endpoint != "" {
		args = append(args, "--control-plane-endpoint", endpoint)
	}
	start := time.Now()
	if _, stderr, err := CLIResult(c.CLI, 30*time.Minute, args...); err != nil {
		vm.Stop()
		t.Fatalf("cloister init: %v\n%s\nkubeadm's log on the control plane's state disk:\n%s", err, stderr, c.StateFile(t, c.ControlPlane, "kubeadm.log"))
	}
	c.progress("cloister init done in %s", time.Since(start).Round(time.Second))
	return ClusterIDOf(t, c.ClusterDir)
}

// StateFS decrypts a powered-off node's state disk on the host with the
// disk key derived from the cluster's secrets (generation 1).
func (c *Cluster) StateFS(t harness.TB, node *harness.Node) *harness.StateFS {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.ClusterDir, "cluster-secrets.json"))
	if err != nil {
		t.Fatalf("the cluster's secrets: %v", err)
	}
	secrets, err := keys.ParseClusterSecrets(b)
	if err != nil {
		t.Fatalf("the cluster's secrets: %v", err)
	}
	return harness.DecryptStateDisk(t, node.StateDisk, func(uuid string) []byte {
		k, err := secrets.DiskKey(uuid, keys.FirstGeneration)
		if err != nil {
			t.Fatal(err)
		}
		return k
	})
}

// StateFile reads path from a powered-off node's state disk (StateFS); a
// read error is returned as the text.
func (c *Cluster) StateFile(t harness.TB, node *harness.Node, path string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(c.ClusterDir, "cluster-secrets.json")); err != nil {
		return err.Error()
	}
	out, err := c.StateFS(t, node).ReadFile(t, path)
	if err != nil {
		return err.Error()
	}
	return string(out)
}

// BootUntilWaiting boots node and waits until disk-mapper has formatted its
// state disk and the bootstrapper waits for init or join (serial markers and
// status.v1).
func BootUntilWaiting(t harness.TB, node *harness.Node) *harness.VM {
	t.Helper()
	vm := node.Boot(t)
	vm.Console.FailOn = BootFailures
	vm.Expect(t, DiskFormatted, 5*time.Minute)
	vm.Expect(t, BootstrapperWaiting, 5*time.Minute)
	harness.WaitStatus(t, node.Addr(StatusPort), time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && r.GetPhase() == "waiting-for-init-or-join"
	})
	return vm
}

// BuildCLI builds cmd/cloister from this checkout.
func BuildCLI(t harness.TB) string {
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

// RunCLI runs the CLI and fails t unless it exits 0; it returns stdout.
func RunCLI(t harness.TB, cli string, d time.Duration, args ...string) string {
	t.Helper()
	stdout, stderr, err := CLIResult(cli, d, args...)
	if err != nil {
		t.Fatalf("cloister %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args[:min(2, len(args))], " "), err, stdout, stderr)
	}
	t.Logf("cloister %s: ok", strings.Join(args[:min(2, len(args))], " "))
	return stdout
}

// CLIResult runs the CLI under a deadline.
func CLIResult(cli string, d time.Duration, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// CLIExit runs the CLI and returns its exit code; it fails t if the CLI
// did not run or was killed.
func CLIExit(t harness.TB, cli string, d time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	stdout, stderr, err := CLIResult(cli, d, args...)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout, stderr, 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return stdout, stderr, exit.ExitCode()
	}
	t.Fatalf("cloister %s: %v\nstderr:\n%s", args[0], err, stderr)
	return "", "", 0
}

// ClusterIDOf derives the cluster ID from a cluster directory's secrets
// (init writes the cluster-id file only when it completes) and checks it
// against that file when there is one.
func ClusterIDOf(t harness.TB, dir string) string {
	t.Helper()
	s, err := keys.FileProvider{Path: filepath.Join(dir, "cluster-secrets.json")}.ClusterSecrets(context.Background())
	if err != nil {
		t.Fatalf("cloister init left no usable secrets: %v", err)
	}
	defer s.Zero()
	id, err := s.ClusterID()
	if err != nil {
		t.Fatal(err)
	}
	hexID := hex.EncodeToString(id)
	if b, err := os.ReadFile(filepath.Join(dir, "cluster-id")); err == nil && strings.TrimSpace(string(b)) != hexID {
		t.Fatalf("cluster-id file %q does not match the secrets' cluster ID %s", b, hexID)
	}
	return hexID
}

// ConsoleText is everything vm's guest printed so far.
func ConsoleText(t harness.TB, vm *harness.VM) string {
	t.Helper()
	text, err := vm.Console.Text()
	if err != nil {
		t.Fatal(err)
	}
	return text
}
