package tdx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

var _ attestation.Validator = (*Validator)(nil)

// intelRootPEM is Intel's SGX Root CA, the root of every genuine PCK chain.
// It is the same file go-tdx-guest embeds (verify/trusted_root.pem, SHA-256
// fingerprint 44:A0:19:6B:…:74:D3); we keep our own copy so that the trusted
// root is always passed explicitly and visible in this repository.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// Check names used in *attestation.CheckError, beyond "mrtd" and "rtmr[N]".
const (
	checkPCKChain   = "pck-chain"
	checkSignature  = "signature"
	checkBinding    = "binding"
	checkQE         = "qe-identity"
	checkSEAM       = "mrsignerseam"
	checkTCBSVN     = "tcb-svn"
	checkTCBStatus  = "tcb-status"
	checkCollateral = "collateral"
)

// ValidatorOptions configures a Validator. The zero value trusts Intel's
// real SGX root, checks no TCB status and uses the wall clock.
type ValidatorOptions struct {
	// TrustedRoots are the roots a quote's PCK chain must end in. Nil means
	// Intel's SGX Root CA. Tests pass tdxtest.Chain.Pool.
	TrustedRoots *x509.CertPool
	// Collateral, if set, makes Validate check the platform's TCB status
	// against Intel PCS collateral (TDX TCB info and QE identity) from this
	// cache: only "UpToDate" is accepted. Nil means no TCB status check: only
	// the PCK chain, the quote's signatures and the policy are checked, so a
	// platform with known-vulnerable firmware still passes. PCK certificate
	// revocation (Intel's CRLs) is not checked either way.
	Collateral *CollateralCache
	// Now is the time certificates and collateral are checked at; nil means
	// time.Now.
	Now func() time.Time
}

// Validator checks tdx evidence against a policy.TDX.
type Validator struct {
	pol        policy.TDX
	rtmrs      []int // indexes of pol.RTMRs, sorted, so checks run in a fixed order
	roots      *x509.CertPool
	collateral *CollateralCache
	now        func() time.Time
}

