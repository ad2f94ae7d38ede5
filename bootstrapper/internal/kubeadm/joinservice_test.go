package kubeadm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/cloister-dev/cloister/joinservice/rbac"
)

// writeTestCA writes a self-signed cluster CA (ca.crt, ca.key) into dir, as
// kubeadm's certificatesDir holds it, and returns it.
func writeTestCA(tb testing.TB, dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return cert, key
}

// clientKubeconfig builds a kubeconfig with a client certificate for cn in
// groups orgs, signed by the CA.
func clientKubeconfig(tb testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, server, cn string, orgs ...string) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		tb.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: server}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		ClientKeyData:         pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	cfg.Contexts["x"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "x"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestCheckJoinServiceKubeconfigRefusesPowerfulIdentities(t *testing.T) {
	ca, caKey := writeTestCA(t, t.TempDir())
	const server = "https://10.0.2.15:6443"
	tests := []struct {
		name       string
		kubeconfig []byte
		wantErr    string // a fragment naming the failed check; "" for success
	}{
		{"the join service's own certificate", clientKubeconfig(t, ca, caKey, server, rbac.UserName), ""},
		{"kubeadm's admin.conf user", clientKubeconfig(t, ca, caKey, server, "kubernetes-admin", "kubeadm:cluster-admins"), "common name"},
		{"super-admin (system:masters)", clientKubeconfig(t, ca, caKey, server, rbac.UserName, "system:masters"), "groups"},
		{"plain http", clientKubeconfig(t, ca, caKey, "http://10.0.2.15:6443", rbac.UserName), "server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckJoinServiceKubeconfig(tt.kubeconfig)
			if tt.wantErr == "" {
				if err != nil || got != server {
					t.Fatalf("CheckJoinServiceKubeconfig = %q, %v; want %q, nil", got, err, server)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckJoinServiceKubeconfig err = %v, want one naming %q", err, tt.wantErr)
			}
		})
	}
}

// TestApplyJoinServiceRBACConvergesWithFakeClientset applies the RBAC
// objects to client-go's FAKE clientset over objects of the same names that
// grant too much, twice, and checks that the result is exactly the table.
func TestApplyJoinServiceRBACConvergesWithFakeClientset(t *testing.T) {
	tooMuch := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: rbac.ObjectName},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}},
	}
	wrongRef := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: rbac.ObjectName, Namespace: rbac.NamespaceSystem},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: rbac.UserName}, {Kind: rbacv1.UserKind, Name: "mallory"}},
	}
	client := fake.NewClientset(tooMuch, wrongRef)
	ctx := context.Background()
	for i := range 2 {
		if err := ApplyJoinServiceRBAC(ctx, client); err != nil {
			t.Fatalf("apply #%d: %v", i+1, err)
		}
	}
	want := rbac.NewObjects()
	cr, err := client.RbacV1().ClusterRoles().Get(ctx, rbac.ObjectName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cr.Rules) != len(want.ClusterRole.Rules) || slices.ContainsFunc(cr.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Verbs, "*") }) {
		t.Errorf("ClusterRole rules %+v, want %+v", cr.Rules, want.ClusterRole.Rules)
	}
	rb, err := client.RbacV1().RoleBindings(rbac.NamespaceSystem).Get(ctx, rbac.ObjectName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != rbac.ObjectName || len(rb.Subjects) != 1 || rb.Subjects[0].Name != rbac.UserName {
		t.Errorf("RoleBinding roleRef %+v subjects %+v, want Role %s for %s only", rb.RoleRef, rb.Subjects, rbac.ObjectName, rbac.UserName)
	}
	for _, r := range want.Roles {
		got, err := client.RbacV1().Roles(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil || len(got.Rules) != len(r.Rules) {
			t.Errorf("Role %s/%s: %v, rules %d, want %d", r.Namespace, r.Name, err, len(got.Rules), len(r.Rules))
		}
	}
}

// TestJoinServiceIdentityWithRealKubeadm runs the REAL kubeadm's
// `kubeconfig user` against a test CA, with the RBAC applied to client-go's
// FAKE clientset, and checks the kubeconfig: the join service's user in no
// group, signed by the cluster CA, 0600, and pointing at this node's own
// API server rather than the cluster's controlPlaneEndpoint.
func TestJoinServiceIdentityWithRealKubeadm(t *testing.T) {
	kubeadmPath := realKubeadm(t)
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if err := os.Mkdir(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, _ := writeTestCA(t, pki)
	userCfg, err := JoinServiceUserConfiguration(Init{
		NodeName: "cp-0", KubernetesVersion: "v1.37.2", CertificateKey: strings.Repeat("ab", 32),
		ControlPlaneEndpoint: "cluster.example:6443",
	}, pki)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "user-config.yaml")
	if err := os.WriteFile(cfgPath, userCfg, 0o600); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	out := filepath.Join(dir, "cloister-joinservice.conf")
	client := fake.NewClientset()
	id := JoinServiceIdentity{
		Runner:     Runner{Path: kubeadmPath, Output: &log},
		Kubeconfig: out,
		NewClient:  func(string) (kubernetes.Interface, error) { return client, nil },
	}
	if err := id.Ensure(context.Background(), cfgPath); err != nil {
		t.Fatalf("Ensure: %v\nkubeadm output:\n%s", err, log.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %04o, want 0600", fi.Mode().Perm())
	}
	kc, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	server, err := CheckJoinServiceKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubeadm wrote server %s", server)
	if strings.Contains(server, "cluster.example") {
		t.Errorf("server %q is the cluster's controlPlaneEndpoint, want this node's own API server", server)
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range cfg.AuthInfos {
		block, _ := pem.Decode(u.ClientCertificateData)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignatureFrom(ca); err != nil {
			t.Errorf("client certificate not signed by the cluster CA: %v", err)
		}
	}
	if strings.Contains(log.String(), "PRIVATE KEY") {
		t.Error("the kubeconfig's private key reached the kubeadm log")
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Get(context.Background(), rbac.ObjectName, metav1.GetOptions{}); err != nil {
		t.Errorf("RBAC not applied: %v", err)
	}
}
