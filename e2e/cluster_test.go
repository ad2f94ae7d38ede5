package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
	"github.com/cloister-dev/cloister/internal/keys"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

const (
	// kubeAPIPort is the API server's port in a control-plane guest.
	kubeAPIPort = 6443
	// metricsPort is the join service's Prometheus port.
	metricsPort = 9091
)

var (
	// joinedNow is the bootstrapper's last transition of a join or init.
	joinedNow = regexp.MustCompile(`bootstrapper\[\d+\]: .*"msg":"state transition".*"phase":"joined"`)
	// rejoinReady is disk-mapper opening a keyed disk with the key a join
	// service released after a reboot.
	rejoinReady = regexp.MustCompile(`disk-mapper\[\d+\]: .*"msg":"state disk ready".*"formatted":false,"key_source":"rejoin"`)
	// bootstrapTokenText is a kubeadm bootstrap token in clear.
	bootstrapTokenText = regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`)
	// clusterFailures end a wait early on a Kubernetes node: a Cloister
	// unit failed, or the boot did.
	clusterFailures = []*regexp.Regexp{
		regexp.MustCompile(`Failed to start .*(disk-mapper|[Bb]ootstrapper|[Cc]loister)`),
		regexp.MustCompile(`Kernel panic`),
		regexp.MustCompile(`(disk-mapper|bootstrapper)\[\d+\]: .*"level":"ERROR"`),
		regexp.MustCompile(`"msg":"state transition".*"phase":"failed"`),
	}
)

// TestClusterInitJoinReboot is the whole chain with real Kubernetes: a
// control-plane VM is initialized by `cloister init` (real kubeadm init with
// etcd, API server, controller manager and scheduler as static pods from the
// image's built-in container images); a worker VM attests to the join
// service that the control plane started, gets its disk key, a bootstrap
// token, the CA pins and a kubelet client certificate, and runs real
// kubeadm join. From the host, client-go through the forwarded API port
// sees both Nodes Ready; the worker's kubelet certificate is the one the
// join service had signed (no CSR of the kubelet's own); the worker's
// bootstrap token is gone. Then the worker reboots: disk-mapper gets its
// key back from the join service by itself and extends the latch with the
// cluster ID, and the same Node comes back Ready with its state intact.
func TestClusterInitJoinReboot(t *testing.T) {
	cp := newControlPlane(t, nodeOptions{kubernetes: true})
	endpoint := "10.0.2.2:" + strconv.Itoa(cp.node.HostPort(kubeAPIPort))

	// 1. Control plane: cloister init.
	cpVM := bootUntilWaiting(t, cp.node)
	cpVM.Console.FailOn = clusterFailures
	start := time.Now()
	if _, stderr, err := cliResult(cp.cli, 30*time.Minute, append([]string{"init", "--node", cp.node.Addr(attestedPort), "--policy", cp.policy,
		"--cluster-dir", cp.clusterDir, "--control-plane-endpoint", endpoint}, cp.roots...)...); err != nil {
		cpVM.Stop()
		t.Fatalf("cloister init: %v\n%s\nkubeadm's log on the control plane's state disk:\n%s", err, stderr, stateFile(t, cp.node, cp.clusterDir, "kubeadm.log"))
	}
	t.Logf("cloister init (kubeadm init included): %s; control plane up %s after QEMU start",
		time.Since(start).Round(time.Second), time.Since(cpVM.Started).Round(time.Second))
	clusterID := clusterIDOf(t, cp.clusterDir)
	kube := kubeClient(t, cp.clusterDir+"/kubeconfig", cp.node.Addr(kubeAPIPort))
	waitNode(t, kube, "cp-1", 10*time.Minute, nodeReady)

	// 2. Worker: boots during an outage of the join service (its address
	// is a proxy that drops every connection), keeps trying, says why it
	// waits, and joins by itself once the service is back.
	proxy := harness.NewProxy(t, cp.node.Addr(joinServicePort), false)
	worker := cp.newWorker(t, "worker-1", proxy.Port())
	wVM := worker.Boot(t)
	wVM.Console.FailOn = clusterFailures
	wVM.Expect(t, diskReady, 5*time.Minute)
	st := harness.WaitStatus(t, worker.Addr(statusPort), 5*time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && r.GetAttempts() >= 2 && r.GetLastError() != ""
	})
	t.Logf("outage: worker-1 %s after %d attempts: %s", st.GetPhase(), st.GetAttempts(), st.GetLastError())
	proxy.SetUp(true)
	wVM.Expect(t, joinedNow, 20*time.Minute)
	n := waitNode(t, kube, "worker-1", 10*time.Minute, nodeRegistered)
	t.Logf("worker-1: power-on to Node registered %s", time.Since(wVM.Started).Round(time.Second))
	n = waitNode(t, kube, "worker-1", 10*time.Minute, nodeReady)
	t.Logf("worker-1: power-on to Node Ready %s", time.Since(wVM.Started).Round(time.Second))
	uid := n.UID

	checkKubeletCertFromJoin(t, kube, "worker-1")
	// The control plane's verify through its join service: the latch holds
	// the cluster ID.
	out := runCLI(t, cp.cli, 3*time.Minute, append([]string{"verify", "--node", cp.node.Addr(joinServicePort), "--policy", cp.policy, "--cluster-dir", cp.clusterDir, "-o", "json"}, cp.roots...)...)
	if latch := verifyLatch(t, out); !latch.Match || latch.ClusterID != clusterID {
		t.Errorf("cloister verify of the control plane: latch %+v, want it to hold cluster ID %s", latch, clusterID)
	}
	waitNoCloisterTokens(t, kube, 4*time.Minute)

	// Both state disks are LUKS2 with a keyed token; the kubelet's files on
	// the worker's disk are only ciphertext.
	for _, node := range []*harness.Node{cp.node, worker} {
		md, _ := harness.LUKSDump(t, node.StateDisk)
		if tok := md.Tokens["0"]; tok.Type != "cloister-state" || !tok.Keyed || tok.Generation != 1 {
			t.Errorf("%s: state disk token %+v, want a keyed cloister-state token, generation 1", node.Config.Name, md.Tokens)
		}
	}
	if leaked := harness.ContainsAny(t, worker.StateDisk, []byte("kubelet-client-current.pem"), []byte("system:node:worker-1"), []byte("bootstrapper-state.json")); len(leaked) > 0 {
		t.Errorf("worker's raw state disk shows plaintext: %q", leaked)
	}

	// 3. Tamper: a node whose initrd differs by a few bytes boots with the
	// cluster's configuration. The join service refuses it and names the
	// PCR, in its log and its metrics; the node's status says why it waits.
	tamperedESP := harness.NewESP(t, t.TempDir(), cp.image.Vmlinuz, tamperedInitrd(t, cp.image.Initrd), harness.KernelCmdline(cp.image.Cmdline))
	tampered := cp.newNode(t, "tampered", tamperedESP, proxy.Port(), "worker-2")
	tVM := tampered.Boot(t)
	tVM.Console.FailOn = bootFailures
	tVM.Expect(t, diskReady, 5*time.Minute)
	st = harness.WaitStatus(t, tampered.Addr(statusPort), 5*time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && strings.Contains(r.GetLastError(), "pcr[")
	})
	pcr := regexp.MustCompile(`pcr\[\d+\]`).FindString(st.GetLastError())
	t.Logf("tampered node waits: %s", st.GetLastError())
	refusal := regexp.MustCompile(`joinservice\[\d+\]: .*"decision":"refused".*` + regexp.QuoteMeta(pcr))
	if !refusal.MatchString(consoleText(t, cpVM)) {
		t.Errorf("the join service's log has no refusal naming %s", pcr)
	}
	metrics := httpGet(t, "http://"+cp.node.Addr(metricsPort)+"/metrics")
	if want := `cloister_joinservice_rejections_total{reason="` + pcr + `",stage="attestation"}`; !strings.Contains(metrics, want) {
		t.Errorf("join service metrics lack %s", want)
	}
	if _, err := kube.CoreV1().Nodes().Get(context.Background(), "worker-2", metav1.GetOptions{}); err == nil {
		t.Error("the tampered node was registered as worker-2")
	}
	tVM.Stop()

	// 4. The worker reboots (power cut): the join service gives the key
	// back, no operator involved.
	wVM.Stop()
	wVM = worker.Boot(t)
	wVM.Console.FailOn = rebootFailures
	wVM.Expect(t, keyedDiskWaits, 5*time.Minute)
	m := wVM.Expect(t, latchExtended, 5*time.Minute)
	if m[1] != clusterID {
		t.Errorf("after the reboot disk-mapper extended the latch with %s, want the cluster ID %s", m[1], clusterID)
	}
	wVM.Expect(t, rejoinReady, 2*time.Minute)
	wVM.Expect(t, bootstrapperJoinedBefore, 2*time.Minute)
	harness.WaitStatus(t, worker.Addr(statusPort), 2*time.Minute, func(r *statusv1.GetResponse) bool {
		return r.GetComponent() == "bootstrapper" && r.GetPhase() == "joined"
	})
	rebooted := time.Now()
	n = waitNode(t, kube, "worker-1", 10*time.Minute, func(n *corev1.Node) bool {
		return nodeReady(n) && readySince(n).After(rebooted.Add(-2*time.Minute))
	})
	if n.UID != uid {
		t.Errorf("after the reboot worker-1 is a new Node (uid %s, was %s)", n.UID, uid)
	}
	t.Logf("worker-1: reboot to Node Ready again %s", time.Since(wVM.Started).Round(time.Second))

	// No bootstrap token in clear on either serial console.
	for name, vm := range map[string]*harness.VM{"cp": cpVM, "worker-1": wVM} {
		if tok := bootstrapTokenText.FindString(consoleText(t, vm)); tok != "" {
			t.Errorf("%s: serial console shows a bootstrap token in clear (%s…)", name, tok[:6])
		}
	}
}

// stateFile reads path from a powered-off node's state disk, decrypted on
// the host with the disk key derived from the cluster's secrets
// (generation 1); a read error is returned as the text.
func stateFile(t testing.TB, node *harness.Node, clusterDir, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(clusterDir, "cluster-secrets.json"))
	if err != nil {
		return err.Error()
	}
	secrets, err := keys.ParseClusterSecrets(b)
	if err != nil {
		return err.Error()
	}
	fs := harness.DecryptStateDisk(t, node.StateDisk, func(uuid string) []byte {
		k, err := secrets.DiskKey(uuid, keys.FirstGeneration)
		if err != nil {
			t.Fatal(err)
		}
		return k
	})
	out, err := fs.ReadFile(t, path)
	if err != nil {
		return err.Error()
	}
	return string(out)
}

// tamperedInitrd is a copy of initrd with 512 zero bytes appended: the
// kernel unpacks it the same way (trailing zeros are cpio padding), but its
// measurement differs.
func tamperedInitrd(t testing.TB, initrd string) string {
	t.Helper()
	b, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "initrd-tampered.img")
	if err := os.WriteFile(out, append(b, make([]byte, 512)...), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
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

// newWorker prepares a worker of cp's cluster: the same boot disk and root
// image, the cluster's policy and EK roots baked in, and 10.0.2.2:joinPort
// (a host port that reaches the control plane's join service) as its join
// endpoint, for the first join and after reboots.
func (cp *controlPlane) newWorker(t *testing.T, name string, joinPort int) *harness.Node {
	t.Helper()
	return cp.newNode(t, name, cp.esp, joinPort, name)
}

// newNode is newWorker with its own boot disk and Kubernetes node name.
func (cp *controlPlane) newNode(t *testing.T, name, esp string, joinPort int, nodeName string) *harness.Node {
	t.Helper()
	join := "10.0.2.2:" + strconv.Itoa(joinPort)
	return harness.NewNode(t, harness.NodeConfig{
		Name:     name,
		ESP:      esp,
		RootDisk: cp.image.Root,
		RootFiles: map[string][]byte{
			"/etc/cloister/join-service-policy.yaml": cp.policyDoc,
			"/etc/cloister/trust/tpm-ek-roots.pem":   cp.rootsPEM,
			"/etc/cloister/node.yaml":                fmt.Appendf(nil, "joinEndpoints: [%q]\n", join),
		},
		OEMStrings:   []string{"cloister.role=worker", "cloister.node=" + nodeName, "cloister.join=" + join},
		StateDiskMiB: 2048,
		Forwards:     []int{statusPort},
		TPMCA:        cp.ca,
		OVMF:         true,
		MemoryMiB:    2048,
		Timeout:      40 * time.Minute,
	})
}

// kubeClient is a clientset for the admin kubeconfig `cloister init` saved,
// dialing the API server through its 127.0.0.1 forward. The server
// certificate is checked against the cluster CA under the name
// "kubernetes", which kubeadm puts into it (the guest-side address in the
// kubeconfig is not reachable from the host).
func kubeClient(t testing.TB, kubeconfig, addr string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("loading the admin kubeconfig: %v", err)
	}
	cfg.Host = "https://" + addr
	cfg.TLSClientConfig.ServerName = "kubernetes"
	cfg.Timeout = 30 * time.Second
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitNode polls the Node name until ok holds and returns it.
func waitNode(t testing.TB, kube kubernetes.Interface, name string, d time.Duration, ok func(*corev1.Node) bool) *corev1.Node {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		cancel()
		switch {
		case err == nil && ok(n):
			return n
		case err == nil:
			last = fmt.Sprintf("conditions %v", conditions(n))
		default:
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("Node %s: not as expected after %s: %s", name, d, last)
		}
		time.Sleep(5 * time.Second)
	}
}

func nodeRegistered(*corev1.Node) bool { return true }

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readySince is when the Node's Ready condition last changed.
func readySince(n *corev1.Node) time.Time {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func conditions(n *corev1.Node) map[corev1.NodeConditionType]string {
	out := map[corev1.NodeConditionType]string{}
	for _, c := range n.Status.Conditions {
		out[c.Type] = string(c.Status) + " (" + c.Reason + ")"
	}
	return out
}

// checkKubeletCertFromJoin: the only kubelet client CSR for node is the one
// the join service created after the attested join (it carries the join
// service's label and was approved); the kubelet made none of its own.
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
		if c.Spec.SignerName != "kubernetes.io/kube-apiserver-client-kubelet" {
			continue
		}
		if c.Labels["cloister.dev/managed-by"] != "" && len(c.Status.Certificate) > 0 {
			fromJoin++
			continue
		}
		other++
		t.Errorf("kubelet client CSR %s by %q (no join service label): the kubelet asked for a certificate of its own", c.Name, c.Spec.Username)
	}
	if fromJoin != 1 {
		t.Errorf("want exactly one issued kubelet CSR from the join service for %s, got %d (and %d others)", node, fromJoin, other)
	}
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
