package joinclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bootstrapper/internal/discovery"
	"github.com/cloister-dev/cloister/internal/keys"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// testCA is a FAKE cluster CA that signs kubelet certificates.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{key: key, cert: cert}
}

func (ca *testCA) sign(t testing.TB, pub *ecdsa.PublicKey, cn string, orgs []string, notBefore, notAfter time.Time, eku []x509.ExtKeyUsage) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: orgs}, NotBefore: notBefore, NotAfter: notAfter, ExtKeyUsage: eku, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func bytes32(b byte) []byte { return []byte(strings.Repeat(string([]byte{b}), 32)) }

func goodTicket(t testing.TB, ca *testCA, key *ecdsa.PrivateKey) *joinv1.IssueJoinTicketResponse {
	return &joinv1.IssueJoinTicketResponse{
		DiskKeyGeneration:          keys.FirstGeneration,
		DiskKey:                    bytes32(1),
		MeasurementSecret:          bytes32(2),
		MeasurementSalt:            bytes32(3),
		ApiServerEndpoint:          "10.0.0.1:6443",
		BootstrapToken:             "abcdef.0123456789abcdef",
		BootstrapTokenExpiry:       testNow.Add(15 * time.Minute).Unix(),
		DiscoveryTokenCaCertHashes: []string{"sha256:" + strings.Repeat("ab", 32)},
		KubeletCertificate:         ca.sign(t, &key.PublicKey, "system:node:worker-1", []string{"system:nodes"}, testNow.Add(-time.Minute), testNow.Add(time.Hour), []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}),
		KubernetesVersion:          "v1.37.2",
	}
}

func TestCheckTicketAcceptsGoodTicket(t *testing.T) {
	ca := newTestCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tk, err := CheckTicket(goodTicket(t, ca, key), key, "worker-1", discovery.RoleWorker, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Kubeadm.NodeName != "worker-1" || tk.Kubeadm.Token != "abcdef.0123456789abcdef" || tk.Kubeadm.CertificateKey != "" {
		t.Fatalf("kubeadm inputs %+v", tk.Kubeadm)
	}
	block, _ := pem.Decode(tk.KubeletKey)
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil || !key.Equal(parsed) {
		t.Fatalf("kubelet key in the ticket is not the node's key: %v", err)
	}
}

func TestCheckTicketRefusesMalformed(t *testing.T) {
	ca := newTestCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name      string
		role      discovery.Role
		mut       func(r *joinv1.IssueJoinTicketResponse)
		wantField string
	}{
		{"missing disk key", "", func(r *joinv1.IssueJoinTicketResponse) { r.DiskKey = nil }, "disk_key"},
		{"short disk key", "", func(r *joinv1.IssueJoinTicketResponse) { r.DiskKey = r.DiskKey[:31] }, "disk_key"},
		{"long measurement secret", "", func(r *joinv1.IssueJoinTicketResponse) { r.MeasurementSecret = append(r.MeasurementSecret, 0) }, "measurement_secret"},
		{"missing measurement salt", "", func(r *joinv1.IssueJoinTicketResponse) { r.MeasurementSalt = nil }, "measurement_salt"},
		{"missing token", "", func(r *joinv1.IssueJoinTicketResponse) { r.BootstrapToken = "" }, "bootstrap_token"},
		{"token wrong format", "", func(r *joinv1.IssueJoinTicketResponse) { r.BootstrapToken = "abcdef:0123456789abcdef" }, "bootstrap_token"},
		{"token expired", "", func(r *joinv1.IssueJoinTicketResponse) { r.BootstrapTokenExpiry = testNow.Add(-time.Second).Unix() }, "bootstrap_token_expiry"},
		{"missing expiry", "", func(r *joinv1.IssueJoinTicketResponse) { r.BootstrapTokenExpiry = 0 }, "bootstrap_token_expiry"},
		{"missing endpoint", "", func(r *joinv1.IssueJoinTicketResponse) { r.ApiServerEndpoint = "" }, "api_server_endpoint"},
		{"endpoint without port", "", func(r *joinv1.IssueJoinTicketResponse) { r.ApiServerEndpoint = "10.0.0.1" }, "api_server_endpoint"},
		{"no CA hashes", "", func(r *joinv1.IssueJoinTicketResponse) { r.DiscoveryTokenCaCertHashes = nil }, "discovery_token_ca_cert_hashes"},
		{"CA hash of another algorithm", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.DiscoveryTokenCaCertHashes = []string{"sha1:" + strings.Repeat("ab", 20)}
		}, "discovery_token_ca_cert_hashes[0]"},
		{"CA hash short", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.DiscoveryTokenCaCertHashes = append(r.DiscoveryTokenCaCertHashes, "sha256:abcd")
		}, "discovery_token_ca_cert_hashes[1]"},
		{"missing version", "", func(r *joinv1.IssueJoinTicketResponse) { r.KubernetesVersion = "" }, "kubernetes_version"},
		{"version not semver", "", func(r *joinv1.IssueJoinTicketResponse) { r.KubernetesVersion = "latest" }, "kubernetes_version"},
		{"missing certificate", "", func(r *joinv1.IssueJoinTicketResponse) { r.KubeletCertificate = nil }, "kubelet_certificate"},
		{"certificate garbage", "", func(r *joinv1.IssueJoinTicketResponse) { r.KubeletCertificate = []byte("not pem") }, "kubelet_certificate"},
		{"certificate wrong PEM type", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.KubeletCertificate = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})
		}, "kubelet_certificate"},
		{"certificate DER garbage", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.KubeletCertificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})
		}, "kubelet_certificate"},
		{"disk key generation 0 (the one-time passphrase's)", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.DiskKeyGeneration = 0
		}, "disk_key_generation"},
		{"two certificates", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.KubeletCertificate = append(r.KubeletCertificate, r.KubeletCertificate...)
		}, "kubelet_certificate"},
		{"certificate for another key", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.KubeletCertificate = ca.sign(t, &otherKey.PublicKey, "system:node:worker-1", []string{"system:nodes"}, testNow.Add(-time.Minute), testNow.Add(time.Hour), nil)
		}, "kubelet_certificate.key"},
		{"certificate for another node", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.KubeletCertificate = ca.sign(t, &key.PublicKey, "system:node:worker-2", []string{"system:nodes"}, testNow.Add(-time.Minute), testNow.Add(time.Hour), nil)
		}, "kubelet_certificate.subject"},
		{"certificate with extra group", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.KubeletCertificate = ca.sign(t, &key.PublicKey, "system:node:worker-1", []string{"system:nodes", "system:masters"}, testNow.Add(-time.Minute), testNow.Add(time.Hour), nil)
		}, "kubelet_certificate.organization"},
		{"certificate expired", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.KubeletCertificate = ca.sign(t, &key.PublicKey, "system:node:worker-1", []string{"system:nodes"}, testNow.Add(-2*time.Hour), testNow.Add(-time.Hour), nil)
		}, "kubelet_certificate.validity"},
		{"certificate for servers only", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.KubeletCertificate = ca.sign(t, &key.PublicKey, "system:node:worker-1", []string{"system:nodes"}, testNow.Add(-time.Minute), testNow.Add(time.Hour), []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
		}, "kubelet_certificate.ext_key_usage"},
		{"control-plane section for a worker", "", func(r *joinv1.IssueJoinTicketResponse) {
			r.ControlPlane = &joinv1.ControlPlaneJoin{CertificateKey: strings.Repeat("ab", 32), MasterSecret: bytes32(4), MasterSalt: bytes32(5)}
		}, "control_plane"},
		{"control plane without section", discovery.RoleControlPlane, func(r *joinv1.IssueJoinTicketResponse) {}, "control_plane"},
		{"control plane bad certificate key", discovery.RoleControlPlane, func(r *joinv1.IssueJoinTicketResponse) {
			r.ControlPlane = &joinv1.ControlPlaneJoin{CertificateKey: strings.Repeat("AB", 32), MasterSecret: bytes32(4), MasterSalt: bytes32(5)}
		}, "control_plane.certificate_key"},
		{"control plane short master secret", discovery.RoleControlPlane, func(r *joinv1.IssueJoinTicketResponse) {
			r.ControlPlane = &joinv1.ControlPlaneJoin{CertificateKey: strings.Repeat("ab", 32), MasterSecret: bytes32(4)[:16], MasterSalt: bytes32(5)}
		}, "control_plane.master_secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := goodTicket(t, ca, key)
			tc.mut(r)
			role := tc.role
			if role == "" {
				role = discovery.RoleWorker
			}
			tk, err := CheckTicket(r, key, "worker-1", role, testNow)
			if err == nil {
				t.Fatalf("accepted: %+v", tk.Kubeadm)
			}
			if tk != nil {
				t.Fatal("ticket returned with an error")
			}
			var te *TicketError
			if !errors.As(err, &te) || !errors.Is(err, ErrMalformedTicket) {
				t.Fatalf("err = %v, want a *TicketError", err)
			}
			if te.Field != tc.wantField {
				t.Fatalf("field %q, want %q (%v)", te.Field, tc.wantField, err)
			}
			// Secrets never reach the error.
			if strings.Contains(err.Error(), string(bytes32(1))) {
				t.Fatal("error contains the disk key")
			}
		})
	}
}

