package kube

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const testNode = "worker-1.cluster.local"

func kubeletSubject(node string) pkix.Name {
	return pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}
}

func ecKey(tb testing.TB, curve elliptic.Curve) crypto.Signer {
	tb.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func rsaKey(tb testing.TB, bits int) crypto.Signer {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func csrDER(tb testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func csrPEM(tb testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	tb.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER(tb, key, tmpl)})
}

func validCSR(tb testing.TB, node string) []byte {
	tb.Helper()
	return csrPEM(tb, ecKey(tb, elliptic.P256()), &x509.CertificateRequest{Subject: kubeletSubject(node)})
}

// csrWithForeignSignature keeps the CSR's content but takes the signature
// of another CSR made with another key.
func csrWithForeignSignature(tb testing.TB) []byte {
	tb.Helper()
	type rawCSR struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}
	var mine, theirs rawCSR
	if _, err := asn1.Unmarshal(csrDER(tb, ecKey(tb, elliptic.P256()), &x509.CertificateRequest{Subject: kubeletSubject(testNode)}), &mine); err != nil {
		tb.Fatal(err)
	}
	if _, err := asn1.Unmarshal(csrDER(tb, ecKey(tb, elliptic.P256()), &x509.CertificateRequest{Subject: kubeletSubject(testNode)}), &theirs); err != nil {
		tb.Fatal(err)
	}
	mine.Signature = theirs.Signature
	der, err := asn1.Marshal(mine)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestCheckKubeletCSRAcceptsKubeletKeys(t *testing.T) {
	for name, key := range map[string]crypto.Signer{
		"ECDSA P-256": ecKey(t, elliptic.P256()),
		"ECDSA P-384": ecKey(t, elliptic.P384()),
		"RSA 2048":    rsaKey(t, 2048),
	} {
		req, err := CheckKubeletCSR(testNode, csrPEM(t, key, &x509.CertificateRequest{Subject: kubeletSubject(testNode)}))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if req.Subject.CommonName != "system:node:"+testNode {
			t.Errorf("%s: CN = %q", name, req.Subject.CommonName)
		}
	}
	// Surrounding whitespace is harmless.
	if _, err := CheckKubeletCSR(testNode, append(append([]byte("\n  "), validCSR(t, testNode)...), "\n\n"...)); err != nil {
		t.Errorf("CSR with surrounding whitespace: %v", err)
	}
}

func TestCheckKubeletCSRRefusesAttacks(t *testing.T) {
	p256 := ecKey(t, elliptic.P256())
	subj := kubeletSubject(testNode)
	withSubject := func(s pkix.Name) []byte { return csrPEM(t, p256, &x509.CertificateRequest{Subject: s}) }
	withTmpl := func(f func(*x509.CertificateRequest)) []byte {
		tmpl := &x509.CertificateRequest{Subject: subj}
		f(tmpl)
		return csrPEM(t, p256, tmpl)
	}
	valid := validCSR(t, testNode)
	block, _ := pem.Decode(valid)
	otherName, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: []byte{0x06, 0x03, 0x2a, 0x03, 0x04, 0xa0, 0x03, 0x0c, 0x01, 0x78}}})
	if err != nil {
		t.Fatal(err)
	}
	basicCA, err := asn1.Marshal(struct{ IsCA bool }{true})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		node      string // testNode if empty
		csr       []byte
		wantCheck string
		wantClass error
	}{
		{name: "csr for another node", csr: validCSR(t, "worker-2.cluster.local"), wantCheck: CheckCommonName, wantClass: ErrForbiddenCSR},
		{name: "csr for a node whose name has ours as prefix", csr: validCSR(t, testNode+"x"), wantCheck: CheckCommonName, wantClass: ErrForbiddenCSR},
		{name: "common name admin", csr: withSubject(pkix.Name{CommonName: "admin", Organization: []string{"system:nodes"}}), wantCheck: CheckCommonName, wantClass: ErrForbiddenCSR},
		{name: "no common name", csr: withSubject(pkix.Name{Organization: []string{"system:nodes"}}), wantCheck: CheckCommonName, wantClass: ErrForbiddenCSR},
		{name: "two common names, ours last", csr: withSubject(pkix.Name{Organization: []string{"system:nodes"}, ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidCommonName, Value: "admin"}, {Type: oidCommonName, Value: "system:node:" + testNode}}}), wantCheck: CheckCommonName, wantClass: ErrForbiddenCSR},
		{name: "organization system:masters", csr: withSubject(pkix.Name{CommonName: "system:node:" + testNode, Organization: []string{"system:masters"}}), wantCheck: CheckOrganization, wantClass: ErrForbiddenCSR},
		{name: "extra organization system:masters", csr: withSubject(pkix.Name{CommonName: "system:node:" + testNode, Organization: []string{"system:nodes", "system:masters"}}), wantCheck: CheckOrganization, wantClass: ErrForbiddenCSR},
		{name: "no organization", csr: withSubject(pkix.Name{CommonName: "system:node:" + testNode}), wantCheck: CheckOrganization, wantClass: ErrForbiddenCSR},
		{name: "extra subject attribute OU", csr: withSubject(pkix.Name{CommonName: "system:node:" + testNode, Organization: []string{"system:nodes"}, OrganizationalUnit: []string{"system:masters"}}), wantCheck: CheckSubject, wantClass: ErrForbiddenCSR},
		{name: "DNS SAN", csr: withTmpl(func(r *x509.CertificateRequest) { r.DNSNames = []string{"kubernetes.default"} }), wantCheck: CheckSANs, wantClass: ErrForbiddenCSR},
		{name: "IP SAN", csr: withTmpl(func(r *x509.CertificateRequest) { r.IPAddresses = []net.IP{net.ParseIP("10.96.0.1")} }), wantCheck: CheckSANs, wantClass: ErrForbiddenCSR},
		{name: "email SAN", csr: withTmpl(func(r *x509.CertificateRequest) { r.EmailAddresses = []string{"admin@example.com"} }), wantCheck: CheckSANs, wantClass: ErrForbiddenCSR},
		{name: "URI SAN", csr: withTmpl(func(r *x509.CertificateRequest) {
			r.URIs = []*url.URL{{Scheme: "spiffe", Host: "cluster", Path: "/admin"}}
		}), wantCheck: CheckSANs, wantClass: ErrForbiddenCSR},
		{name: "otherName SAN Go does not parse", csr: withTmpl(func(r *x509.CertificateRequest) {
			r.ExtraExtensions = []pkix.Extension{{Id: oidSAN, Value: otherName}}
		}), wantCheck: CheckSANs, wantClass: ErrForbiddenCSR},
		{name: "requested CA basic constraints", csr: withTmpl(func(r *x509.CertificateRequest) {
			r.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: basicCA}}
		}), wantCheck: CheckExtensions, wantClass: ErrForbiddenCSR},
		{name: "wrong PEM type CERTIFICATE", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), wantCheck: CheckPEM, wantClass: ErrMalformedCSR},
		{name: "legacy PEM type NEW CERTIFICATE REQUEST", csr: pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: block.Bytes}), wantCheck: CheckPEM, wantClass: ErrMalformedCSR},
		{name: "two CSR blocks", csr: append(append([]byte{}, valid...), validCSR(t, "worker-2")...), wantCheck: CheckPEM, wantClass: ErrMalformedCSR},
		{name: "PEM headers", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: block.Bytes}), wantCheck: CheckPEM, wantClass: ErrMalformedCSR},
		{name: "text before the PEM block", csr: append([]byte("hello\n"), valid...), wantCheck: CheckPEM, wantClass: ErrMalformedCSR},
		{name: "text after the PEM block", csr: append(append([]byte{}, valid...), "trailer"...), wantCheck: CheckPEM, wantClass: ErrMalformedCSR},
		{name: "raw DER instead of PEM", csr: block.Bytes, wantCheck: CheckPEM, wantClass: ErrMalformedCSR},
		{name: "truncated PEM", csr: valid[:len(valid)-30], wantCheck: CheckPEM, wantClass: ErrMalformedCSR},
		{name: "DER garbage", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}), wantCheck: CheckParse, wantClass: ErrMalformedCSR},
		{name: "DER with trailing bytes", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: append(append([]byte{}, block.Bytes...), 0)}), wantCheck: CheckParse, wantClass: ErrMalformedCSR},
		{name: "bad signature", csr: csrWithForeignSignature(t), wantCheck: CheckSignature, wantClass: ErrMalformedCSR},
		{name: "weak RSA 1024 key", csr: csrPEM(t, rsaKey(t, 1024), &x509.CertificateRequest{Subject: subj}), wantCheck: CheckKey, wantClass: ErrForbiddenCSR},
		{name: "ECDSA P-224 key", csr: csrPEM(t, ecKey(t, elliptic.P224()), &x509.CertificateRequest{Subject: subj}), wantCheck: CheckKey, wantClass: ErrForbiddenCSR},
		{name: "Ed25519 key", csr: func() []byte {
			_, k, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			return csrPEM(t, k, &x509.CertificateRequest{Subject: subj})
		}(), wantCheck: CheckKey, wantClass: ErrForbiddenCSR},
		{name: "oversize", csr: append(append([]byte{}, valid...), bytes.Repeat([]byte(" "), MaxCSRSize)...), wantCheck: CheckSize, wantClass: ErrMalformedCSR},
		{name: "empty", csr: nil, wantCheck: CheckSize, wantClass: ErrMalformedCSR},
		{name: "node name with uppercase", node: "Worker-1", csr: validCSR(t, "Worker-1"), wantCheck: CheckNodeName, wantClass: ErrInvalidNodeName},
		{name: "node name with underscore", node: "worker_1", csr: validCSR(t, "worker_1"), wantCheck: CheckNodeName, wantClass: ErrInvalidNodeName},
		{name: "node name too long", node: strings.Repeat("a", 254), csr: validCSR(t, strings.Repeat("a", 254)), wantCheck: CheckNodeName, wantClass: ErrInvalidNodeName},
		{name: "node name with slash", node: "worker/../admin", csr: validCSR(t, "worker/../admin"), wantCheck: CheckNodeName, wantClass: ErrInvalidNodeName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := tc.node
			if node == "" {
				node = testNode
			}
			req, err := CheckKubeletCSR(node, tc.csr)
			if req != nil {
				t.Errorf("got a parsed CSR along with err = %v", err)
			}
			var ce *CSRError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *CSRError", err)
			}
			if ce.Check != tc.wantCheck {
				t.Errorf("check = %q, want %q (%v)", ce.Check, tc.wantCheck, err)
			}
			if !errors.Is(err, tc.wantClass) {
				t.Errorf("err = %v, want it to match %v", err, tc.wantClass)
			}
		})
	}
}

