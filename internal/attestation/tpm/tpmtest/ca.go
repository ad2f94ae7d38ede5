package tpmtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
)

// FakePlatformCA is a FAKE of a cloud's AK-certifying CA (there is no cloud
// in tests): a self-signed ECDSA P-256 root whose key lives in memory.
type FakePlatformCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewFakePlatformCA makes a FAKE CA with common name name.
func NewFakePlatformCA(tb TB, name string) *FakePlatformCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &FakePlatformCA{cert: cert, key: key}
}

// Certificate returns the CA's root certificate.
func (ca *FakePlatformCA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a pool with the CA's root, for a validator's AKRoots.
func (ca *FakePlatformCA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// The TCG certificate-policy OIDs a CA puts in an AK certificate to say it
// verified the key (TPM 2.0 Keys for Device Identity and Attestation, 8.2):
// tcg-cap-verifiedTPMResidency and tcg-cap-verifiedTPMRestricted. Package
// tpm requires both.
const (
	OIDVerifiedTPMResidency  = "2.23.133.11.1.1"
	OIDVerifiedTPMRestricted = "2.23.133.11.1.3"
)

// CertifyAK returns a DER certificate for the attestation key of the TPM rw
// (the AK that package tpm's Issuer creates), valid from an hour ago for a
// day, asserting that the CA verified the key is TPM-resident and restricted
// (the TCG policy OIDs above): this FAKE CA "verifies" by creating the key
// from the AK template itself. Pass it as tpm.IssuerOptions.AKCertificate.
func (ca *FakePlatformCA) CertifyAK(tb TB, rw io.ReadWriter) []byte {
	tb.Helper()
	return ca.certify(tb, AKPublicKey(tb, rw), time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), true)
}

// Certify returns a DER certificate for any public key, valid from an hour
// ago for a day, that binds only the key: it asserts nothing about the key's
// TPM attributes, like a cloud CA whose certificates carry no TCG policy
// OIDs (to certify a key that is not the TPM's AK, for attacks).
func (ca *FakePlatformCA) Certify(tb TB, pub crypto.PublicKey) []byte {
	tb.Helper()
	return ca.certify(tb, pub, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), false)
}

// CertifyAsVerified returns a certificate for any public key that asserts,
// rightly or not, that the CA verified it is a TPM-resident restricted key:
// a CA that certifies without checking, for attacks.
func (ca *FakePlatformCA) CertifyAsVerified(tb TB, pub crypto.PublicKey) []byte {
	tb.Helper()
	return ca.certify(tb, pub, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), true)
}

// CertifyValid returns a DER certificate for pub, with the TCG policy OIDs,
// valid from notBefore to notAfter (expired and not-yet-valid certificates,
// for attacks).
func (ca *FakePlatformCA) CertifyValid(tb TB, pub crypto.PublicKey, notBefore, notAfter time.Time) []byte {
	tb.Helper()
	return ca.certify(tb, pub, notBefore, notAfter, true)
}

func (ca *FakePlatformCA) certify(tb TB, pub crypto.PublicKey, notBefore, notAfter time.Time, verified bool) []byte {
	tb.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "fake AK"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if verified {
		for _, s := range []string{OIDVerifiedTPMResidency, OIDVerifiedTPMRestricted} {
			oid, err := x509.ParseOID(s)
			if err != nil {
				tb.Fatal(err)
			}
			tmpl.Policies = append(tmpl.Policies, oid)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		tb.Fatalf("certifying key: %v", err)
	}
	return der
}

// AKPublicKey returns the public key of rw's attestation key (the key package
// tpm's Issuer creates), so a CA can certify it before the issuer is built.
func AKPublicKey(tb TB, rw io.ReadWriter) crypto.PublicKey {
	tb.Helper()
	// tpm.AKTemplate, repeated: package tpm's tests import this package. An
	// issuer in AK-certificate mode refuses a certificate for another key,
	// so every AK-certificate test checks that the two agree.
	tmpl := client.AKTemplateECC()
	tmpl.Attributes |= tpm2.FlagNoDA
	ak, err := client.NewKey(rw, tpm2.HandleOwner, tmpl)
	if err != nil {
		tb.Fatalf("loading AK: %v", err)
	}
	defer ak.Close()
	return ak.PublicKey()
}
