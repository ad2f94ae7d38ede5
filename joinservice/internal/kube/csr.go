package kube

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// MaxCSRSize bounds a kubelet CSR in PEM before anything parses it. A
	// P-384 or RSA-4096 CSR is 1–2 KiB.
	MaxCSRSize = 16 << 10

	nodeUserPrefix = "system:node:"
	nodesGroup     = "system:nodes"
	minRSABits     = 2048
	// maxRSABits bounds the cost of verifying the CSR's signature.
	maxRSABits = 8192

	approvalReason = "CloisterAttestedJoin"
	csrNamePrefix  = "cloister-kubelet-"
	// csrCleanupTimeout bounds deleting a CSR after a failed attempt.
	csrCleanupTimeout = 10 * time.Second
)

var (
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidOrganization = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidSAN          = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// CheckKubeletCSR checks that untrustedCSRPEM is a kubelet client CSR for
// untrustedNodeName and nothing else, and returns it parsed. It is pure. The
// checks, in order (CSRError.Check names the failed one):
//
//  1. node-name: a DNS-1123 subdomain;
//  2. size: 1 to MaxCSRSize bytes;
//  3. pem: exactly one "CERTIFICATE REQUEST" block, no headers, nothing
//     else around it but whitespace;
//  4. parse: valid DER;
//  5. key: ECDSA P-256 or P-384, or RSA of 2048 to 8192 bits;
//  6. signature: the CSR is signed by its own key;
//  7. common-name: exactly one CN, "system:node:<node name>";
//  8. organization: exactly one O, "system:nodes";
//  9. subject: no other subject attribute;
//  10. sans: no subject alternative names of any kind;
//  11. extensions: no other requested extension.
//
// Failures of 1–4 and 6 match ErrMalformedCSR, the others ErrForbiddenCSR;
// a bad node name matches ErrInvalidNodeName too.
func CheckKubeletCSR(untrustedNodeName string, untrustedCSRPEM []byte) (*x509.CertificateRequest, error) {
	if err := checkNodeName(untrustedNodeName); err != nil {
		return nil, malformed(CheckNodeName, "", "", err)
	}
	if n := len(untrustedCSRPEM); n == 0 || n > MaxCSRSize {
		return nil, malformed(CheckSize, fmt.Sprintf("1 to %d bytes", MaxCSRSize), fmt.Sprintf("%d bytes", n), nil)
	}
	der, err := singlePEMBlock(untrustedCSRPEM, "CERTIFICATE REQUEST")
	if err != nil {
		return nil, err
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, malformed(CheckParse, "", "", err)
	}
	if got, ok := keyAllowed(req.PublicKey); !ok {
		return nil, forbidden(CheckKey, fmt.Sprintf("ECDSA P-256/P-384 or RSA %d-%d bits", minRSABits, maxRSABits), got)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, malformed(CheckSignature, "", "", err)
	}
	if err := checkSubject(req.Subject, nodeUserPrefix+untrustedNodeName); err != nil {
		return nil, err
	}
	if sans := sanSummary(req); sans != "" {
		return nil, forbidden(CheckSANs, "none", sans)
	}
	if len(req.Extensions) > 0 {
		oids := make([]string, len(req.Extensions))
		for i, e := range req.Extensions {
			oids[i] = e.Id.String()
		}
		return nil, forbidden(CheckExtensions, "none", strings.Join(oids, ","))
	}
	return req, nil
}

// singlePEMBlock returns the DER of the only PEM block in b, which must be
// of type typ; only whitespace may surround it.
func singlePEMBlock(b []byte, typ string) ([]byte, error) {
	want := fmt.Sprintf("one %s block", typ)
	trimmed := bytes.TrimSpace(b)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, malformed(CheckPEM, want, "no PEM block at the start", nil)
	}
	block, rest := pem.Decode(trimmed)
	switch {
	case block == nil:
		return nil, malformed(CheckPEM, want, "an undecodable PEM block", nil)
	case block.Type != typ:
		return nil, malformed(CheckPEM, want, fmt.Sprintf("a %.40q block", block.Type), nil)
	case len(block.Headers) > 0:
		return nil, malformed(CheckPEM, want, "a block with PEM headers", nil)
	case len(rest) > 0:
		if next, _ := pem.Decode(rest); next != nil {
			return nil, malformed(CheckPEM, want, "more than one PEM block", nil)
		}
		return nil, malformed(CheckPEM, want, fmt.Sprintf("%d bytes after the block", len(rest)), nil)
	}
	return block.Bytes, nil
}

