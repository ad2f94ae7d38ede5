package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
	"github.com/cloister-dev/cloister/e2e/internal/scenario"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/measure"
	"github.com/cloister-dev/cloister/joinservice/rbac"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// The CLI's exit codes (docs/cli.md) the scenarios expect.
const (
	exitOK          = 0
	exitLatch       = 4
	exitNodeRefused = 5
)

var (
	// recoveryServing is disk-mapper's recovery.v1 server up.
	recoveryServing = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"serving recovery"`)
	// rejoinFailed is an attempt to reach the configured join service.
	rejoinFailed = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"rejoin attempt failed"`)
	// recoveryRefused is disk-mapper refusing a recovery key.
	recoveryRefused = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"recovery key refused"`)
	// recoveredReady is disk-mapper opening the disk with the operator's key.
	recoveredReady = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"state disk ready".*"formatted":false,"key_source":"recovery"`)
	// tokenIDText is the public ID of a bootstrap token in the join
	// service's audit line.
	tokenIDText = regexp.MustCompile(`"token_id":"([a-z0-9]{6})"`)
	// clusterFailures end a wait early on a Kubernetes node.
	clusterFailures = append([]*regexp.Regexp{
		regexp.MustCompile(`"msg":"state transition".*"phase":"failed"`),
	}, scenario.BootFailures...)
	// rebootFailures end a wait at a reboot early: only disk-mapper and the
	// kernel must not fail (a waiting disk-mapper logs failed rejoins).
	rebootFailures = []*regexp.Regexp{
		regexp.MustCompile(`Failed to start .*disk-mapper`),
		regexp.MustCompile(`Kernel panic`),
		regexp.MustCompile(`disk-mapper\[\d+\]: .*"level":"ERROR"`),
	}
)