// NewValidator returns a validator for pol. It refuses a policy that
// policy.Parse would not have produced.
func NewValidator(pol *policy.TDX, opts ValidatorOptions) (*Validator, error) {
	if pol == nil {
		return nil, errors.New("tdx: no policy: add a tdx section to the cluster policy")
	}
	if len(pol.MRTD.Want) != abi.MrTdSize {
		return nil, fmt.Errorf("tdx: policy mrtd is %d bytes, want %d: set tdx.mrtd", len(pol.MRTD.Want), abi.MrTdSize)
	}
	v := &Validator{pol: *pol, roots: opts.TrustedRoots, collateral: opts.Collateral, now: opts.Now}
	for idx, val := range pol.RTMRs {
		if idx < 0 || idx >= rtmrCount {
			return nil, fmt.Errorf("tdx: policy rtmr[%d]: index out of range 0..%d", idx, rtmrCount-1)
		}
		if len(val.Want) != abi.RtmrSize {
			return nil, fmt.Errorf("tdx: policy rtmr[%d] is %d bytes, want %d", idx, len(val.Want), abi.RtmrSize)
		}
		v.rtmrs = append(v.rtmrs, idx)
	}
	slices.Sort(v.rtmrs)
	if n := len(pol.MinimumTEETCBSVN); n != 0 && n != abi.TeeTcbSvnSize {
		return nil, fmt.Errorf("tdx: policy minimumTeeTcbSvn is %d bytes, want %d or none", n, abi.TeeTcbSvnSize)
	}
	for _, f := range []struct {
		name string
		v    *policy.Value
		size int
	}{{"xfam", pol.XFAM, abi.XfamSize}, {"mrConfigId", pol.MRConfigID, abi.MrConfigIDSize}, {"mrOwner", pol.MROwner, abi.MrOwnerSize}, {"mrOwnerConfig", pol.MROwnerConfig, abi.MrOwnerConfigSize}} {
		if f.v != nil && len(f.v.Want) != f.size {
			return nil, fmt.Errorf("tdx: policy %s is %d bytes, want %d or none", f.name, len(f.v.Want), f.size)
		}
	}
	if v.roots == nil {
		roots, err := intelRoots()
		if err != nil {
			return nil, err
		}
		v.roots = roots
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

func intelRoots() (*x509.CertPool, error) {
	block, _ := pem.Decode(intelRootPEM)
	if block == nil {
		return nil, errors.New("tdx: internal error: embedded Intel root is not PEM")
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tdx: internal error: parsing embedded Intel root: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, nil
}

// Variant is attestation.VariantTDX.
func (*Validator) Variant() attestation.Variant { return attestation.VariantTDX }

// Validate checks tdx evidence and returns its claims. The checks, in order:
//
//  1. variant: the evidence is tdx and carries a quote (ErrWrongVariant);
//  2. the quote is at most 32 KiB and decodes as a TDX version 4 quote
//     (ErrMalformed);
//  3. "pck-chain": the PCK certificate chain in the quote ends in a trusted
//     root and is valid now;
//  4. "signature": go-tdx-guest's verifier accepts the quote: chain, QE
//     report signed by the PCK key, QE report data binding the attestation
//     key, and the attestation key's signature over header and TD body;
//  5. "binding": REPORTDATA equals userData zero padded to 64 bytes, padding
//     included;
//  6. "qe-identity": the quoting enclave that signed the attestation key
//     is Intel's TD quoting enclave (MRSIGNER, ISVPRODID 2, not a debug
//     enclave) — checked always, collateral or not: otherwise a host could
//     certify an attestation key of its own enclave and sign any TD body;
//     "mrsignerseam": the TDX module is Intel's (MRSIGNERSEAM all zero);
//  7. "seam-attributes": SEAMATTRIBUTES is zero (no debug TDX module);
//     "debug": no bit of TD_ATTRIBUTES' TUD group (bits 0–7, DEBUG and
//     the other TD-under-debug bits) is set; "td-attributes": no reserved
//     bit is set, and MIGRATABLE and PERFMON are clear unless the policy
//     allows them (policy.TDX documents each bit's decision);
//  8. "xfam": XFAM equals the policy's pinned value, or without one
//     satisfies the TDX module's fixed masks; "mrconfigid", "mrowner",
//     "mrownerconfig": each host-set value equals the policy's, or is all
//     zero when the policy pins none (pinned values in warn mode warn);
//  9. "mrtd", then "rtmr[N]" in index order: the policy's reference values
//     (a mismatch in warn mode becomes a warning in the claims);
//  10. "tcb-svn": TEE_TCB_SVN is at least the policy minimum, byte by byte;
//  11. only with ValidatorOptions.Collateral: "tcb-status": the TDX TCB
//     level and the QE's TCB level matching this platform are "UpToDate";
//     "collateral": the collateral is present, signed under the trusted
//     root, fresh, and matches the quote (FMSPC, PCE ID, TDX module, QE).
//
// Rejections are *attestation.CheckError naming the check.
func (v *Validator) Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error) {
	if err := attestation.CheckVariant(attestation.VariantTDX, ev); err != nil {
		return nil, err
	}
	if err := attestation.CheckUserData(userData); err != nil {
		return nil, fmt.Errorf("tdx: %w", err)
	}
	quote, err := parseQuote(ev.GetTdxQuote())
	if err != nil {
		return nil, fmt.Errorf("tdx: %w", err)
	}
	now := v.now()
	if err := v.checkChain(quote, now); err != nil {
		return nil, err
	}
	if err := verify.TdxQuoteContext(ctx, quote, v.verifyOptions(now)); err != nil {
		return nil, reject(checkSignature, "", "", err)
	}

	body := quote.GetTdQuoteBody()
	want := padReportData(userData)
	if got := body.GetReportData(); !bytes.Equal(got, want[:]) {
		return nil, reject(checkBinding, attestation.Hex(want[:]), attestation.Hex(got), nil)
	}
	if err := checkQuotingEnclave(quote); err != nil {
		return nil, err
	}
	if seam := body.GetMrSignerSeam(); !bytes.Equal(seam, make([]byte, len(seam))) {
		return nil, reject(checkSEAM, "all zero (Intel's TDX module)", hex.EncodeToString(seam), nil)
	}
	if err := checkSEAMAttributes(body.GetSeamAttributes()); err != nil {
		return nil, err
	}
	if err := checkTDAttributes(&v.pol, body.GetTdAttributes()); err != nil {
		return nil, err
	}

	var warnings []string
	warning, err := checkXFAM(&v.pol, body.GetXfam())
	if err != nil {
		return nil, err
	}
	if warning != "" {
		warnings = append(warnings, warning)
	}
	hostSetWarnings, err := checkHostSet(&v.pol, body)
	if err != nil {
		return nil, err
	}
	warnings = append(warnings, hostSetWarnings...)
	check := func(val policy.Value, name string, got []byte) error {
		warning, err := val.Check(attestation.VariantTDX, name, got)
		if warning != "" {
			warnings = append(warnings, warning)
		}
		return err
	}
	if err := check(v.pol.MRTD, "mrtd", body.GetMrTd()); err != nil {
		return nil, err
	}
	for _, idx := range v.rtmrs {
		if err := check(v.pol.RTMRs[idx], rtmrName(idx), body.GetRtmrs()[idx]); err != nil {
			return nil, err
		}
	}
	if err := v.checkTCBSVN(body.GetTeeTcbSvn()); err != nil {
		return nil, err
	}
	if v.collateral != nil {
		if err := v.checkTCBStatus(ctx, quote, now); err != nil {
			return nil, err
		}
	}

	measurements := map[string][]byte{"mrtd": bytes.Clone(body.GetMrTd())}
	for idx, rtmr := range body.GetRtmrs() {
		measurements[rtmrName(idx)] = bytes.Clone(rtmr)
	}
	hwid := sha256.Sum256(quote.GetSignedData().GetEcdsaAttestationKey())
	return &attestation.Claims{
		Variant:      attestation.VariantTDX,
		Measurements: measurements,
		HardwareID:   hwid[:],
		Warnings:     warnings,
	}, nil
}

// checkChain verifies the quote's PCK chain against the trusted roots before
// go-tdx-guest does it again, so that an untrusted or expired chain is
// reported as "pck-chain" rather than as a signature failure.
func (v *Validator) checkChain(quote *pb.QuoteV4, now time.Time) error {
	chain, err := verify.ExtractChainFromQuote(quote)
	if err != nil {
		return reject(checkPCKChain, "", "", err)
	}
	intermediates := x509.NewCertPool()
	intermediates.AddCert(chain.IntermediateCertificate)
	_, err = chain.PCKCertificate.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return reject(checkPCKChain, "chain to a trusted Intel SGX root, valid at "+now.UTC().Format(time.RFC3339), "subject "+chain.PCKCertificate.Subject.String(), err)
	}
	return nil
}

func (v *Validator) checkTCBSVN(got []byte) error {
	minimum := v.pol.MinimumTEETCBSVN
	if len(minimum) == 0 {
		return nil
	}
	for i := range minimum {
		if got[i] < minimum[i] {
			return reject(checkTCBSVN, ">= "+hex.EncodeToString(minimum)+" (byte by byte)", hex.EncodeToString(got), nil)
		}
	}
	return nil
}

// checkTCBStatus verifies the quote once more, now with collateral from the
// cache (go-tdx-guest keeps what it fetched in opts), and then reads the TCB
// levels matching this platform from that collateral. A level other than
// UpToDate is reported as "tcb-status" even when the verification failed
// too, because go-tdx-guest refuses such levels with errors we cannot tell
// apart from others; the quote is refused either way.
func (v *Validator) checkTCBStatus(ctx context.Context, quote *pb.QuoteV4, now time.Time) error {
	opts := v.verifyOptions(now)
	opts.GetCollateral = true
	opts.Getter = cacheGetter{v.collateral}
	verr := verify.TdxQuoteContext(ctx, quote, opts)
	tdxLevel, qeLevel, lerr := verify.SupportedTcbLevelsFromCollateral(quote, opts)
	if lerr == nil {
		if tdxLevel.TcbStatus != pcs.TcbComponentStatusUpToDate {
			return reject(checkTCBStatus, string(pcs.TcbComponentStatusUpToDate), "TDX TCB "+string(tdxLevel.TcbStatus), nil)
		}
		if qeLevel.TcbStatus != pcs.TcbComponentStatusUpToDate {
			return reject(checkTCBStatus, string(pcs.TcbComponentStatusUpToDate), "QE TCB "+string(qeLevel.TcbStatus), nil)
		}
	}
	if verr != nil {
		return reject(checkCollateral, "", "", verr)
	}
	if lerr != nil {
		return reject(checkTCBStatus, string(pcs.TcbComponentStatusUpToDate), "no matching TCB level", lerr)
	}
	return nil
}

func (v *Validator) verifyOptions(now time.Time) *verify.Options {
	return &verify.Options{
		TrustedRoots: v.roots,
		Now: &verify.TimeSet{
			PckCertChain: now,
			TcbInfo:      now,
			QeIdentity:   now,
			PckCrl:       now,
			RootCaCrl:    now,
		},
	}
}

func rtmrName(idx int) string { return fmt.Sprintf("rtmr[%d]", idx) }

func reject(check, want, got string, err error) *attestation.CheckError {
	return &attestation.CheckError{Variant: attestation.VariantTDX, Check: check, Want: want, Got: got, Err: err}
}

// Intel's TD quoting enclave identity. The QE report is signed by the PCK
// key, so these values come from the CPU; without checking them, any enclave
// the host runs (it has root) could certify an attestation key of its own.
var (
	// intelQEMRSigner is the MRSIGNER of Intel's TD quoting enclave, as
	// Intel PCS publishes it in the TD_QE enclave identity (isvprodid 2).
	intelQEMRSigner = [32]byte{
		0xdc, 0x9e, 0x2a, 0x7c, 0x6f, 0x94, 0x8f, 0x17, 0x47, 0x4e, 0x34, 0xa7, 0xfc, 0x43, 0xed, 0x03,
		0x0f, 0x7c, 0x15, 0x63, 0xf1, 0xba, 0xbd, 0xdf, 0x63, 0x40, 0xc8, 0x2e, 0x0e, 0x54, 0xa8, 0xc5,
	}
)

const (
	// tdQEProdID is the TD quoting enclave's ISVPRODID.
	tdQEProdID = 2
	// sgxAttributeDebug is bit 1 of the SGX ATTRIBUTES flags (byte 0).
	sgxAttributeDebug = 0x02
)

func checkQuotingEnclave(quote *pb.QuoteV4) error {
	qe := quote.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport()
	if qe == nil {
		return reject(checkQE, "a QE report", "none", nil)
	}
	if got := qe.GetMrSigner(); !bytes.Equal(got, intelQEMRSigner[:]) {
		return reject(checkQE, "MRSIGNER "+hex.EncodeToString(intelQEMRSigner[:]), "MRSIGNER "+attestation.Hex(got), nil)
	}
	if got := qe.GetIsvProdId(); got != tdQEProdID {
		return reject(checkQE, fmt.Sprintf("ISVPRODID %d", tdQEProdID), fmt.Sprintf("ISVPRODID %d", got), nil)
	}
	if attrs := qe.GetAttributes(); len(attrs) == 0 || attrs[0]&sgxAttributeDebug != 0 {
		return reject(checkQE, "a production enclave (ATTRIBUTES DEBUG clear)", "ATTRIBUTES "+attestation.Hex(attrs), nil)
	}
	return nil
}