func TestSignKubeletCSRWithFakeSigner(t *testing.T) {
	c, client := newFakeCluster(t, Options{KubeletCertLifetime: 24 * time.Hour})
	signer := installFakeSigner(t, client, fakeSignerSigns)
	req := validCSR(t, testNode)
	certPEM, err := c.SignKubeletCSR(context.Background(), testNode, req)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "system:node:"+testNode || !slices.Equal(cert.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("subject = %v", cert.Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(signer.ca.cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not chain to the signer's CA: %v", err)
	}

	list, err := client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("CSR objects: %d, %v; want 1", len(list.Items), err)
	}
	csr := list.Items[0]
	if csr.Spec.SignerName != "kubernetes.io/kube-apiserver-client-kubelet" {
		t.Errorf("signerName = %q", csr.Spec.SignerName)
	}
	if want := []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth}; !slices.Equal(csr.Spec.Usages, want) {
		t.Errorf("usages = %v, want %v", csr.Spec.Usages, want)
	}
	if csr.Spec.ExpirationSeconds == nil || *csr.Spec.ExpirationSeconds != 86400 {
		t.Errorf("expirationSeconds = %v, want 86400", csr.Spec.ExpirationSeconds)
	}
	if !bytes.Equal(bytes.TrimSpace(csr.Spec.Request), bytes.TrimSpace(req)) {
		t.Errorf("spec.request differs from the checked CSR")
	}
	approved := slices.ContainsFunc(csr.Status.Conditions, func(c certv1.CertificateSigningRequestCondition) bool {
		return c.Type == certv1.CertificateApproved && c.Status == corev1.ConditionTrue && c.Reason == "CloisterAttestedJoin"
	})
	if !approved {
		t.Errorf("conditions = %+v, want Approved/CloisterAttestedJoin", csr.Status.Conditions)
	}
	if csr.Annotations[AnnotationNode] != testNode {
		t.Errorf("annotations = %v", csr.Annotations)
	}
}