// TestCluster is the whole chain with real Kubernetes, one cluster for all
// of its stages (a control plane under TCG takes minutes to start):
//
//  1. init: `cloister init` attests the control-plane VM and runs real
//     kubeadm init (etcd, API server, controller manager and scheduler as
//     static pods from the image's built-in container images); the running
//     control plane passes `cloister verify`, its latch = the cluster ID;
//     grpc-health-probe finds the join service SERVING on its plain port
//     (readiness: policy, secrets, Kubernetes API) and the node's status
//     port healthy;
//  2. outage + join: a worker VM boots while its path to the join service is
//     down, keeps trying and says why it waits, then joins by itself: disk
//     key, bootstrap token, CA pins and a kubelet client certificate through
//     the attested join, real kubeadm join. From the host, client-go sees
//     both Nodes Ready, the worker's kubelet certificate is the attested one
//     (no CSR of the kubelet's own), its bootstrap token is gone; the join
//     service did all of it as its own user (the CSR's requestor is
//     cloister:joinservice), and that user cannot read a Secret (not even
//     one the test plants in kube-system), list Secrets or Pods, delete a
//     Node, bind roles or approve for other signers: the API server answers
//     Forbidden;
//  3. tamper: a VM booting a modified initrd is refused; the join service's
//     audit log and metrics name the PCR, the node's status says why it
//     waits, no Node appears;
//  4. double join: with its bootstrapper's state deleted (by someone with
//     its disk key), the worker asks for a second join in the boot in which
//     disk-mapper already got its key: refused, the latch named;
//  5. reboot: the worker power-cycles; disk-mapper gets its key back from the
//     join service and extends the latch with the cluster ID; the same Node
//     comes back Ready and passes `cloister verify` (latch = cluster ID);
//  6. manual recovery: the worker power-cycles while no join service is
//     reachable; `cloister verify` shows its latch at the reset value,
//     `cloister recover` with another cluster's directory is refused, with
//     the right one the disk opens and the same Node comes back.
//
// Both state disks are LUKS2 (cryptsetup luksDump on the host) and what
// the nodes wrote is not visible in their raw images; no serial console
// shows a bootstrap token.
func TestCluster(t *testing.T) {
	harness.Enabled(t)
	c := scenario.New(t, scenario.Options{Kubernetes: true})
	cp := c.ControlPlane
	endpoint := "10.0.2.2:" + strconv.Itoa(cp.HostPort(scenario.KubeAPIPort))

	// 1. Control plane: cloister init.
	cpVM := scenario.BootUntilWaiting(t, cp)
	cpVM.Console.FailOn = clusterFailures
	clusterID := c.Init(t, cpVM, endpoint)
	t.Logf("control plane initialized %s after QEMU start", since(cpVM.Started))
	kube := c.Kube(t)
	scenario.WaitNode(t, kube, "cp-1", 10*time.Minute, scenario.Ready)
	t.Logf("cp-1 Ready %s after QEMU start", since(cpVM.Started))
	// A running control plane attests to the operator: predicted
	// measurements, latch = the cluster ID.
	cpVM.Expect(t, scenario.StatusServing, 2*time.Minute)
	verifyJoined(t, c, cp.Addr(scenario.AttestedPort), clusterID)
	checkHealthProbes(t, cp)

	// 2. Worker: boots during an outage of the join service (its address
	// is a proxy that refuses connections), keeps trying, says why it
	// waits, and joins by itself once the service is back.
	proxy := harness.NewProxy(t, cp.Addr(scenario.JoinServicePort), false)
	worker := c.NewWorker(t, "worker-1", proxy.Port())
	wVM := worker.Boot(t)
	wVM.Console.FailOn = clusterFailures
	wVM.Expect(t, scenario.DiskFormatted, 5*time.Minute)
	st := harness.WaitStatus(t, worker.Addr(scenario.StatusPort), 5*time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && r.GetAttempts() >= 2 && r.GetLastError() != ""
	})
	t.Logf("outage: worker-1 %s after %d attempts: %s", st.GetPhase(), st.GetAttempts(), st.GetLastError())
	proxy.SetUp(t, true)
	up := time.Now()
	wVM.Expect(t, scenario.Joined, 20*time.Minute)
	t.Logf("worker-1 joined %s after the join service came back", since(up))
	scenario.WaitNode(t, kube, "worker-1", 10*time.Minute, scenario.Registered)
	t.Logf("worker-1: power-on to Node registered %s", since(wVM.Started))
	scenario.WaitNode(t, kube, "worker-1", 10*time.Minute, scenario.Ready)
	t.Logf("worker-1: power-on to Node Ready %s", since(wVM.Started))

	checkKubeletCertFromJoin(t, kube, "worker-1")
	waitNoCloisterTokens(t, kube, 4*time.Minute)
	checkJoinServiceIdentity(t, c, kube)

	// 3. Tamper: a node whose initrd differs by a few bytes boots with the
	// cluster's configuration.
	tampered := c.NewNode(t, "tampered", tamperedInitrdESP(t, c.Image.UKI), proxy.Port(), "worker-2")
	tVM := tampered.Boot(t)
	tVM.Console.FailOn = scenario.BootFailures
	tVM.Expect(t, scenario.DiskFormatted, 5*time.Minute)
	st = harness.WaitStatus(t, tampered.Addr(scenario.StatusPort), 5*time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && strings.Contains(r.GetLastError(), "pcr[")
	})
	pcr := regexp.MustCompile(`pcr\[\d+\]`).FindString(st.GetLastError())
	t.Logf("tampered node waits: %s", st.GetLastError())
	refusal := regexp.MustCompile(`joinservice\[\d+\]: .*"msg":"attestation refused".*"reason":"` + regexp.QuoteMeta(pcr) + `"`)
	if !refusal.MatchString(scenario.ConsoleText(t, cpVM)) {
		t.Errorf("the join service's log has no audit line refusing the attestation for %s", pcr)
	}
	metrics := httpGet(t, "http://"+cp.Addr(scenario.MetricsPort)+"/metrics")
	if want := `cloister_joinservice_rejections_total{reason="` + pcr + `",stage="attestation"}`; !strings.Contains(metrics, want) {
		t.Errorf("join service metrics lack %s", want)
	}
	if _, err := kube.CoreV1().Nodes().Get(context.Background(), "worker-2", metav1.GetOptions{}); err == nil {
		t.Error("the tampered node was registered as worker-2")
	}
	tVM.Stop()

	// 4. Double join: someone holding the worker's disk key deletes the
	// bootstrapper's state file. At the next boot disk-mapper gets the key
	// from the join service (which extends the latch), and the bootstrapper,
	// finding no state, asks to join again in the same boot: refused, the
	// latch names why. The disk is put back afterwards.
	wVM.Stop()
	backup := copyFile(t, worker.StateDisk)
	fs := c.StateFS(t, worker)
	fs.Remove(t, "bootstrapper-state.json")
	fs.WriteBack(t)
	wVM = worker.Boot(t)
	wVM.Console.FailOn = rebootFailures
	wVM.Expect(t, scenario.RejoinReady, 5*time.Minute)
	st = harness.WaitStatus(t, worker.Addr(scenario.StatusPort), 5*time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && strings.Contains(r.GetLastError(), "latch")
	})
	t.Logf("second join in one boot: %s", st.GetLastError())
	if !regexp.MustCompile(`joinservice\[\d+\]: .*"decision":"refused".*latch`).MatchString(scenario.ConsoleText(t, cpVM)) {
		t.Error("the join service's audit log has no refusal naming the latch")
	}
	wVM.Stop()
	if err := os.Rename(backup, worker.StateDisk); err != nil {
		t.Fatal(err)
	}

	// 5. The worker power-cycles: the join service gives the key back.
	prev := scenario.WaitNode(t, kube, "worker-1", time.Minute, scenario.Registered)
	wVM = worker.Boot(t)
	wVM.Console.FailOn = rebootFailures
	wVM.Expect(t, scenario.KeyedDiskWaits, 5*time.Minute)
	if m := wVM.Expect(t, scenario.LatchExtended, 5*time.Minute); m[1] != clusterID {
		t.Errorf("after the reboot disk-mapper extended the latch with %s, want the cluster ID %s", m[1], clusterID)
	}
	wVM.Expect(t, scenario.RejoinReady, 2*time.Minute)
	wVM.Expect(t, scenario.JoinedBefore, 2*time.Minute)
	prev = waitSameNodeReady(t, kube, prev)
	t.Logf("worker-1: power-on to the same Node Ready again %s", since(wVM.Started))
	wVM.Expect(t, scenario.StatusServing, time.Minute)
	verifyJoined(t, c, worker.Addr(scenario.AttestedPort), clusterID)

	// 6. The worker power-cycles with no join service reachable: the
	// operator recovers it.
	wVM.Stop()
	proxy.SetUp(t, false)
	wVM = worker.Boot(t)
	wVM.Console.FailOn = rebootFailures
	m := wVM.Expect(t, scenario.KeyedDiskWaits, 5*time.Minute)
	diskUUID := m[1]
	wVM.Expect(t, recoveryServing, time.Minute)
	wVM.Expect(t, rejoinFailed, 2*time.Minute)
	// `cloister verify` through disk-mapper's attested port: PCR 15 is at
	// its reset value until a key arrives (exit 4), and the CLI names the
	// value the cluster's latch must reach.
	out, stderr, code := scenario.CLIExit(t, c.CLI, 3*time.Minute, append([]string{"verify", "--node", worker.Addr(scenario.AttestedPort), "--policy", c.Policy, "--cluster-dir", c.ClusterDir, "-o", "json"}, c.Roots...)...)
	if code != exitLatch {
		t.Fatalf("cloister verify of the waiting worker: exit %d, want %d (latch at its reset value)\nstdout:\n%s\nstderr:\n%s", code, exitLatch, out, stderr)
	}
	if latch := verifyLatch(t, out); code != exitLatch || latch.Match || latch.Got != strings.Repeat("0", 64) || latch.ClusterID != clusterID || latch.Want != expectedPCR15(t, clusterID) {
		t.Errorf("cloister verify before the key: exit %d, latch %+v; want exit %d, pcr[15] at its reset value, want SHA-256(zeros ‖ %s)\n%s", code, latch, exitLatch, clusterID, stderr)
	}
	wrong := otherClusterDir(t)
	recoverArgs := func(dir string) []string {
		return append([]string{"recover", "--node", worker.Addr(scenario.AttestedPort), "--disk-uuid", diskUUID, "--policy", c.Policy, "--cluster-dir", dir}, c.Roots...)
	}
	if _, stderr, code = scenario.CLIExit(t, c.CLI, 3*time.Minute, recoverArgs(wrong)...); code != exitNodeRefused {
		t.Errorf("cloister recover with another cluster's directory: exit %d, want %d\n%s", code, exitNodeRefused, stderr)
	}
	wVM.Expect(t, recoveryRefused, time.Minute)
	harness.WaitStatus(t, worker.Addr(scenario.StatusPort), time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "disk-mapper" && r.GetPhase() == "waiting-for-key"
	})
	start := time.Now()
	if out, stderr, code = scenario.CLIExit(t, c.CLI, 3*time.Minute, recoverArgs(c.ClusterDir)...); code != exitOK || !strings.Contains(out+stderr, diskUUID) {
		t.Fatalf("cloister recover: exit %d, want %d and the disk UUID %s\n%s%s", code, exitOK, diskUUID, out, stderr)
	}
	if m := wVM.Expect(t, scenario.LatchExtended, time.Minute); m[1] != clusterID {
		t.Errorf("after the recovery disk-mapper extended the latch with %s, want %s", m[1], clusterID)
	}
	wVM.Expect(t, recoveredReady, time.Minute)
	t.Logf("cloister recover to disk ready: %s", since(start))
	wVM.Expect(t, scenario.JoinedBefore, 2*time.Minute)
	waitSameNodeReady(t, kube, prev)

	// What the nodes wrote is on their disks only as ciphertext; the
	// worker's kubelet files are intact after four boots (three of them after a power cut).
	// The join service's audit lines name each token by its public ID; its
	// secret half must appear nowhere.
	ids := tokenIDText.FindAllStringSubmatch(scenario.ConsoleText(t, cpVM), -1)
	if len(ids) == 0 {
		t.Error("the join service's audit log names no bootstrap token ID")
	}
	for _, id := range ids {
		secret := regexp.MustCompile(regexp.QuoteMeta(id[1]) + `\.[a-z0-9]{16}`)
		for _, vm := range []*harness.VM{cpVM, wVM} {
			if secret.MatchString(scenario.ConsoleText(t, vm)) {
				t.Errorf("a serial console shows bootstrap token %s with its secret", id[1])
			}
		}
	}
	wVM.Stop()
	cpVM.Stop()
	for _, node := range []*harness.Node{cp, worker} {
		md, _ := harness.LUKSDump(t, node.StateDisk)
		if tok := md.Tokens["0"]; tok.Type != "cloister-state" || !tok.Keyed || tok.Generation != 1 {
			t.Errorf("%s: state disk token %+v, want a keyed cloister-state token, generation 1", node.Config.Name, md.Tokens)
		}
	}
	if leaked := harness.ContainsAny(t, worker.StateDisk, []byte("kubelet-client-current.pem"), []byte("system:node:worker-1"), []byte("bootstrapper-state.json")); len(leaked) > 0 {
		t.Errorf("worker's raw state disk shows plaintext: %q", leaked)
	}
	if kc := c.StateFile(t, worker, "k8s/etc-kubernetes/kubelet.conf"); !strings.Contains(kc, "client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem") {
		t.Errorf("worker's kubelet.conf on the decrypted state disk does not name the attested certificate:\n%s", kc)
	}
}