// keyAllowed reports whether pub is a key we accept, and what it is.
func keyAllowed(pub crypto.PublicKey) (string, bool) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name, k.Curve == elliptic.P256() || k.Curve == elliptic.P384()
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		return fmt.Sprintf("RSA %d bits", bits), bits >= minRSABits && bits <= maxRSABits
	case ed25519.PublicKey:
		return "Ed25519", false
	default:
		return fmt.Sprintf("%T", pub), false
	}
}

// checkSubject requires exactly one CN equal to wantCN, exactly one O equal
// to system:nodes, and nothing else. It reads every attribute (Names), not
// the parsed fields: pkix.Name keeps only the last CN.
func checkSubject(subject pkix.Name, wantCN string) error {
	// Compare the exact values; quote and shorten them only for messages.
	var cns, orgs []string
	var others []string
	for _, atv := range subject.Names {
		v, isString := atv.Value.(string)
		switch {
		case atv.Type.Equal(oidCommonName) && isString:
			cns = append(cns, v)
		case atv.Type.Equal(oidOrganization) && isString:
			orgs = append(orgs, v)
		default:
			others = append(others, atv.Type.String()+"="+fmt.Sprintf("%.80q", fmt.Sprint(atv.Value)))
		}
	}
	if len(cns) != 1 || cns[0] != wantCN {
		return forbidden(CheckCommonName, fmt.Sprintf("%.80q", wantCN), shown(cns))
	}
	if len(orgs) != 1 || orgs[0] != nodesGroup {
		return forbidden(CheckOrganization, fmt.Sprintf("[%q]", nodesGroup), shown(orgs))
	}
	if len(others) > 0 {
		return forbidden(CheckSubject, "only CN and O", strings.Join(others, ","))
	}
	return nil
}

// shown quotes untrusted values for an error, each cut to 80 characters.
func shown(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = fmt.Sprintf("%.80q", v)
	}
	return "[" + strings.Join(q, ",") + "]"
}

// sanSummary describes the CSR's subject alternative names, or returns ""
// if it has none. The raw extension counts too: SAN kinds Go does not parse
// (otherName, directoryName) would otherwise slip through.
func sanSummary(req *x509.CertificateRequest) string {
	var parts []string
	if n := len(req.DNSNames); n > 0 {
		parts = append(parts, fmt.Sprintf("%d DNS", n))
	}
	if n := len(req.IPAddresses); n > 0 {
		parts = append(parts, fmt.Sprintf("%d IP", n))
	}
	if n := len(req.EmailAddresses); n > 0 {
		parts = append(parts, fmt.Sprintf("%d email", n))
	}
	if n := len(req.URIs); n > 0 {
		parts = append(parts, fmt.Sprintf("%d URI", n))
	}
	if len(parts) == 0 && slices.ContainsFunc(req.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidSAN) }) {
		parts = append(parts, "a subjectAltName extension")
	}
	return strings.Join(parts, ", ")
}