func TestSignKubeletCSRRefusedBeforeAnyAPICall(t *testing.T) {
	c, client := newFakeCluster(t, Options{})
	installFakeSigner(t, client, fakeSignerSigns)
	masters := csrPEM(t, ecKey(t, elliptic.P256()), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + testNode, Organization: []string{"system:masters"}}})
	_, err := c.SignKubeletCSR(context.Background(), testNode, masters)
	if !errors.Is(err, ErrForbiddenCSR) {
		t.Fatalf("err = %v, want ErrForbiddenCSR", err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Fatalf("%d API calls for a refused CSR, want 0", n)
	}
}

func TestSignKubeletCSRFailuresWithFakeSigner(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode fakeSignerMode
		want error
	}{
		{"CSR denied", fakeSignerDenies, ErrCSRDenied},
		{"CSR failed", fakeSignerFails, ErrCSRDenied},
		{"CSR never signed", fakeSignerNeverSigns, ErrCSRTimeout},
		{"certificate for another key", fakeSignerSignsOtherKey, ErrBadCertificate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client := newFakeCluster(t, Options{CSRTimeout: 200 * time.Millisecond, CSRPollInterval: 10 * time.Millisecond})
			installFakeSigner(t, client, tc.mode)
			certPEM, err := c.SignKubeletCSR(context.Background(), testNode, validCSR(t, testNode))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if certPEM != nil {
				t.Errorf("got a certificate along with the error")
			}
			list, err := client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
			if err != nil || len(list.Items) != 0 {
				t.Errorf("CSR objects left after failure: %d, %v", len(list.Items), err)
			}
		})
	}
}