// copyFile copies a (sparse) disk image next to itself and returns the
// copy's path.
func copyFile(t *testing.T, path string) string {
	t.Helper()
	dst := path + ".backup"
	if out, err := exec.Command("cp", "--sparse=always", path, dst).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v\n%s", path, err, out)
	}
	return dst
}

// waitSameNodeReady waits until the Node prev is Ready as reported by the
// kubelet of a later boot, and checks it is the same Node object (no new
// registration). It returns the Node as seen then.
func waitSameNodeReady(t *testing.T, kube kubernetes.Interface, prev *corev1.Node) *corev1.Node {
	t.Helper()
	n := scenario.WaitNode(t, kube, prev.Name, 10*time.Minute, scenario.RebootedReady(prev))
	if n.UID != prev.UID {
		t.Errorf("after the reboot %s is a new Node (uid %s, was %s)", prev.Name, n.UID, prev.UID)
	}
	return n
}

// otherClusterDir is a cluster directory with fresh secrets: another
// cluster's, whose derived disk key opens nothing here.
func otherClusterDir(t *testing.T) string {
	t.Helper()
	s, err := keys.NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := keys.MarshalClusterSecrets(s)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "other-cluster")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cluster-secrets.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// verifyJoined runs `cloister verify` against a joined node's attested
