package tpm

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"time"

	attestpb "github.com/google/go-tpm-tools/proto/attest"
	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm/legacy/tpm2"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// Size limits, checked before anything is parsed.
const (
	// MaxEvidenceSize bounds the serialized go-tpm-tools Attestation. Real
	// event logs are tens of KiB; quotes and keys add a few KiB.
	MaxEvidenceSize = 1 << 20
	// MaxEventLogSize bounds the event log an issuer reads and sends.
	MaxEventLogSize = 512 << 10
	// maxCertSize bounds one DER certificate.
	maxCertSize = 16 << 10
	// maxIntermediates bounds a certificate chain carried in evidence.
	maxIntermediates = 4
)

// PCRs 0..maxRequiredPCR of the SHA-256 bank must be in every quote: the boot
// chain (0–9, 14) and the cluster-ID latch (15).
const maxRequiredPCR = 15

// activationLabel separates the activation secret's HMAC from any other use
// of the key.
const activationLabel = "cloister/tpm/activation/v1"

// akRequiredAttrs are the attributes of a key that can only sign data the TPM
// itself produced (restricted) and never leaves its TPM. A key loaded from
// outside (TPM2_LoadExternal, TPM2_Import) cannot have fixedTPM and
// sensitiveDataOrigin, so it is refused here even if a credential was
// activated for it.
const akRequiredAttrs = tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin | tpm2.FlagRestricted | tpm2.FlagSign

// decoded is evidence after decoding, before any trust check.
type decoded struct {
	att *attestpb.Attestation
	// akPubRaw is the AK public area (TPMT_PUBLIC) as sent; canonical.
	akPubRaw []byte
	akPub    tpm2.Public
	akKey    crypto.PublicKey
	// quote is the SHA-256 quote; attested is its decoded TPMS_ATTEST.
	quote    *tpmpb.Quote
	attested *tpm2.AttestationData

	akCert          *x509.Certificate
	akIntermediates *x509.CertPool

	endorsement     *attestationv1.TPMEndorsement
	ekCert          *x509.Certificate
	ekIntermediates *x509.CertPool
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", attestation.VariantTPM, attestation.ErrMalformed, fmt.Sprintf(format, args...))
}

// decode parses the evidence without trusting anything in it. Every error
// wraps attestation.ErrMalformed.
func decode(ev *attestationv1.Evidence) (*decoded, error) {
	raw := ev.GetTpm()
	if len(raw) == 0 {
		return nil, malformed("empty tpm report")
	}
	if len(raw) > MaxEvidenceSize {
		return nil, malformed("tpm report is %d bytes, limit %d", len(raw), MaxEvidenceSize)
	}
	d := &decoded{att: &attestpb.Attestation{}}
	if err := proto.Unmarshal(raw, d.att); err != nil {
		return nil, malformed("decoding go-tpm-tools attestation: %v", err)
	}
	if err := d.decodeAK(); err != nil {
		return nil, err
	}
	if err := d.decodeQuote(); err != nil {
		return nil, err
	}
	if err := d.decodeAKCert(); err != nil {
		return nil, err
	}
	if err := d.decodeEndorsement(ev.GetTpmEndorsement()); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *decoded) decodeAK() error {
	d.akPubRaw = d.att.GetAkPub()
	if len(d.akPubRaw) == 0 {
		return malformed("no AK public area")
	}
	pub, err := tpm2.DecodePublic(d.akPubRaw)
	if err != nil {
		return malformed("decoding AK public area: %v", err)
	}
	// The raw bytes feed the hardware ID and the activation secret: refuse
	// trailing or non-canonical bytes, so one AK has exactly one encoding.
	enc, err := pub.Encode()
	if err != nil || !bytes.Equal(enc, d.akPubRaw) {
		return malformed("AK public area is not canonical")
	}
	key, err := pub.Key()
	if err != nil {
		return malformed("AK public key: %v", err)
	}
	d.akPub, d.akKey = pub, key
	return nil
}

func (d *decoded) decodeQuote() error {
	for _, q := range d.att.GetQuotes() {
		if tpm2.Algorithm(q.GetPcrs().GetHash()) != tpm2.AlgSHA256 {
			continue
		}
		if d.quote != nil {
			return malformed("two SHA-256 quotes")
		}
		d.quote = q
	}
	if d.quote == nil {
		return malformed("no quote over the SHA-256 PCR bank")
	}
	attested, err := tpm2.DecodeAttestationData(d.quote.GetQuote())
	if err != nil {
		return malformed("decoding quoted TPMS_ATTEST: %v", err)
	}
	if attested.Type != tpm2.TagAttestQuote || attested.AttestedQuoteInfo == nil {
		return malformed("TPMS_ATTEST is not a quote (type %v)", attested.Type)
	}
	d.attested = attested
	return nil
}