func TestSignKubeletCSRCallerCancelIsNotTimeout(t *testing.T) {
	c, client := newFakeCluster(t, Options{CSRPollInterval: 10 * time.Millisecond})
	installFakeSigner(t, client, fakeSignerNeverSigns)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.SignKubeletCSR(ctx, testNode, validCSR(t, testNode))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrCSRTimeout) {
		t.Fatalf("err = %v, want the caller's deadline, not ErrCSRTimeout", err)
	}
	// Cleanup runs on a fresh context even though the caller's has ended.
	list, err := client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("CSR objects left after cancel: %d, %v", len(list.Items), err)
	}
}

func FuzzCheckKubeletCSR(f *testing.F) {
	valid := validCSR(f, testNode)
	block, _ := pem.Decode(valid)
	seeds := [][]byte{
		valid,
		csrPEM(f, rsaKey(f, 2048), &x509.CertificateRequest{Subject: kubeletSubject(testNode)}),
		csrPEM(f, ecKey(f, elliptic.P384()), &x509.CertificateRequest{Subject: kubeletSubject(testNode), DNSNames: []string{"x"}}),
		csrPEM(f, ecKey(f, elliptic.P256()), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}),
		append(append([]byte{}, valid...), valid...),
		valid[:len(valid)/2],
		block.Bytes,
	}
	if len(seeds) == 0 {
		f.Fatal("no seeds")
	}
	for _, s := range seeds {
		f.Add(testNode, s)
	}
	f.Add("Worker_1", valid)
	f.Fuzz(func(t *testing.T, node string, csr []byte) {
		req, err := CheckKubeletCSR(node, csr)
		if (req == nil) == (err == nil) {
			t.Fatalf("req = %v with err = %v: want exactly one", req != nil, err)
		}
		if err != nil {
			var ce *CSRError
			if !errors.As(err, &ce) || !(errors.Is(err, ErrMalformedCSR) || errors.Is(err, ErrForbiddenCSR)) {
				t.Fatalf("err = %v is not a classified *CSRError", err)
			}
			return
		}
		if req.Subject.CommonName != "system:node:"+node || !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) ||
			len(req.DNSNames)+len(req.IPAddresses)+len(req.EmailAddresses)+len(req.URIs)+len(req.Extensions) != 0 {
			t.Fatalf("accepted CSR for %q with subject %v", node, req.Subject)
		}
	})
}

// TestCheckKubeletCSRComparesWholeLongNames: a CSR whose CN agrees with the
// node's only in its first 80 characters is another identity.
func TestCheckKubeletCSRComparesWholeLongNames(t *testing.T) {
	node := strings.Repeat("a", 120) + ".cluster.example"
	other := strings.Repeat("a", 120) + ".attacker.example"
	csr := csrPEM(t, ecKey(t, elliptic.P256()), &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + other, Organization: []string{"system:nodes"}},
	})
	_, err := CheckKubeletCSR(node, csr)
	var ce *CSRError
	if !errors.As(err, &ce) || ce.Check != CheckCommonName {
		t.Fatalf("CSR for %q accepted for node %q: %v", other, node, err)
	}
}