// port: the node passes the cluster's policy and its latch holds the
// cluster ID (PCR 15 = SHA-256(zeros ‖ cluster ID)).
func verifyJoined(t *testing.T, c *scenario.Cluster, addr, clusterID string) {
	t.Helper()
	out, stderr, code := scenario.CLIExit(t, c.CLI, 3*time.Minute, append([]string{"verify", "--node", addr, "--policy", c.Policy, "--cluster-dir", c.ClusterDir, "-o", "json"}, c.Roots...)...)
	if code != exitOK {
		t.Fatalf("cloister verify of the joined node at %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", addr, code, exitOK, out, stderr)
	}
	if latch := verifyLatch(t, out); !latch.Match || latch.ClusterID != clusterID || latch.Got != expectedPCR15(t, clusterID) {
		t.Errorf("cloister verify of %s: latch %+v, want pcr[15] = SHA-256(zeros ‖ %s)", addr, latch, clusterID)
	}
	t.Logf("cloister verify %s: exit 0, latch = cluster ID", addr)
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

// checkKubeletCertFromJoin: every kubelet client CSR for node is one the
// join service created after an attested join (it carries the join
// service's label and was issued); the kubelet made none of its own. A join
// attempt that timed out under TCG after its CSR was issued leaves one more
// such CSR for the attempt that succeeded: counted and logged, not refused.
func checkKubeletCertFromJoin(t testing.TB, kube kubernetes.Interface, node string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	csrs, err := kube.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing CSRs: %v", err)
	}
	var fromJoin, other int
	for _, c := range csrs.Items {
		if c.Spec.SignerName != "kubernetes.io/kube-apiserver-client-kubelet" || csrSubject(t, c.Spec.Request) != "system:node:"+node {
			continue
		}
		if c.Labels["cloister.dev/managed-by"] != "" && len(c.Status.Certificate) > 0 {
			fromJoin++
			continue
		}
		other++
		t.Errorf("kubelet client CSR %s by %q (no join service label): the kubelet asked for a certificate of its own", c.Name, c.Spec.Username)
	}
	if fromJoin == 0 {
		t.Errorf("want an issued kubelet CSR from the join service for %s, got none (and %d others)", node, other)
	}
	t.Logf("%s: %d issued kubelet CSR(s) from the join service, none of the kubelet's own", node, fromJoin)
}

