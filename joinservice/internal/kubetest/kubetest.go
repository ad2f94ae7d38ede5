// Package kubetest is a FAKE Kubernetes cluster for tests of the join
// service: client-go's fake clientset, seeded with the cluster-info
// ConfigMap of a fake cluster CA, plus a fake CSR signer that signs approved
// kubelet CSRs the moment they are approved, as kube-controller-manager would.
// Nothing here talks to a real API server.
package kubetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync/atomic"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Cluster is a fake cluster: a clientset and the CA its fake signer uses.
type Cluster struct {
	Client *fake.Clientset
	// CA is the fake cluster CA (also published in cluster-info).
	CA *x509.Certificate
	// Server is the API server URL published in cluster-info.
	Server string

	caKey  crypto.Signer
	serial atomic.Int64
}

// TB is the part of testing.TB this package uses.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// NewCluster returns a fake cluster whose cluster-info names server.
func NewCluster(tb TB, server string) *Cluster {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake kubernetes CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kubeconfig := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    certificate-authority-data: %s\n    server: %s\n",
		base64.StdEncoding.EncodeToString(caPEM), server)
	c := &Cluster{
		// The simple clientset, not fake.NewClientset: the field-managed
		// tracker of the latter rebuilds a REST mapper on every write, so a
		// load test would measure the fake instead of the join service.
		Client: fake.NewSimpleClientset(&corev1.ConfigMap{ //nolint:staticcheck // see above
			ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: metav1.NamespacePublic},
			Data:       map[string]string{"kubeconfig": kubeconfig},
		}),
		CA:     ca,
		Server: server,
		caKey:  key,
	}
	c.serial.Store(1)
	c.Client.PrependReactor("update", "certificatesigningrequests", c.signOnApproval)
	return c
}

// signOnApproval is the fake signer: it issues the certificate for an
// approved CSR inside the approval update itself.
func (c *Cluster) signOnApproval(action k8stesting.Action) (bool, runtime.Object, error) {
	ua, ok := action.(k8stesting.UpdateAction)
	if !ok || ua.GetSubresource() != "approval" {
		return false, nil, nil
	}
	csr := ua.GetObject().(*certv1.CertificateSigningRequest).DeepCopy()
	approved := false
	for _, cond := range csr.Status.Conditions {
		approved = approved || (cond.Type == certv1.CertificateApproved && cond.Status == corev1.ConditionTrue)
	}
	if approved {
		block, _ := pem.Decode(csr.Spec.Request)
		if block == nil {
			return true, nil, fmt.Errorf("fake signer: CSR is not PEM")
		}
		req, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			return true, nil, fmt.Errorf("fake signer: %w", err)
		}
		now := time.Now()
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(c.serial.Add(1)),
			Subject:      req.Subject,
			NotBefore:    now.Add(-time.Minute),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, c.CA, req.PublicKey, c.caKey)
		if err != nil {
			return true, nil, fmt.Errorf("fake signer: %w", err)
		}
		csr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	err := c.Client.Tracker().Update(certv1.SchemeGroupVersion.WithResource("certificatesigningrequests"), csr, "")
	return true, csr, err
}
