package kubeadm

import (
	"os"
	"os/exec"
	"testing"
)

// realKubeadm returns the path of a real kubeadm (make kubeadm builds one and
// exports CLOISTER_KUBEADM). Missing: fatal when CI=true, skipped elsewhere.
func realKubeadm(tb testing.TB) string {
	tb.Helper()
	p := os.Getenv("CLOISTER_KUBEADM")
	if p != "" {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("a real kubeadm is required in CI: CLOISTER_KUBEADM=%q is not executable; run make kubeadm", p)
	}
	tb.Skipf("no real kubeadm (CLOISTER_KUBEADM=%q): run make kubeadm, or make test which exports it", p)
	return ""
}