// csrSubject is the common name a CSR asks for.
func csrSubject(t testing.TB, request []byte) string {
	t.Helper()
	b, _ := pem.Decode(request)
	if b == nil {
		t.Fatalf("CSR request is not PEM")
	}
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatalf("parsing a CSR: %v", err)
	}
	return req.Subject.CommonName
}

// checkJoinServiceIdentity checks, against the real API server, that the
// join service works as its own least-privilege user: the kubelet CSR it
// created was requested by rbac.UserName (not kubernetes-admin), what it
// needs is allowed and what it must not do is Forbidden. The forbidden
// writes are dry runs: the API server authorizes a dry run like the real
// request, and a failed check leaves the cluster intact.
func checkJoinServiceIdentity(t *testing.T, c *scenario.Cluster, admin kubernetes.Interface) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	csrs, err := admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{LabelSelector: "cloister.dev/managed-by=joinservice"})
	if err != nil {
		t.Fatalf("listing the join service's CSRs: %v", err)
	}
	if len(csrs.Items) == 0 {
		t.Fatal("no CSR of the join service found")
	}
	for _, csr := range csrs.Items {
		if csr.Spec.Username != rbac.UserName || slices.Contains(csr.Spec.Groups, "system:masters") {
			t.Errorf("CSR %s requested by %q in %q: want %q, not in system:masters", csr.Name, csr.Spec.Username, csr.Spec.Groups, rbac.UserName)
		}
	}

	canary := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "cloister-e2e-canary", Namespace: "kube-system"},
		StringData: map[string]string{"canary": "the join service must not read this"},
	}
	if _, err := admin.CoreV1().Secrets("kube-system").Create(ctx, canary, metav1.CreateOptions{}); err != nil {
		t.Fatalf("planting a canary Secret: %v", err)
	}
	js := c.KubeAs(t, rbac.UserName)
	dry := []string{metav1.DryRunAll}
	forbidden := []struct {
		name string
		call func() error
	}{
		{"get a Secret in kube-system", func() error {
			_, err := js.CoreV1().Secrets("kube-system").Get(ctx, canary.Name, metav1.GetOptions{})
			return err
		}},
		{"list Secrets in kube-system", func() error {
			_, err := js.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list bootstrap tokens by label", func() error {
			_, err := js.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "cloister.dev/managed-by=joinservice"})
			return err
		}},
		{"get a Secret in default", func() error {
			_, err := js.CoreV1().Secrets("default").Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{"delete a Node", func() error {
			return js.CoreV1().Nodes().Delete(ctx, "worker-1", metav1.DeleteOptions{DryRun: dry})
		}},
		{"list Nodes", func() error {
			_, err := js.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Pods in kube-system", func() error {
			_, err := js.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"read kubeadm-config", func() error {
			_, err := js.CoreV1().ConfigMaps("kube-system").Get(ctx, "kubeadm-config", metav1.GetOptions{})
			return err
		}},
		{"bind itself to cluster-admin", func() error {
			_, err := js.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "cloister-e2e-escalation"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: rbac.UserName}},
			}, metav1.CreateOptions{DryRun: dry})
			return err
		}},
	}
	for _, f := range forbidden {
		err := f.call()
		if !apierrors.IsForbidden(err) {
			t.Errorf("join service identity: %s: want Forbidden, got %v", f.name, err)
		}
	}
	// What it needs works as the same user.
	if _, err := js.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{}); err != nil {
		t.Errorf("join service identity: get cluster-info: want allowed, got %v", err)
	}
	if _, err := js.CoreV1().Nodes().Get(ctx, "worker-1", metav1.GetOptions{}); err != nil {
		t.Errorf("join service identity: get Node worker-1: want allowed, got %v", err)
	}
	// Every rule of the table, and every forbidden action, as the API
	// server's authorizer answers for that user.
	ask := func(a rbac.Action) bool {
		res, sub, _ := strings.Cut(a.Resource, "/")
		r, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:   rbac.UserName,
			Groups: []string{"system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: a.Namespace, Verb: a.Verb, Group: a.APIGroup, Resource: res, Subresource: sub, Name: a.Name,
			},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview %+v: %v", a, err)
		}
		return r.Status.Allowed
	}
	for _, a := range rbac.Forbidden() {
		if ask(a) {
			t.Errorf("join service identity: %+v: want denied, got allowed", a)
		}
	}
	for _, r := range rbac.Rules() {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, v := range r.Verbs {
			for _, n := range names {
				if a := (rbac.Action{Namespace: r.Namespace, APIGroup: r.APIGroup, Resource: r.Resource, Verb: v, Name: n}); !ask(a) {
					t.Errorf("join service identity: %+v: want allowed, got denied", a)
				}
			}
		}
	}
	if err := admin.CoreV1().Secrets("kube-system").Delete(ctx, canary.Name, metav1.DeleteOptions{}); err != nil {
		t.Errorf("removing the canary Secret: %v", err)
	}
	t.Logf("the join service works as %s: %d forbidden calls refused, its rules allowed", rbac.UserName, len(forbidden)+len(rbac.Forbidden()))
}