func TestCheckTicketControlPlane(t *testing.T) {
	ca := newTestCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r := goodTicket(t, ca, key)
	r.ControlPlane = &joinv1.ControlPlaneJoin{CertificateKey: strings.Repeat("ab", 32), MasterSecret: bytes32(4), MasterSalt: bytes32(5)}
	tk, err := CheckTicket(r, key, "worker-1", discovery.RoleControlPlane, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Kubeadm.CertificateKey != strings.Repeat("ab", 32) || len(tk.MasterSecret) != 32 {
		t.Fatalf("control-plane inputs missing: %+v", tk.Kubeadm)
	}
}

func FuzzCheckTicket(f *testing.F) {
	ca := newTestCA(f)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := goodTicket(f, ca, key)
	f.Add(good.KubeletCertificate, good.BootstrapToken, good.ApiServerEndpoint, good.DiscoveryTokenCaCertHashes[0], 32)
	f.Add([]byte("x"), "a.b", "h:0", "sha256:", 0)
	f.Fuzz(func(t *testing.T, cert []byte, token, endpoint, hash string, keyLen int) {
		r := goodTicket(t, ca, key)
		r.KubeletCertificate, r.BootstrapToken, r.ApiServerEndpoint = cert, token, endpoint
		r.DiscoveryTokenCaCertHashes = []string{hash}
		if keyLen >= 0 && keyLen < 64 {
			r.DiskKey = make([]byte, keyLen)
		}
		tk, err := CheckTicket(r, key, "worker-1", discovery.RoleWorker, testNow)
		if err != nil {
			if tk != nil {
				t.Fatal("ticket returned with an error")
			}
			return
		}
		if err := tk.Kubeadm.Validate(); err != nil || len(tk.DiskKey) != 32 {
			t.Fatalf("accepted an invalid ticket: %v", err)
		}
	})
}

func BenchmarkCheckTicket(b *testing.B) {
	ca := newTestCA(b)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r := goodTicket(b, ca, key)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CheckTicket(r, key, "worker-1", discovery.RoleWorker, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