// SignKubeletCSR gets untrustedCSRPEM signed as the kubelet client
// certificate of untrustedNodeName by the cluster's own signer, and returns
// the certificate in PEM. It checks the CSR with CheckKubeletCSR first, then
// creates a CertificateSigningRequest for signer
// kubernetes.io/kube-apiserver-client-kubelet, approves it (reason
// CloisterAttestedJoin: the node passed attestation), and waits for the
// certificate, at most Options.CSRTimeout. The issued certificate must carry
// the CSR's key and identity.
//
// Errors: a *CSRError for a refused CSR; ErrCSRDenied if the CSR is denied or
// fails; ErrCSRTimeout if no certificate comes in time; ErrBadCertificate if
// the certificate does not match. After a failure the CSR is deleted.
func (c *Cluster) SignKubeletCSR(ctx context.Context, untrustedNodeName string, untrustedCSRPEM []byte) ([]byte, error) {
	req, err := CheckKubeletCSR(untrustedNodeName, untrustedCSRPEM)
	if err != nil {
		return nil, err
	}
	suffix, err := randomString(c.opts.Rand, 16)
	if err != nil {
		return nil, fmt.Errorf("kube: naming csr: %w", err)
	}
	name := csrNamePrefix + suffix

	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.CSRTimeout, ErrCSRTimeout)
	defer cancel()

	obj := &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{LabelManagedBy: managedByValue},
			Annotations: map[string]string{AnnotationNode: untrustedNodeName},
		},
		Spec: certv1.CertificateSigningRequestSpec{
			// Re-encoded from the parsed DER: what the signer sees is
			// exactly what was checked.
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.Raw}),
			SignerName: certv1.KubeAPIServerClientKubeletSignerName,
			Usages:     []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth},
		},
	}
	if d := c.opts.KubeletCertLifetime; d > 0 {
		secs := int32(d / time.Second)
		obj.Spec.ExpirationSeconds = &secs
	}
	csrs := c.client.CertificatesV1().CertificateSigningRequests()
	created, err := csrs.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return nil, ctxCause(ctx, fmt.Errorf("kube: creating csr %s for node %s: %w", name, untrustedNodeName, err))
	}
	certPEM, err := c.approveAndWait(ctx, created, req, untrustedNodeName)
	if err != nil {
		// The attempt is over, possibly because ctx ended: clean up on a
		// fresh, short context.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), csrCleanupTimeout)
		defer dcancel()
		if derr := csrs.Delete(dctx, name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			err = errors.Join(err, fmt.Errorf("kube: deleting csr %s: %w", name, derr))
		}
		return nil, err
	}
	return certPEM, nil
}

func (c *Cluster) approveAndWait(ctx context.Context, csr *certv1.CertificateSigningRequest, req *x509.CertificateRequest, nodeName string) ([]byte, error) {
	csrs := c.client.CertificatesV1().CertificateSigningRequests()
	csr = csr.DeepCopy()
	csr.Status.Conditions = append(csr.Status.Conditions, certv1.CertificateSigningRequestCondition{
		Type:           certv1.CertificateApproved,
		Status:         corev1.ConditionTrue,
		Reason:         approvalReason,
		Message:        "node passed attestation at the Cloister join service",
		LastUpdateTime: metav1.NewTime(c.opts.Now()),
	})
	if _, err := csrs.UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		return nil, ctxCause(ctx, fmt.Errorf("kube: approving csr %s: %w", csr.Name, err))
	}
	t := time.NewTicker(c.opts.CSRPollInterval)
	defer t.Stop()
	for {
		got, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			return nil, ctxCause(ctx, fmt.Errorf("kube: getting csr %s: %w", csr.Name, err))
		}
		for _, cond := range got.Status.Conditions {
			if (cond.Type == certv1.CertificateDenied || cond.Type == certv1.CertificateFailed) && cond.Status == corev1.ConditionTrue {
				return nil, fmt.Errorf("kube: csr %s: %w: %s (%.80q: %.200q)", csr.Name, ErrCSRDenied, cond.Type, cond.Reason, cond.Message)
			}
		}
		if len(got.Status.Certificate) > 0 {
			if err := checkIssued(got.Status.Certificate, req, nodeName); err != nil {
				return nil, fmt.Errorf("kube: csr %s: %w", csr.Name, err)
			}
			return got.Status.Certificate, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kube: waiting for csr %s: %w", csr.Name, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// ctxCause replaces err by the context's cause once ctx has ended, so a
// timeout reads as ErrCSRTimeout rather than as a client error.
func ctxCause(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
}

// checkIssued checks that the signer's certificate is for the CSR's key and
// identity and allows client authentication.
func checkIssued(certPEM []byte, req *x509.CertificateRequest, nodeName string) error {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return fmt.Errorf("%w: status.certificate is not a PEM certificate", ErrBadCertificate)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("%w: parsing: %v", ErrBadCertificate, err)
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(req.PublicKey) {
		return fmt.Errorf("%w: public key differs from the csr's", ErrBadCertificate)
	}
	if want := nodeUserPrefix + nodeName; cert.Subject.CommonName != want {
		return fmt.Errorf("%w: common name: want %q, got %.80q", ErrBadCertificate, want, cert.Subject.CommonName)
	}
	if !slices.Equal(cert.Subject.Organization, []string{nodesGroup}) {
		return fmt.Errorf("%w: organization: want [%q], got %.80q", ErrBadCertificate, nodesGroup, cert.Subject.Organization)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return fmt.Errorf("%w: no client-auth extended key usage", ErrBadCertificate)
	}
	return nil
}
