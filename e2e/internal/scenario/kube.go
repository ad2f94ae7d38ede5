package scenario

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
)

// Kube is a clientset for the admin kubeconfig `cloister init` saved,
// dialing the API server through its 127.0.0.1 forward. The server
// certificate is checked against the cluster CA under the name
// "kubernetes", which kubeadm puts into it (the guest-side address in the
// kubeconfig is not reachable from the host).
func (c *Cluster) Kube(t harness.TB) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.ClusterDir+"/kubeconfig")
	if err != nil {
		t.Fatalf("loading the admin kubeconfig: %v", err)
	}
	cfg.Host = "https://" + c.ControlPlane.Addr(KubeAPIPort)
	cfg.TLSClientConfig.ServerName = "kubernetes"
	cfg.Timeout = 30 * time.Second
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// KubeAs is Kube impersonating user (in no group but
// system:authenticated, which the API server adds to every authenticated
// user, as it does for a client certificate without organizations): the
// API server authorizes each request with user's RBAC, as it would for
// that user's own certificate.
func (c *Cluster) KubeAs(t harness.TB, user string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.ClusterDir+"/kubeconfig")
	if err != nil {
		t.Fatalf("loading the admin kubeconfig: %v", err)
	}
	cfg.Host = "https://" + c.ControlPlane.Addr(KubeAPIPort)
	cfg.TLSClientConfig.ServerName = "kubernetes"
	cfg.Timeout = 30 * time.Second
	cfg.Impersonate.UserName = user
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// WaitNode polls the Node name until ok holds and returns it.
func WaitNode(t harness.TB, kube kubernetes.Interface, name string, d time.Duration, ok func(*corev1.Node) bool) *corev1.Node {
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
			last = fmt.Sprintf("conditions %v", Conditions(n))
		default:
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("Node %s: not as expected after %s: %s", name, d, last)
		}
		time.Sleep(5 * time.Second)
	}
}

// Registered accepts any Node.
func Registered(*corev1.Node) bool { return true }

// Ready reports the Node's Ready condition.
func Ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RebootedReady is a WaitNode condition: Ready as reported by the kubelet of
// a later boot than prev's. The kernel's boot ID (status.nodeInfo.bootID)
// changes at every boot; a Ready condition alone could be the one posted
// before the power cut.
func RebootedReady(prev *corev1.Node) func(*corev1.Node) bool {
	return func(n *corev1.Node) bool {
		return Ready(n) && n.Status.NodeInfo.BootID != "" && n.Status.NodeInfo.BootID != prev.Status.NodeInfo.BootID
	}
}

// Conditions are the Node's conditions as "status (reason)".
func Conditions(n *corev1.Node) map[corev1.NodeConditionType]string {
	out := map[corev1.NodeConditionType]string{}
	for _, c := range n.Status.Conditions {
		out[c.Type] = string(c.Status) + " (" + c.Reason + ")"
	}
	return out
}