// waitNoCloisterTokens waits until the join service swept every bootstrap
// token it created (it does once their node is registered).
func waitNoCloisterTokens(t testing.TB, kube kubernetes.Interface, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		secrets, err := kube.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "cloister.dev/managed-by"})
		cancel()
		if err != nil {
			t.Fatalf("listing bootstrap tokens: %v", err)
		}
		left := 0
		for _, s := range secrets.Items {
			if s.Type == corev1.SecretTypeBootstrapToken {
				left++
			}
		}
		if left == 0 {
			t.Logf("the join service's bootstrap tokens are gone")
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bootstrap token(s) of the join service still exist after %s", left, d)
		}
		time.Sleep(10 * time.Second)
	}
}

// tamperedInitrdESP is a boot disk with the image's unified kernel image
// rebuilt around an initrd with one more file in it (appendToInitrd): it
// boots like the genuine one, but measures differently.
func tamperedInitrdESP(t *testing.T, ukiPath string) string {
	t.Helper()
	uki, err := os.ReadFile(ukiPath)
	if err != nil {
		t.Fatal(err)
	}
	initrd, ok, err := measure.Section(uki, ".initrd")
	if err != nil || !ok {
		t.Fatalf("the image's UKI has no .initrd section: %v", err)
	}
	dir := t.TempDir()
	return harness.NewESP(t, dir, harness.RebuildUKI(t, dir, ukiPath, map[string][]byte{".initrd": appendToInitrd(t, slices.Clone(initrd))}))
}

