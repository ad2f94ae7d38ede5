package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	tpmquote "github.com/google/go-tpm-tools/quote"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

var (
	_ attestation.Validator  = (*Validator)(nil)
	_ attestation.Challenger = (*Validator)(nil)
)

// ValidatorOptions configures a Validator. At least one trust anchor pool is
// required; there is no way to trust an AK without a chain.
type ValidatorOptions struct {
	// AKRoots are the platform CAs that certify AKs (AK-certificate mode).
	// Nil refuses evidence that carries an AK certificate.
	AKRoots *x509.CertPool
	// EKRoots are the TPM manufacturer CAs that certify EKs (endorsement
	// mode, with credential activation). Nil refuses evidence that carries
	// an EK certificate.
	EKRoots *x509.CertPool
	// Now is the time certificates are checked at. Nil means time.Now.
	Now func() time.Time
	// Rand seeds the per-process activation HMAC key. Nil means
	// crypto/rand. (TPM2_MakeCredential's own seed always comes from
	// crypto/rand inside go-tpm.)
	Rand io.Reader
}

// Validator checks tpm evidence against a policy. It is safe for concurrent
// use.
type Validator struct {
	pol     *policy.TPM
	akRoots *x509.CertPool
	ekRoots *x509.CertPool
	now     func() time.Time
	// activationKey keys the HMAC that derives activation secrets. It never
	// leaves the process.
	activationKey []byte
}

// NewValidator returns a validator for pol, the policy's tpm section.
func NewValidator(pol *policy.TPM, opts ValidatorOptions) (*Validator, error) {
	if pol == nil {
		return nil, errors.New("tpm: no policy: pass the tpm section of the cluster policy")
	}
	if opts.AKRoots == nil && opts.EKRoots == nil {
		return nil, errors.New("tpm: no AK trust anchor: set ValidatorOptions.EKRoots or AKRoots")
	}
	for i := range pol.PCRs {
		if i < 0 || i > 23 {
			return nil, fmt.Errorf("tpm: policy pcr[%d]: index out of range 0..23", i)
		}
	}
	v := &Validator{pol: pol, akRoots: opts.AKRoots, ekRoots: opts.EKRoots, now: opts.Now, activationKey: make([]byte, 32)}
	if v.now == nil {
		v.now = time.Now
	}
	r := opts.Rand
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, v.activationKey); err != nil {
		return nil, fmt.Errorf("tpm: generating activation key: %w", err)
	}
	return v, nil
}

// Variant returns attestation.VariantTPM.
func (v *Validator) Variant() attestation.Variant { return attestation.VariantTPM }

// Challenge returns the credential-activation challenge for evidence in
// endorsement mode, and nil for evidence in AK-certificate mode. It refuses
// (before creating any credential) evidence whose EK certificate does not
// chain to EKRoots or whose AK is not a restricted TPM-resident signing key.
// The issuer's answer goes into ev.TpmEndorsement.ActivatedSecret before
// Validate, which must run on this same Validator.
func (v *Validator) Challenge(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestationv1.ActivationChallenge, error) {
	if err := attestation.CheckVariant(attestation.VariantTPM, ev); err != nil {
		return nil, err
	}
	if err := attestation.CheckUserData(userData); err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	d, err := decode(ev)
	if err != nil {
		return nil, err
	}
	if d.endorsement == nil {
		return nil, nil
	}
	if err := v.checkEK(d); err != nil {
		return nil, err
	}
	if err := checkAKAttributes(d.akPub); err != nil {
		return nil, err
	}
	name, err := d.akPub.Name()
	if err != nil || name.Digest == nil {
		return nil, malformed("computing AK name: %v", err)
	}
	blockSize, err := ekSymBlockSize(d.ekCert.PublicKey)
	if err != nil {
		return nil, err
	}
	secret := activationSecret(v.activationKey, d.akPubRaw, d.ekCert.Raw, userData)
	blob, encSecret, err := credactivation.Generate(name.Digest, d.ekCert.PublicKey, blockSize, secret)
	if err != nil {
		return nil, fmt.Errorf("tpm: making credential for the AK: %w", err)
	}
	return &attestationv1.ActivationChallenge{CredentialBlob: blob, EncryptedSecret: encSecret}, nil
}

// ekSymBlockSize is the block size of the EK's symmetric cipher, which the
// credential is encrypted with: AES-128 for the TCG default EK templates
// (RSA 2048, NIST P-256).
func ekSymBlockSize(pub crypto.PublicKey) (int, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() == 2048 {
			return 16, nil
		}
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return 16, nil
		}
	}
	return 0, &attestation.CheckError{Variant: attestation.VariantTPM, Check: "ek-key", Want: "RSA 2048 or NIST P-256 EK (TCG default templates)", Got: fmt.Sprintf("%T", pub)}
}