func (d *decoded) decodeAKCert() error {
	if len(d.att.GetAkCert()) == 0 {
		if len(d.att.GetIntermediateCerts()) > 0 {
			return malformed("AK intermediates without an AK certificate")
		}
		return nil
	}
	cert, err := parseCert("AK certificate", d.att.GetAkCert())
	if err != nil {
		return err
	}
	pool, err := parsePool("AK intermediates", d.att.GetIntermediateCerts())
	if err != nil {
		return err
	}
	d.akCert, d.akIntermediates = cert, pool
	return nil
}

func (d *decoded) decodeEndorsement(e *attestationv1.TPMEndorsement) error {
	if e == nil {
		return nil
	}
	cert, err := parseCert("EK certificate", e.GetEkCertificate())
	if err != nil {
		return err
	}
	pool, err := parsePool("EK intermediates", e.GetIntermediates())
	if err != nil {
		return err
	}
	if len(e.GetActivatedSecret()) > sha256.Size {
		return malformed("activated secret is %d bytes, want %d", len(e.GetActivatedSecret()), sha256.Size)
	}
	d.endorsement, d.ekCert, d.ekIntermediates = e, cert, pool
	return nil
}

func parseCert(what string, der []byte) (*x509.Certificate, error) {
	if len(der) == 0 {
		return nil, malformed("%s is empty", what)
	}
	if len(der) > maxCertSize {
		return nil, malformed("%s is %d bytes, limit %d", what, len(der), maxCertSize)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, malformed("parsing %s: %v", what, err)
	}
	return cert, nil
}

func parsePool(what string, ders [][]byte) (*x509.CertPool, error) {
	if len(ders) > maxIntermediates {
		return nil, malformed("%d %s, limit %d", len(ders), what, maxIntermediates)
	}
	pool := x509.NewCertPool()
	for i, der := range ders {
		cert, err := parseCert(fmt.Sprintf("%s[%d]", what, i), der)
		if err != nil {
			return nil, err
		}
		pool.AddCert(cert)
	}
	return pool, nil
}

// verifyChain verifies cert up to roots at time now. TPM certificates carry
// TCG extended key usages (tcg-kp-EKCertificate, tcg-kp-AIKCertificate), so
// any key usage is accepted; the trust anchor pool is what is specific.
func verifyChain(cert *x509.Certificate, roots, intermediates *x509.CertPool, now func() time.Time) error {
	// The SAN is handled by hand: TPM certificates put the TPM's
	// manufacturer, model and version in a critical SAN as a directoryName,
	// which crypto/x509 leaves "unhandled".
	oidSubjectAltName := asn1.ObjectIdentifier{2, 5, 29, 17}
	var unhandled []asn1.ObjectIdentifier
	for _, ext := range cert.UnhandledCriticalExtensions {
		if !ext.Equal(oidSubjectAltName) {
			unhandled = append(unhandled, ext)
		}
	}
	c := *cert
	c.UnhandledCriticalExtensions = unhandled
	_, err := c.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

// checkAKAttributes refuses AK public areas that are not restricted,
// non-duplicable signing keys.
func checkAKAttributes(pub tpm2.Public) error {
	attrs := pub.Attributes
	if attrs&akRequiredAttrs != akRequiredAttrs || attrs&tpm2.FlagDecrypt != 0 || pub.NameAlg != tpm2.AlgSHA256 {
		return &attestation.CheckError{
			Variant: attestation.VariantTPM,
			Check:   "ak-attributes",
			Want:    fmt.Sprintf("restricted non-duplicable signing key (attributes include %#08x, no decrypt, nameAlg SHA256)", uint32(akRequiredAttrs)),
			Got:     fmt.Sprintf("attributes %#08x, nameAlg %v", uint32(attrs), pub.NameAlg),
		}
	}
	return nil
}

// activationSecret is the secret the validator expects back from credential
// activation: an HMAC under the validator's key over the AK public area, the
// EK certificate and userData, with lengths so fields cannot shift.
func activationSecret(key []byte, akPub, ekCertDER, userData []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(activationLabel))
	for _, field := range [][]byte{akPub, ekCertDER, userData} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(field)))
		mac.Write(n[:])
		mac.Write(field)
	}
	return mac.Sum(nil)
}

// pcrName is the Claims.Measurements key and check name of a SHA-256 PCR.
func pcrName(i int) string { return fmt.Sprintf("pcr[%d]", i) }
