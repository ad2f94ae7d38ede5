package joinclient

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloister-dev/cloister/bootstrapper/internal/discovery"
	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
	"github.com/cloister-dev/cloister/internal/keys"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// ErrMalformedTicket means a join ticket failed validation; the wrapped
// TicketError names the field.
var ErrMalformedTicket = errors.New("malformed join ticket")

// TicketError is a refused ticket: Field names what is wrong, Want and Got
// describe it (never secret bytes).
type TicketError struct {
	Field, Want, Got string
}

func (e *TicketError) Error() string {
	return fmt.Sprintf("join ticket: %s: want %s, got %s", e.Field, e.Want, e.Got)
}

// Unwrap makes every TicketError match ErrMalformedTicket.
func (e *TicketError) Unwrap() error { return ErrMalformedTicket }

func bad(field, want, got string) error { return &TicketError{Field: field, Want: want, Got: got} }

// maxCertPEM bounds the kubelet certificate.
const maxCertPEM = 16 << 10

// CheckTicket validates an untrusted ticket for the node whose kubelet key is
// key, completely, and returns it as a provision.Ticket that holds the key as
// PEM. The checks, in order (the first failure is returned as a
// *TicketError):
//
//  1. disk_key, measurement_secret, measurement_salt: exactly 32 bytes;
//  2. bootstrap_token: kubeadm's format; expiry: in the future;
//  3. api_server_endpoint: host:port; discovery_token_ca_cert_hashes: at
//     least one, each "sha256:<64 hex>";
//  4. kubernetes_version: "vX.Y.Z";
//  5. kubelet_certificate: one PEM CERTIFICATE block that parses, valid at
//     now, with this node's key, subject "system:node:<name>" and
//     organization "system:nodes", for client authentication;
//  6. control_plane: present exactly for a control-plane role, with a
//     64-hex certificate key and 32-byte master secret and salt.
func CheckTicket(resp *joinv1.IssueJoinTicketResponse, key *ecdsa.PrivateKey, nodeName string, role discovery.Role, now time.Time) (*provision.Ticket, error) {
	for _, f := range []struct {
		name string
		b    []byte
	}{{"disk_key", resp.GetDiskKey()}, {"measurement_secret", resp.GetMeasurementSecret()}, {"measurement_salt", resp.GetMeasurementSalt()}} {
		if len(f.b) != keys.SecretSize {
			return nil, bad(f.name, fmt.Sprintf("%d bytes", keys.SecretSize), fmt.Sprintf("%d bytes", len(f.b)))
		}
	}
	if g := resp.GetDiskKeyGeneration(); g < keys.FirstGeneration {
		return nil, bad("disk_key_generation", fmt.Sprintf(">= %d", keys.FirstGeneration), fmt.Sprint(g))
	}
	join := kubeadm.Join{
		NodeName:          nodeName,
		APIServerEndpoint: resp.GetApiServerEndpoint(),
		Token:             resp.GetBootstrapToken(),
		CACertHashes:      slices.Clone(resp.GetDiscoveryTokenCaCertHashes()),
	}
	if err := kubeadm.CheckToken(join.Token); err != nil {
		return nil, bad("bootstrap_token", "[a-z0-9]{6}.[a-z0-9]{16}", fmt.Sprintf("%d characters", len(join.Token)))
	}
	expiry := time.Unix(resp.GetBootstrapTokenExpiry(), 0)
	if !expiry.After(now) {
		return nil, bad("bootstrap_token_expiry", "after "+now.UTC().Format(time.RFC3339), expiry.UTC().Format(time.RFC3339))
	}
	if err := kubeadm.CheckEndpoint(join.APIServerEndpoint); err != nil {
		return nil, bad("api_server_endpoint", "host:port", err.Error())
	}
	if len(join.CACertHashes) == 0 || len(join.CACertHashes) > 16 {
		return nil, bad("discovery_token_ca_cert_hashes", "1 to 16 pins", fmt.Sprint(len(join.CACertHashes)))
	}
	for i, h := range join.CACertHashes {
		if err := kubeadm.CheckCACertHash(h); err != nil {
			return nil, bad(fmt.Sprintf("discovery_token_ca_cert_hashes[%d]", i), "sha256:<64 lowercase hex>", fmt.Sprintf("%q", short(h)))
		}
	}
	if err := kubeadm.CheckVersion(resp.GetKubernetesVersion()); err != nil {
		return nil, bad("kubernetes_version", "vX.Y.Z", fmt.Sprintf("%q", short(resp.GetKubernetesVersion())))
	}
	if err := checkKubeletCert(resp.GetKubeletCertificate(), key, nodeName, now); err != nil {
		return nil, err
	}
	t := &provision.Ticket{
		DiskKey:           bytes.Clone(resp.GetDiskKey()),
		DiskKeyGeneration: resp.GetDiskKeyGeneration(),
		MeasurementSecret: bytes.Clone(resp.GetMeasurementSecret()),
		MeasurementSalt:   bytes.Clone(resp.GetMeasurementSalt()),
		KubeletCert:       bytes.Clone(resp.GetKubeletCertificate()),
		KubernetesVersion: resp.GetKubernetesVersion(),
		TokenExpiry:       expiry,
	}
	cp := resp.GetControlPlane()
	switch {
	case role == discovery.RoleControlPlane && cp == nil:
		return nil, bad("control_plane", "present for a control-plane join", "absent")
	case role != discovery.RoleControlPlane && cp != nil:
		return nil, bad("control_plane", "absent for a worker join", "present")
	case cp != nil:
		if b, err := hex.DecodeString(cp.GetCertificateKey()); err != nil || len(b) != 32 || hex.EncodeToString(b) != cp.GetCertificateKey() {
			return nil, bad("control_plane.certificate_key", "64 lowercase hex characters", fmt.Sprintf("%d characters", len(cp.GetCertificateKey())))
		}
		if len(cp.GetMasterSecret()) != keys.SecretSize || len(cp.GetMasterSalt()) != keys.SecretSize {
			return nil, bad("control_plane.master_secret", "32-byte secret and salt", fmt.Sprintf("%d and %d bytes", len(cp.GetMasterSecret()), len(cp.GetMasterSalt())))
		}
		join.CertificateKey = cp.GetCertificateKey()
		t.MasterSecret = bytes.Clone(cp.GetMasterSecret())
		t.MasterSalt = bytes.Clone(cp.GetMasterSalt())
	}
	if err := join.Validate(); err != nil {
		return nil, bad("kubeadm", "a valid join configuration", err.Error())
	}
	t.Kubeadm = join
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the kubelet key: %w", err)
	}
	t.KubeletKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	keys.Secret(der).Zero()
	return t, nil
}

func checkKubeletCert(certPEM []byte, key *ecdsa.PrivateKey, nodeName string, now time.Time) error {
	const field = "kubelet_certificate"
	if len(certPEM) == 0 || len(certPEM) > maxCertPEM {
		return bad(field, fmt.Sprintf("1 to %d bytes", maxCertPEM), fmt.Sprintf("%d bytes", len(certPEM)))
	}
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return bad(field, "one PEM CERTIFICATE block", "something else")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return bad(field, "a certificate that parses", err.Error())
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return bad(field+".key", "this node's kubelet key", "another key")
	}
	if want := "system:node:" + nodeName; cert.Subject.CommonName != want {
		return bad(field+".subject", want, fmt.Sprintf("%q", short(cert.Subject.CommonName)))
	}
	if !slices.Equal(cert.Subject.Organization, []string{"system:nodes"}) {
		return bad(field+".organization", "[system:nodes]", fmt.Sprintf("%q", cert.Subject.Organization))
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return bad(field+".validity", "valid at "+now.UTC().Format(time.RFC3339), cert.NotBefore.UTC().Format(time.RFC3339)+" to "+cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(cert.ExtKeyUsage) > 0 && !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return bad(field+".ext_key_usage", "client auth", "no client auth")
	}
	return nil
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