// Validate checks tpm evidence and returns Claims only when every check has
// passed. The checks, in order:
//
//  1. variant: the evidence is tpm evidence (attestation.ErrWrongVariant).
//  2. size limit and decoding of the go-tpm-tools Attestation, its AK public
//     area, SHA-256 quote and certificates (attestation.ErrMalformed).
//  3. AK trust, exactly one mode ("ak-trust" when the AK chains to nothing):
//     AK-certificate mode checks the chain to AKRoots at Now ("ak-chain"),
//     that the certificate's key is the AK ("ak-pub") and that the
//     certificate asserts the TCG policies tcg-cap-verifiedTPMResidency and
//     tcg-cap-verifiedTPMRestricted ("ak-cert-policy"); endorsement mode
//     checks the EK chain to EKRoots at Now ("ek-chain") and the activated
//     secret ("activation"). Then the AK must be a restricted,
//     TPM-resident signing key ("ak-attributes").
//  4. the quote: signature by the now-trusted AK, TPMS_ATTEST structure and
//     PCR digest ("quote"); it covers SHA-256 PCRs 0–15 and every policy PCR
//     ("pcr-selection"); its extraData equals userData ("binding").
//  5. policy PCRs against the verified quote ("pcr[N]"); a mismatch in warn
//     mode becomes a warning in the Claims.
//  6. "eventlog": the TCG event log (crypto-agile, SHA-256) replayed from
//     the reset values reproduces the quoted value of every policy PCR
//     (except the cluster-ID latch, PCR 15, which is extended after boot
//     without a log entry), of the firmware PCRs 0–9 and 14, and of every
//     PCR it has events for. An
//     empty log, a header-only log or a log missing a PCR's events therefore
//     passes only where that PCR is still at its reset value.
//
// Claims carry every quoted SHA-256 PCR as "pcr[N]" (PCR 15 is the
// cluster-ID latch) and HardwareID = SHA-256 of the AK public area.
func (v *Validator) Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error) {
	if err := attestation.CheckVariant(attestation.VariantTPM, ev); err != nil {
		return nil, err
	}
	if err := attestation.CheckUserData(userData); err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	d, err := decode(ev)
	if err != nil {
		return nil, err
	}
	akKey, err := v.trustAK(d, userData)
	if err != nil {
		return nil, err
	}
	if err := v.checkQuote(d, akKey, userData); err != nil {
		return nil, err
	}
	pcrs := d.quote.GetPcrs().GetPcrs()
	claims := &attestation.Claims{
		Variant:      attestation.VariantTPM,
		Measurements: make(map[string][]byte, len(pcrs)),
	}
	for _, i := range slices.Sorted(maps.Keys(v.pol.PCRs)) {
		warning, err := v.pol.PCRs[i].Check(attestation.VariantTPM, pcrName(i), pcrs[uint32(i)])
		if err != nil {
			return nil, err
		}
		if warning != "" {
			claims.Warnings = append(claims.Warnings, warning)
		}
	}
	// After the policy PCRs, so that a changed boot is reported as the PCR
	// that changed rather than as a log that does not explain it.
	if err := checkEventLog(d); err != nil {
		return nil, err
	}
	for i, val := range pcrs {
		claims.Measurements[pcrName(int(i))] = slices.Clone(val)
	}
	hwid := sha256.Sum256(d.akPubRaw)
	claims.HardwareID = hwid[:]
	return claims, nil
}

// trustAK establishes trust in the AK through exactly one chain and returns
// the trusted key.
func (v *Validator) trustAK(d *decoded, userData []byte) (crypto.PublicKey, error) {
	switch {
	case d.akCert != nil && d.endorsement != nil:
		return nil, &attestation.CheckError{Variant: attestation.VariantTPM, Check: "ak-trust", Want: "one trust path", Got: "both an AK certificate and an EK endorsement"}
	case d.akCert != nil:
		if err := v.checkAKCert(d); err != nil {
			return nil, err
		}
	case d.endorsement != nil:
		if err := v.checkEK(d); err != nil {
			return nil, err
		}
		if err := v.checkActivation(d, userData); err != nil {
			return nil, err
		}
	default:
		return nil, &attestation.CheckError{Variant: attestation.VariantTPM, Check: "ak-trust", Want: "an AK certificate or an EK endorsement", Got: "an AK that chains to nothing"}
	}
	if err := checkAKAttributes(d.akPub); err != nil {
		return nil, err
	}
	return d.akKey, nil
}