// httpGet returns the body of a GET that must answer 200.
func httpGet(t testing.TB, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	return string(b)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// checkHealthProbes runs the standard grpc-health-probe against the
// control plane's plain ports, as a Kubernetes gRPC probe or a load
// balancer would: the join service's (9092) answers SERVING for
// cloister.join.v1.JoinService once its readiness checks pass (policy,
// cluster secrets, Kubernetes API), the node's status port (9101) for the
// overall health.
func checkHealthProbes(t *testing.T, cp *harness.Node) {
	t.Helper()
	probe := harness.HealthProbe(t)
	for _, tc := range []struct{ addr, service string }{
		{cp.Addr(scenario.JoinServiceStatusPort), "cloister.join.v1.JoinService"},
		{cp.Addr(scenario.JoinServiceStatusPort), ""},
		{cp.Addr(scenario.StatusPort), ""},
	} {
		args := []string{"-addr=" + tc.addr, "-connect-timeout=10s", "-rpc-timeout=10s", "-service=" + tc.service}
		var out []byte
		var err error
		// Readiness is re-checked every 10 s: allow a few rounds.
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Second) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err = exec.CommandContext(ctx, probe, args...).CombinedOutput()
			cancel()
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("grpc-health-probe %v: %v\n%s", args, err, out)
		}
		t.Logf("grpc-health-probe %s service %q: %s", tc.addr, tc.service, strings.TrimSpace(string(out)))
	}
}
