package kube

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// independentPin computes kubeadm's pin from the parsed public key, not
// from the raw SPKI bytes the code under test hashes.
func independentPin(t *testing.T, cert *x509.Certificate) string {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func clusterInfoConfigMap(server string, caPEM []byte) *corev1.ConfigMap {
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: ""
  cluster:
    certificate-authority-data: %s
    server: %s
contexts: null
current-context: ""
preferences: {}
users: null
`, base64.StdEncoding.EncodeToString(caPEM), server)
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: metav1.NamespacePublic},
		Data:       map[string]string{"kubeconfig": kubeconfig},
	}
}

func rootCAConfigMap(caPEM []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: metav1.NamespaceSystem},
		Data:       map[string]string{"ca.crt": string(caPEM)},
	}
}

func TestCACertHashesFromClusterInfoWithFakeClientset(t *testing.T) {
	ca, next := newTestCA(t, "kubernetes"), newTestCA(t, "kubernetes-next")
	bundle := append(append([]byte{}, ca.pem...), next.pem...)
	c, _ := newFakeCluster(t, Options{},
		clusterInfoConfigMap("https://10.0.0.1:6443", bundle),
		rootCAConfigMap(newTestCA(t, "other").pem)) // must not be used
	got, err := c.CACertHashes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{independentPin(t, ca.cert), independentPin(t, next.cert)}
	if !slices.Equal(got, want) {
		t.Fatalf("CACertHashes = %v, want %v", got, want)
	}
	ep, err := c.APIServerEndpoint(context.Background())
	if err != nil || ep != "10.0.0.1:6443" {
		t.Fatalf("APIServerEndpoint = %q, %v; want 10.0.0.1:6443", ep, err)
	}
}

func TestCACertHashesFallsBackToRootCAWithFakeClientset(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	c, _ := newFakeCluster(t, Options{}, rootCAConfigMap(ca.pem))
	got, err := c.CACertHashes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{independentPin(t, ca.cert)}; !slices.Equal(got, want) {
		t.Fatalf("CACertHashes = %v, want %v", got, want)
	}
	if _, err := c.APIServerEndpoint(context.Background()); err == nil {
		t.Fatal("APIServerEndpoint without cluster-info succeeded")
	}
}

func TestDiscoveryErrorsWithFakeClientset(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	noKey := clusterInfoConfigMap("https://10.0.0.1:6443", ca.pem)
	noKey.Data = map[string]string{"other": "x"}
	garbage := clusterInfoConfigMap("https://10.0.0.1:6443", ca.pem)
	garbage.Data["kubeconfig"] = "clusters: {{{"
	twoClusters := clusterInfoConfigMap("https://10.0.0.1:6443", ca.pem)
	twoClusters.Data["kubeconfig"] = "clusters:\n- name: a\n- name: b\n"
	for _, tc := range []struct {
		name    string
		objects []runtime.Object
	}{
		{"no cluster-info and no kube-root-ca.crt", nil},
		{"cluster-info without kubeconfig", []runtime.Object{noKey}},
		{"cluster-info kubeconfig not YAML", []runtime.Object{garbage}},
		{"cluster-info with two clusters", []runtime.Object{twoClusters}},
		{"cluster-info without CA data", []runtime.Object{clusterInfoConfigMap("https://10.0.0.1:6443", nil)}},
		{"CA data is a private key", []runtime.Object{clusterInfoConfigMap("https://10.0.0.1:6443", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))}},
		{"CA data is not PEM", []runtime.Object{clusterInfoConfigMap("https://10.0.0.1:6443", []byte("hello"))}},
		{"kube-root-ca.crt empty", []runtime.Object{rootCAConfigMap(nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newFakeCluster(t, Options{}, tc.objects...)
			if pins, err := c.CACertHashes(context.Background()); err == nil {
				t.Fatalf("CACertHashes = %v, want an error", pins)
			}
		})
	}
}

func TestAPIServerEndpointWithFakeClientset(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	for server, want := range map[string]string{
		"https://10.0.0.1:6443":        "10.0.0.1:6443",
		"https://cp.example":           "cp.example:443",
		"https://[fd00::1]:6443":       "[fd00::1]:6443",
		"https://[fd00::1]":            "[fd00::1]:443",
		"http://10.0.0.1:6443":         "",
		"":                             "",
		"10.0.0.1:6443":                "",
		"https://:6443":                "",
		"https://10.0.0.1:6443/%zz":    "",
		"unix:///var/run/kube.sock":    "",
		"https://user@10.0.0.1:6443/x": "10.0.0.1:6443",
	} {
		c, _ := newFakeCluster(t, Options{}, clusterInfoConfigMap(fmt.Sprintf("%q", server), ca.pem))
		got, err := c.APIServerEndpoint(context.Background())
		if want == "" {
			if err == nil {
				t.Errorf("server %q: got %q, want an error", server, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("server %q: got %q, %v; want %q", server, got, err, want)
		}
	}
}
