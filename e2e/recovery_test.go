package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
	"github.com/cloister-dev/cloister/internal/keys"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// The CLI's exit codes (docs/cli.md) the recovery scenario expects.
const (
	exitOK          = 0
	exitLatch       = 4
	exitNodeRefused = 5
)

var (
	// transitionLine is one bootstrapper state transition: its JSON log line.
	transitionLine = regexp.MustCompile(`bootstrapper\[\d+\]: (\{.*"msg":"state transition".*\})`)
	// keyedDiskWaits is disk-mapper finding a keyed disk at boot.
	keyedDiskWaits = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"state disk is keyed: waiting for its key".*"disk_uuid":"([0-9a-f-]+)"`)
	// recoveryServing is disk-mapper's recovery.v1 server up.
	recoveryServing = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"serving recovery"`)
	// rejoinFailed is an attempt to reach the configured join service.
	rejoinFailed = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"rejoin attempt failed"`)
	// recoveryRefused is disk-mapper refusing a recovery key.
	recoveryRefused = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"recovery key refused"`)
	// latchExtended names the cluster ID disk-mapper extended into PCR 15.
	latchExtended = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"extended cluster-ID latch".*"cluster_id":"([0-9a-f]+)"`)
	// bootstrapperFailedBefore is the bootstrapper finding a terminal Failed
	// state file (plain text on stderr before it exits 3).
	bootstrapperFailedBefore = regexp.MustCompile(`bootstrapper\[\d+\]: bootstrapper: node .*? failed in ([a-z-]+): ([^\r\n]*)`)
	// bootstrapperJoinedBefore is the bootstrapper finding a Joined state file.
	bootstrapperJoinedBefore = regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"node joined before; nothing to do"`)
)

// rebootFailures end a wait at the reboot early. The bootstrapper of a node
// that failed before ends Failed again, and the join service fails without
// a Kubernetes API; only disk-mapper and the kernel must not fail.
var rebootFailures = []*regexp.Regexp{
	regexp.MustCompile(`Failed to start .*disk-mapper`),
	regexp.MustCompile(`Kernel panic`),
	regexp.MustCompile(`disk-mapper\[\d+\]: .*"level":"ERROR"`),
}