func (v *Validator) checkAKCert(d *decoded) error {
	if v.akRoots == nil {
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "ak-trust", Want: "EK endorsement (only ValidatorOptions.EKRoots is set)", Got: "an AK certificate"}
	}
	if err := verifyChain(d.akCert, v.akRoots, d.akIntermediates, v.now); err != nil {
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "ak-chain", Want: "AK certificate chained to AKRoots", Got: "subject " + d.akCert.Subject.String(), Err: err}
	}
	if !sameKey(d.akCert.PublicKey, d.akKey) {
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "ak-pub", Want: "the certified AK " + keyID(d.akCert.PublicKey), Got: "AK " + keyID(d.akKey)}
	}
	// The certificate binds only the key; the AK's attributes come from the
	// public area the evidence sends, which anyone can write. Only the CA's
	// own assertion that it verified the key is TPM-resident and restricted
	// makes checkAKAttributes mean something in this mode.
	if missing := missingPolicies(d.akCert); len(missing) > 0 {
		return &attestation.CheckError{
			Variant: attestation.VariantTPM,
			Check:   "ak-cert-policy",
			Want:    "AK certificate asserting tcg-cap-verifiedTPMResidency (2.23.133.11.1.1) and tcg-cap-verifiedTPMRestricted (2.23.133.11.1.3)",
			Got:     fmt.Sprintf("certificate policies %v, missing %v", d.akCert.Policies, missing),
		}
	}
	return nil
}

// The TCG certificate-policy OIDs (TPM 2.0 Keys for
// Device Identity and Attestation, 8.2) by which a CA states that it
// verified the certified key lives in a TPM (tcg-cap-verifiedTPMResidency)
// and has fixedTPM and restricted set (tcg-cap-verifiedTPMRestricted).
const (
	oidVerifiedTPMResidency  = "2.23.133.11.1.1"
	oidVerifiedTPMRestricted = "2.23.133.11.1.3"
)

// missingPolicies returns the required AK policies cert does not assert.
func missingPolicies(cert *x509.Certificate) []string {
	var missing []string
	for _, want := range []string{oidVerifiedTPMResidency, oidVerifiedTPMRestricted} {
		if !slices.ContainsFunc(cert.Policies, func(o x509.OID) bool { return o.String() == want }) {
			missing = append(missing, want)
		}
	}
	return missing
}

func (v *Validator) checkEK(d *decoded) error {
	if v.ekRoots == nil {
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "ak-trust", Want: "AK certificate (only ValidatorOptions.AKRoots is set)", Got: "an EK endorsement"}
	}
	if err := verifyChain(d.ekCert, v.ekRoots, d.ekIntermediates, v.now); err != nil {
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "ek-chain", Want: "EK certificate chained to EKRoots", Got: "subject " + d.ekCert.Subject.String() + ", issuer " + d.ekCert.Issuer.String(), Err: err}
	}
	return nil
}

func (v *Validator) checkActivation(d *decoded, userData []byte) error {
	got := d.endorsement.GetActivatedSecret()
	if len(got) == 0 {
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "activation", Want: "secret recovered by TPM2_ActivateCredential", Got: "(none): answer Challenge first"}
	}
	want := activationSecret(v.activationKey, d.akPubRaw, d.ekCert.Raw, userData)
	if subtle.ConstantTimeCompare(want, got) != 1 {
		// The secrets themselves stay out of the error.
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "activation", Want: "the secret of this session's challenge", Got: "another secret"}
	}
	return nil
}

// checkQuote verifies the SHA-256 quote with the trusted AK, its PCR
// selection and its binding to userData.
func (v *Validator) checkQuote(d *decoded, akKey crypto.PublicKey, userData []byte) error {
	// Verify the signature, structure and PCR digest first, against the
	// quote's own extraData, so a replay shows up as "binding" below.
	if err := tpmquote.Verify(d.quote, akKey, d.attested.ExtraData); err != nil {
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "quote", Want: "SHA-256 quote signed by the trusted AK", Got: "a quote that does not verify", Err: err}
	}
	pcrs := d.quote.GetPcrs().GetPcrs()
	for i := 0; i <= maxRequiredPCR; i++ {
		if _, ok := pcrs[uint32(i)]; !ok {
			return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "pcr-selection", Want: fmt.Sprintf("SHA-256 PCRs 0-%d quoted", maxRequiredPCR), Got: fmt.Sprintf("pcr[%d] missing", i)}
		}
	}
	for i := range v.pol.PCRs {
		if _, ok := pcrs[uint32(i)]; !ok {
			return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "pcr-selection", Want: "every policy PCR quoted", Got: fmt.Sprintf("pcr[%d] missing", i)}
		}
	}
	if subtle.ConstantTimeCompare(d.attested.ExtraData, userData) != 1 {
		return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "binding", Want: attestation.Hex(userData), Got: attestation.Hex(d.attested.ExtraData)}
	}
	return nil
}

func sameKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// keyID names a public key in errors: the SHA-256 of its PKIX encoding.
func keyID(k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return fmt.Sprintf("(%T)", k)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + attestation.Hex(sum[:8])
}
