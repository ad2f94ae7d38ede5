package kube

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// testNow is the fixed clock of the tests.
var testNow = time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)

// newFakeCluster returns a Cluster on client-go's fake clientset, with a
// fixed clock unless opts sets one.
func newFakeCluster(tb testing.TB, opts Options, objects ...runtime.Object) (*Cluster, *fake.Clientset) {
	tb.Helper()
	client := fake.NewClientset(objects...)
	if opts.Now == nil {
		opts.Now = func() time.Time { return testNow }
	}
	c, err := New(client, opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return c, client
}

// testCA is a self-signed ECDSA CA for the fake signer and discovery tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newTestCA(tb testing.TB, cn string) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             testNow.Add(-time.Hour),
		NotAfter:              testNow.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// fakeSignerMode is what the fake signer does with an approved CSR.
type fakeSignerMode int

const (
	fakeSignerSigns fakeSignerMode = iota
	fakeSignerDenies
	fakeSignerFails
	fakeSignerNeverSigns
	fakeSignerSignsOtherKey
)

// fakeSigner plays kube-controller-manager's CSR signer (and, for denials,
// another approver) on the fake clientset: when a CSR's approval is updated,
// it signs approved CSRs with its test CA, as the real signer would.
type fakeSigner struct {
	ca   *testCA
	mode fakeSignerMode
}

func installFakeSigner(tb testing.TB, client *fake.Clientset, mode fakeSignerMode) *fakeSigner {
	tb.Helper()
	s := &fakeSigner{ca: newTestCA(tb, "fake kubelet signer CA"), mode: mode}
	client.PrependReactor("update", "certificatesigningrequests", func(action k8stesting.Action) (bool, runtime.Object, error) {
		ua, ok := action.(k8stesting.UpdateAction)
		if !ok || ua.GetSubresource() != "approval" {
			return false, nil, nil
		}
		csr := ua.GetObject().(*certv1.CertificateSigningRequest).DeepCopy()
		if err := s.react(csr); err != nil {
			return true, nil, err
		}
		err := client.Tracker().Update(certv1.SchemeGroupVersion.WithResource("certificatesigningrequests"), csr, "")
		return true, csr, err
	})
	return s
}

func (s *fakeSigner) react(csr *certv1.CertificateSigningRequest) error {
	approved := false
	for _, c := range csr.Status.Conditions {
		approved = approved || (c.Type == certv1.CertificateApproved && c.Status == corev1.ConditionTrue)
	}
	if !approved {
		return nil
	}
	switch s.mode {
	case fakeSignerNeverSigns:
		return nil
	case fakeSignerDenies, fakeSignerFails:
		typ := certv1.CertificateDenied
		if s.mode == fakeSignerFails {
			typ = certv1.CertificateFailed
		}
		csr.Status.Conditions = []certv1.CertificateSigningRequestCondition{{Type: typ, Status: corev1.ConditionTrue, Reason: "FakePolicy", Message: "refused by the fake signer"}}
		return nil
	}
	block, _ := pem.Decode(csr.Spec.Request)
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return err
	}
	pub := req.PublicKey
	if s.mode == fakeSignerSignsOtherKey {
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		pub = other.Public()
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      req.Subject,
		NotBefore:    testNow.Add(-time.Minute),
		NotAfter:     testNow.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca.cert, pub, s.ca.key)
	if err != nil {
		return err
	}
	csr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return nil
}