// TestManualRecoveryAfterReboot initializes a control plane with `cloister
// init`, powers it off and boots it again with the same vTPM, the same
// state disk and a join endpoint where no service listens (10.0.2.2, the
// host's 127.0.0.1, on a closed port). disk-mapper waits for the key:
// `cloister recover` with another cluster's directory is refused (exit 5)
// and the node keeps waiting; with the right directory it unlocks the disk
// (exit 0), disk-mapper mounts it without formatting and extends PCR 15
// with this cluster's ID, and the bootstrapper finds its state file from
// before the reboot and reports the same terminal phase instead of starting
// afresh.
func TestManualRecoveryAfterReboot(t *testing.T) {
	closed := closedPort(t)
	nodeYAML := fmt.Sprintf("# No join service listens here: the host's 127.0.0.1:%d is closed.\njoinEndpoints: [\"10.0.2.2:%d\"]\n", closed, closed)
	cp := newControlPlane(t, nodeOptions{files: map[string][]byte{"/etc/cloister/node.yaml": []byte(nodeYAML)}})
	node := cp.node

	// 1. First boot: init.
	vm := bootUntilWaiting(t, node)
	before := harness.WaitStatus(t, node.Addr(statusPort), time.Minute, func(r *statusv1.GetResponse) bool { return r.GetDiskUuid() != "" })
	diskUUID := before.GetDiskUuid()
	out, stderr, err := cliResult(cp.cli, 8*time.Minute, append([]string{"init", "--node", node.Addr(attestedPort), "--policy", cp.policy, "--cluster-dir", cp.clusterDir}, cp.roots...)...)
	vm.Console.FailOn = nil // a failed step logs an ERROR
	var last transition
	if err != nil {
		// The known gap of TestInitThenVerify: init stops at the join
		// service, which needs a Kubernetes API. The node has been keyed
		// and latched; its state file says Failed. Anything else is a
		// failure.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, _, werr := vm.Console.Wait(ctx, initStoppedAtJoinService, 0)
		cancel()
		if werr != nil {
			t.Fatalf("cloister init: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
		}
		t.Logf("cloister init stopped at the join service (known gap, see TestInitThenVerify): %v", err)
	}
	history := transitions(t, vm)
	if len(history) == 0 {
		t.Fatal("first boot: the bootstrapper logged no state transition")
	}
	last = history[len(history)-1]
	if err != nil && last.Phase != "failed" || err == nil && last.Phase != "joined" {
		t.Fatalf("first boot: init returned %v but the bootstrapper's last transition is %+v", err, last)
	}
	t.Logf("first boot: bootstrapper ended %s (%s)", last.Phase, last.Reason)
	vm.Stop()
	md, _ := harness.LUKSDump(t, node.StateDisk)
	if tok := md.Tokens["0"]; tok.Type != "cloister-state" || !tok.Keyed || tok.Generation != 1 {
		t.Fatalf("after init the state disk must be keyed with the derived key, generation 1; token: %+v", md.Tokens)
	}
	// The state file is the node's marker: its name and its reason are on
	// the disk only as ciphertext.
	if leaked := harness.ContainsAny(t, node.StateDisk, []byte("bootstrapper-state.json"), []byte(last.Reason)); len(leaked) > 0 {
		t.Errorf("raw state disk shows plaintext of the bootstrapper's state: %q", leaked)
	}
	clusterID := clusterIDOf(t, cp.clusterDir)

	// Another cluster's directory: its secrets derive another disk key.
	otherDir := filepath.Join(t.TempDir(), "other-cluster")
	if err := os.Mkdir(otherDir, 0o700); err != nil {
		t.Fatal(err)
	}
	other, err := keys.NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteClusterSecrets(filepath.Join(otherDir, "cluster-secrets.json"), other); err != nil {
		t.Fatal(err)
	}

	// 2. Second boot: same vTPM state, same state disk, no join service.
	vm = node.Boot(t)
	vm.Console.FailOn = rebootFailures
	m := vm.Expect(t, keyedDiskWaits, 5*time.Minute)
	if m[1] != diskUUID {
		t.Fatalf("after the reboot disk-mapper waits for disk %s, want %s (the disk of the first boot)", m[1], diskUUID)
	}
	vm.Expect(t, recoveryServing, time.Minute)
	waitedAt := time.Since(vm.Started)
	st := harness.WaitStatus(t, node.Addr(statusPort), time.Minute, waitingForKey)
	if st.GetDiskUuid() != diskUUID {
		t.Errorf("status after the reboot: disk %q, want %s", st.GetDiskUuid(), diskUUID)
	}
	// The join endpoint was tried and is unreachable.
	expectFrom(t, vm, rejoinFailed, 0, 2*time.Minute)

	// PCR 15 is at its reset value until a key arrives: `cloister verify
	// --cluster-dir` through disk-mapper's attested port says the node is
	// not latched to the cluster (exit 4), and names the value it wants.
	out, stderr, code := cliExit(t, cp.cli, 3*time.Minute, append([]string{"verify", "--node", node.Addr(attestedPort), "--policy", cp.policy, "--cluster-dir", cp.clusterDir, "-o", "json"}, cp.roots...)...)
	latch := verifyLatch(t, out)
	if code != exitLatch || latch.Match || latch.Got != strings.Repeat("0", 64) || latch.ClusterID != clusterID || latch.Want != expectedPCR15(t, clusterID) {
		t.Fatalf("cloister verify --cluster-dir before the key: exit %d, latch %+v; want exit %d, pcr[15] at its reset value, want SHA-256(zeros ‖ %s)\nstderr:\n%s", code, latch, exitLatch, clusterID, stderr)
	}
	t.Logf("cloister verify before the key: exit %d, %s = reset value, want %s", code, latch.Register, latch.Want)

	recoverArgs := func(clusterDir string) []string {
		return append([]string{"recover", "--node", node.Addr(attestedPort), "--disk-uuid", diskUUID, "--policy", cp.policy, "--cluster-dir", clusterDir}, cp.roots...)
	}
	// 3. The wrong cluster's key: refused, and the node keeps waiting.
	out, stderr, code = cliExit(t, cp.cli, 3*time.Minute, recoverArgs(otherDir)...)
	if code != exitNodeRefused {
		t.Fatalf("cloister recover with another cluster's directory: exit %d, want %d (node refused)\nstdout:\n%s\nstderr:\n%s", code, exitNodeRefused, out, stderr)
	}
	t.Logf("cloister recover with another cluster's directory: exit %d", code)
	expectFrom(t, vm, recoveryRefused, 0, time.Minute)
	st = harness.WaitStatus(t, node.Addr(statusPort), 30*time.Second, waitingForKey)
	t.Logf("status after the refused key: phase %s, %d attempt(s), last error %q", st.GetPhase(), st.GetAttempts(), st.GetLastError())
	if strings.Contains(consoleText(t, vm), `"msg":"state disk ready"`) {
		t.Fatal("the state disk was opened after the wrong key")
	}

	// 4. The right cluster's key: the disk opens, without formatting.
	start := time.Now()
	out, stderr, code = cliExit(t, cp.cli, 3*time.Minute, recoverArgs(cp.clusterDir)...)
	if code != exitOK {
		t.Fatalf("cloister recover: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if got := strings.TrimSpace(out); got != diskUUID {
		t.Errorf("cloister recover printed %q, want the disk UUID %s", got, diskUUID)
	}
	m = vm.Expect(t, latchExtended, time.Minute)
	if m[1] != clusterID {
		t.Errorf("disk-mapper extended the latch with cluster ID %s, want %s (from the cluster directory)", m[1], clusterID)
	}
	ready := regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"state disk ready".*"disk_uuid":"` + regexp.QuoteMeta(diskUUID) + `".*"formatted":false,"key_source":"recovery"`)
	vm.Expect(t, ready, time.Minute)
	recovered := time.Since(vm.Started)
	t.Logf("boot to recovered: %s (disk-mapper waiting for its key after %s; cloister recover to disk ready %s)",
		recovered.Round(100*time.Millisecond), waitedAt.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	if strings.Contains(consoleText(t, vm), `"msg":"formatted state disk"`) {
		t.Error("disk-mapper formatted the state disk after the reboot")
	}

	// 5. The node's state from before the reboot is on the disk.
	switch last.Phase {
	case "failed":
		if len(history) < 2 {
			t.Fatalf("first boot: failed without an earlier phase: %+v", history)
		}
		want := history[len(history)-2].Phase
		m = vm.Expect(t, bootstrapperFailedBefore, 2*time.Minute)
		if m[1] != want {
			t.Errorf("after the reboot the bootstrapper failed in %s; want its state from before: failed in %s", m[1], want)
		}
		// The reason, as the state file kept it; a reason of several lines
		// reaches the console as several bootstrapper lines.
		lines := strings.Split(last.Reason, "\n")
		for i, l := range lines {
			lines[i] = regexp.QuoteMeta(l)
		}
		sameReason := regexp.MustCompile(`bootstrapper\[\d+\]: bootstrapper: node .*? failed in ` + regexp.QuoteMeta(want) + `: ` +
			strings.Join(lines, `\r?\n(?:\[\s*[0-9.]+\] )?bootstrapper\[\d+\]: `))
		if !sameReason.MatchString(consoleText(t, vm)) {
			t.Errorf("after the reboot the bootstrapper's failure reason is not the one from before the reboot: %q", last.Reason)
		}
	case "joined":
		vm.Expect(t, bootstrapperJoinedBefore, 2*time.Minute)
	}
	if last.Phase != "joined" {
		// No attested port is left to verify through: disk-mapper is done,
		// a Failed bootstrapper serves nothing, and the join service needs
		// the Kubernetes API the image lacks. The latch is checked above by
		// the cluster ID disk-mapper extended, against the CLI's own.
		t.Log("KNOWN GAP: cloister verify after the recovery needs the join service's attested port; not run (the node ended Failed before the reboot)")
		return
	}
	out = runCLI(t, cp.cli, 3*time.Minute, append([]string{"verify", "--node", node.Addr(joinServicePort), "--policy", cp.policy, "--cluster-dir", cp.clusterDir, "-o", "json"}, cp.roots...)...)
	if latch := verifyLatch(t, out); !latch.Match || latch.ClusterID != clusterID {
		t.Errorf("cloister verify after the recovery: latch %+v, want %s holding cluster ID %s", latch, latch.Register, clusterID)
	}
	// A fresh start would log its configuration and transitions again.
	if n := len(transitions(t, vm)); n != 0 {
		t.Errorf("after the reboot the bootstrapper logged %d state transition(s); want none (it resumes its terminal state)", n)
	}
	if regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"node configuration"`).MatchString(consoleText(t, vm)) {
		t.Error("after the reboot the bootstrapper started afresh (logged its node configuration)")
	}
}

// latchReport is the latch part of `cloister verify -o json`.
type latchReport struct {
	Register  string `json:"register"`
	ClusterID string `json:"clusterID"`
	Want      string `json:"want"`
	Got       string `json:"got"`
	Match     bool   `json:"match"`
}

func verifyLatch(t testing.TB, out string) latchReport {
	t.Helper()
	var r struct {
		Latch *latchReport `json:"latch"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Latch == nil {
		t.Fatalf("cloister verify -o json: no latch report (%v) in:\n%s", err, out)
	}
	return *r.Latch
}

// expectedPCR15 is PCR 15 after one extend with the cluster ID:
// SHA-256(32 zero bytes ‖ cluster ID), as docs/cli.md states it.
func expectedPCR15(t testing.TB, clusterID string) string {
	t.Helper()
	id, err := hex.DecodeString(clusterID)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(make([]byte, 32), id...))
	return hex.EncodeToString(sum[:])
}

// transition is the part of a bootstrapper state transition the scenario
// compares.
type transition struct {
	Phase  string `json:"phase"`
	Reason string `json:"reason"`
}

// transitions returns the bootstrapper's state transitions in vm's serial
// log, oldest first.
func transitions(t testing.TB, vm *harness.VM) []transition {
	t.Helper()
	var out []transition
	for _, m := range transitionLine.FindAllStringSubmatch(consoleText(t, vm), -1) {
		var tr transition
		if err := json.Unmarshal([]byte(m[1]), &tr); err != nil {
			t.Fatalf("bootstrapper state transition %q: %v", m[1], err)
		}
		out = append(out, tr)
	}
	return out
}

func waitingForKey(r *statusv1.GetResponse) bool {
	return r.GetComponent() == "disk-mapper" && r.GetPhase() == "waiting-for-key"
}

// clusterIDOf derives the cluster ID from a cluster directory's secrets
// (init writes the cluster-id file only when it completes) and checks it
// against that file when there is one.
func clusterIDOf(t testing.TB, dir string) string {
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

// expectFrom waits up to d for re on vm's console after byte offset from,
// without moving vm.Expect's position.
func expectFrom(t testing.TB, vm *harness.VM, re *regexp.Regexp, from int, d time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, _, err := vm.Console.Wait(ctx, re, from)
	if err != nil {
		t.Fatalf("%v after %s; serial log %s", err, time.Since(vm.Started).Round(100*time.Millisecond), vm.Console.Path())
	}
	t.Logf("%q after %s", m[0], time.Since(vm.Started).Round(100*time.Millisecond))
	return m
}

// cliExit runs the CLI and returns its exit code; it fails t if the CLI
// did not run or was killed.
func cliExit(t testing.TB, cli string, d time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	stdout, stderr, err := cliResult(cli, d, args...)
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

// closedPort is a port on the host's 127.0.0.1 that nothing listens on
// (picked free, then closed again).
func closedPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("picking a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// consoleText is everything vm's guest printed so far.
func consoleText(t testing.TB, vm *harness.VM) string {
	t.Helper()
	text, err := vm.Console.Text()
	if err != nil {
		t.Fatal(err)
	}
	return text
}
