package snp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// maxEvidenceSize bounds the serialized attestation before it is decoded. A
// report is 1184 bytes and each AMD certificate under 2 KiB.
const maxEvidenceSize = 64 << 10

// The checks of Validate, as named in *attestation.CheckError.
const (
	checkChain       = "vcek-chain"
	checkChipID      = "chip-id"
	checkBinding     = "binding"
	checkDebug       = "debug"
	checkMigrateMA   = "migrate-ma"
	checkVMPL        = "vmpl"
	checkMeasurement = "measurement"
	checkTCB         = "tcb"
	checkProduct     = "product"
)

// ValidatorOptions are the optional settings of a Validator. The zero value
// is safe: AMD's real roots, no network, the system clock.
type ValidatorOptions struct {
	// TrustedRoots maps a product line ("Milan", "Genoa", "Turin") to the
	// AMD root certificates (ARK and ASK/ASVK) accepted for it. Nil means the
	// real AMD roots embedded in go-sev-guest, for VCEK and VLEK chains. An
	// empty non-nil map is refused rather than read as "trust nothing" or
	// "trust the defaults".
	TrustedRoots map[string][]*trust.AMDRootCerts
	// Getter supplies VCEK certificates that the evidence lacks, usually a
	// *CertCache (offline to keep Validate off the network). Nil refuses
	// evidence without its VCEK. Evidence that carries its VCEK never
	// reaches the getter.
	Getter trust.HTTPSGetter
	// Now is the time at which certificates must be valid. Nil means
	// time.Now.
	Now func() time.Time
}

// Validator checks sev-snp evidence against a policy.
type Validator struct {
	pol    policy.SNP
	roots  map[string][]*trust.AMDRootCerts
	getter trust.HTTPSGetter
	now    func() time.Time
}

var _ attestation.Validator = (*Validator)(nil)

// productLines are the product lines whose TCB_VERSION layout this package
// decodes, and so the ones a policy may name. Turin's layout differs (it has
// an FMC field); it is refused until it is decoded per product line.
func productLines() []string { return []string{"Milan", "Genoa"} }

// NewValidator returns a Validator that enforces pol.
func NewValidator(pol *policy.SNP, opts ValidatorOptions) (*Validator, error) {
	if pol == nil {
		return nil, errors.New("snp: no sev-snp policy: add a sev-snp section to the policy document")
	}
	if len(pol.Measurement.Want) != abi.MeasurementSize {
		return nil, fmt.Errorf("snp: policy measurement is %d bytes, want %d", len(pol.Measurement.Want), abi.MeasurementSize)
	}
	for _, p := range pol.Products {
		if !slices.Contains(productLines(), p) {
			return nil, fmt.Errorf("snp: policy product %q is unknown: use one of %v", p, productLines())
		}
	}
	roots := opts.TrustedRoots
	switch {
	case roots == nil:
		var err error
		if roots, err = amdRoots(); err != nil {
			return nil, err
		}
	case len(roots) == 0:
		return nil, errors.New("snp: ValidatorOptions.TrustedRoots is empty: set it to nil to trust AMD's roots, or add roots")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	p := *pol
	p.Products = slices.Clone(pol.Products)
	return &Validator{pol: p, roots: roots, getter: opts.Getter, now: now}, nil
}

// amdRoots parses the real AMD roots embedded in go-sev-guest: for each
// product line the ARK with the ASK (for VCEKs) and with the ASVK (for VLEKs,
// which go-sev-guest's own default leaves out).
func amdRoots() (map[string][]*trust.AMDRootCerts, error) {
	bundles := map[string][2][]byte{
		"Milan": {trust.AskArkMilanVcekBytes, trust.AskArkMilanVlekBytes},
		"Genoa": {trust.AskArkGenoaVcekBytes, trust.AskArkGenoaVlekBytes},
		"Turin": {trust.AskArkTurinVcekBytes, trust.AskArkTurinVlekBytes},
	}
	roots := make(map[string][]*trust.AMDRootCerts, len(bundles))
	for line, b := range bundles {
		vcek := &trust.AMDRootCerts{ProductLine: line}
		// TrimSpace: one embedded bundle ends in extra newlines, which the
		// strict KDS parser refuses.
		if err := vcek.FromKDSCertBytes(bytes.TrimSpace(b[0])); err != nil || vcek.ProductCerts.Ask == nil || vcek.ProductCerts.Ark == nil {
			return nil, fmt.Errorf("snp: internal error: embedded AMD %s VCEK roots: %v", line, err)
		}
		vlek := &trust.AMDRootCerts{ProductLine: line}
		if err := vlek.FromKDSCertBytes(bytes.TrimSpace(b[1])); err != nil || vlek.ProductCerts.Asvk == nil || vlek.ProductCerts.Ark == nil {
			return nil, fmt.Errorf("snp: internal error: embedded AMD %s VLEK roots: %v", line, err)
		}
		roots[line] = []*trust.AMDRootCerts{vcek, vlek}
	}
	return roots, nil
}

// Variant returns attestation.VariantSNP.
func (v *Validator) Variant() attestation.Variant { return attestation.VariantSNP }

// Validate checks ev and returns its claims only when every check passed.
// The checks, in order:
//
//  1. userData is 1..64 bytes (a caller error otherwise);
//  2. the evidence is sev-snp (ErrWrongVariant otherwise);
//  3. it is at most 64 KiB and decodes into a well-formed report
//     (ErrMalformed otherwise); a missing VCEK is taken from
//     ValidatorOptions.Getter;
//  4. "vcek-chain": the VCEK (or VLEK) chains to the trusted AMD roots of
//     the report's product line, every certificate is valid at Now, and the
//     VCEK signed the report; "chip-id": the report's CHIP_ID, unless masked,
//     is the VCEK's;
//  5. "binding": REPORT_DATA is userData followed by zeros, all 64 bytes;
//  6. "debug": the guest policy forbids debugging; "migrate-ma": it
//     forbids a migration agent;
//  7. "vmpl": the report was requested at VMPL 0;
//  8. "measurement": the launch measurement matches the policy (in warn
//     mode a mismatch becomes a warning in the claims);
//  9. "tcb": the report's CURRENT, REPORTED, COMMITTED and LAUNCH TCB and
//     the VCEK's TCB each reach the policy minimum in every component (the
//     error names the field), and the VCEK is the one for the REPORTED TCB;
//  10. "product": the product line is one the policy allows.
//
// Failed checks are *attestation.CheckError values naming the check.
func (v *Validator) Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error) {
	if err := attestation.CheckUserData(userData); err != nil {
		return nil, fmt.Errorf("sev-snp: %w", err)
	}
	if err := attestation.CheckVariant(attestation.VariantSNP, ev); err != nil {
		return nil, err
	}
	att, err := decode(ev.GetSevSnp())
	if err != nil {
		return nil, err
	}
	if err := fetchVCEK(ctx, v.getter, att); err != nil {
		return nil, reject(checkChain, "", "", err)
	}
	report := att.GetReport()

	if err := verify.SnpAttestationContext(ctx, att, &verify.Options{
		DisableCertFetching: true,
		Now:                 v.now(),
		TrustedRoots:        v.roots,
	}); err != nil {
		return nil, reject(checkChain, "", "", err)
	}
	signer, err := abi.ParseSignerInfo(report.GetSignerInfo())
	if err != nil {
		return nil, reject(checkChain, "", "", err)
	}
	exts, err := endorsementKey(att, signer.SigningKey)
	if err != nil {
		return nil, reject(checkChain, "", "", err)
	}
	// A VLEK is per platform, not per chip: then the report's CHIP_ID is the
	// hardware ID, unless the guest masked it.
	var hardwareID []byte
	if !allZero(report.GetChipId()) {
		hardwareID = report.GetChipId()
	}
	if signer.SigningKey == abi.VcekReportSigner {
		if !allZero(report.GetChipId()) && !bytes.Equal(report.GetChipId(), exts.HWID) {
			return nil, reject(checkChipID, attestation.Hex(exts.HWID), attestation.Hex(report.GetChipId()), nil)
		}
		hardwareID = exts.HWID
	}

	if err := checkReportData(report.GetReportData(), userData); err != nil {
		return nil, err
	}
	guestPolicy, err := abi.ParseSnpPolicy(report.GetPolicy())
	if err != nil {
		// decode already parsed it; this cannot happen.
		return nil, reject(checkDebug, "", "", err)
	}
	if guestPolicy.Debug {
		return nil, reject(checkDebug, "debug=false", "debug=true", nil)
	}
	// MIGRATE_MA lets a migration agent, chosen at launch by the host, move
	// the guest and its memory elsewhere: the SNP sibling of TDX's
	// MIGRATABLE, refused likewise (no policy allows it yet).
	if guestPolicy.MigrateMA {
		return nil, reject(checkMigrateMA, "migrate_ma=false", "migrate_ma=true", nil)
	}
	if report.GetVmpl() != 0 {
		return nil, reject(checkVMPL, "0", fmt.Sprint(report.GetVmpl()), nil)
	}
	var warnings []string
	warning, err := v.pol.Measurement.Check(attestation.VariantSNP, checkMeasurement, report.GetMeasurement())
	if err != nil {
		return nil, err
	}
	if warning != "" {
		warnings = append(warnings, warning)
	}
	// The product line comes before the TCB: the TCB_VERSION layout
	// differs between product lines, and only Milan's and Genoa's are
	// decoded here (Turin adds an FMC field and moves the others).
	line, err := reportProductLine(report, exts, signer.SigningKey)
	if err != nil {
		return nil, reject(checkProduct, "", "", err)
	}
	if !slices.Contains(productLines(), line) {
		return nil, reject(checkProduct, strings.Join(productLines(), "|")+" (TCB layouts this version decodes)", line, nil)
	}
	if len(v.pol.Products) > 0 && !slices.Contains(v.pol.Products, line) {
		return nil, reject(checkProduct, strings.Join(v.pol.Products, "|"), line, nil)
	}
	if err := v.checkTCB(report, exts.TCBVersion); err != nil {
		return nil, err
	}
	return &attestation.Claims{
		Variant: attestation.VariantSNP,
		Measurements: map[string][]byte{
			"measurement": slices.Clone(report.GetMeasurement()),
			"host-data":   slices.Clone(report.GetHostData()),
		},
		HardwareID: slices.Clone(hardwareID),
		Warnings:   warnings,
	}, nil
}

// decode bounds, decodes and normalizes the attestation. The report is
// re-encoded to the bytes AMD signs and parsed back, so every field checked
// later is exactly a field covered by the signature.
func decode(b []byte) (*spb.Attestation, error) {
	if len(b) > maxEvidenceSize {
		return nil, fmt.Errorf("sev-snp: %w: attestation is %d bytes, limit %d", attestation.ErrMalformed, len(b), maxEvidenceSize)
	}
	att := &spb.Attestation{}
	if err := proto.Unmarshal(b, att); err != nil {
		return nil, fmt.Errorf("sev-snp: %w: decoding attestation: %v", attestation.ErrMalformed, err)
	}
	if att.GetReport() == nil {
		return nil, fmt.Errorf("sev-snp: %w: attestation has no report", attestation.ErrMalformed)
	}
	raw, err := abi.ReportToAbiBytes(att.GetReport())
	if err != nil {
		return nil, fmt.Errorf("sev-snp: %w: report: %v", attestation.ErrMalformed, err)
	}
	if err := abi.ValidateReportFormat(raw); err != nil {
		return nil, fmt.Errorf("sev-snp: %w: report: %v", attestation.ErrMalformed, err)
	}
	report, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("sev-snp: %w: report: %v", attestation.ErrMalformed, err)
	}
	att.Report = report
	if att.CertificateChain == nil {
		att.CertificateChain = &spb.CertificateChain{}
	}
	return att, nil
}

// endorsementKey parses the certificate that verify.SnpAttestation has just
// chained to the roots, for its KDS extensions (HWID, TCB, product).
func endorsementKey(att *spb.Attestation, key abi.ReportSigner) (*kds.Extensions, error) {
	der := att.GetCertificateChain().GetVcekCert()
	if key == abi.VlekReportSigner {
		der = att.GetCertificateChain().GetVlekCert()
	}
	cert, err := trust.ParseCert(der)
	if err != nil {
		return nil, fmt.Errorf("parsing %v certificate: %v", key, err)
	}
	exts, err := kds.CertificateExtensions(cert, key)
	if err != nil {
		return nil, fmt.Errorf("reading %v certificate extensions: %v", key, err)
	}
	return exts, nil
}

// checkReportData requires REPORT_DATA to be userData followed by zeros: the
// padding is checked too, so no other value can ride along.
func checkReportData(reportData, userData []byte) error {
	if len(reportData) != abi.ReportDataSize {
		return reject(checkBinding, fmt.Sprintf("%d bytes", abi.ReportDataSize), fmt.Sprintf("%d bytes", len(reportData)), nil)
	}
	if !bytes.Equal(reportData[:len(userData)], userData) {
		return reject(checkBinding, attestation.Hex(userData), attestation.Hex(reportData[:len(userData)]), nil)
	}
	if pad := reportData[len(userData):]; !allZero(pad) {
		return reject(checkBinding, fmt.Sprintf("%d zero bytes of padding", len(pad)), attestation.Hex(pad), nil)
	}
	return nil
}

// checkTCB compares every TCB of the report and the VCEK's with the policy
// minimum, component by component, then requires the VCEK to be certified
// for the REPORTED TCB (a VCEK is issued per chip and TCB). Each TCB must
// reach the minimum, for its own reason:
//
//   - CURRENT_TCB: the firmware running now, which produced this report;
//   - REPORTED_TCB: the TCB the host chose to report and the VCEK is derived
//     from; the host may set it below CURRENT_TCB, and a VCEK for an old
//     TCB is one whose key may have leaked;
//   - COMMITTED_TCB: the lowest TCB the platform can roll back to; below the
//     minimum, the host can return to vulnerable firmware at any time;
//   - LAUNCH_TCB: the CURRENT_TCB when this guest was launched (or imported);
//     a guest launched under vulnerable firmware keeps whatever that
//     firmware exposed (its launch, its memory, its keys) after an update.
//     Firmware that leaves the field zero (older report versions) fails
//     every non-zero minimum: absent is not "new enough";
//   - the VCEK's TCB: what AMD certified, which must also equal REPORTED_TCB.
func (v *Validator) checkTCB(report *spb.Report, certTCB kds.TCBVersion) error {
	minimum := v.pol.MinimumTCB
	for _, t := range []struct {
		name string
		tcb  kds.TCBVersion
	}{
		{"current_tcb", kds.TCBVersion(report.GetCurrentTcb())},
		{"reported_tcb", kds.TCBVersion(report.GetReportedTcb())},
		{"committed_tcb", kds.TCBVersion(report.GetCommittedTcb())},
		{"launch_tcb", kds.TCBVersion(report.GetLaunchTcb())},
		{"vcek_tcb", certTCB},
	} {
		p := kds.DecomposeTCBVersion(t.tcb)
		if p.BlSpl < minimum.Bootloader || p.TeeSpl < minimum.TEE || p.SnpSpl < minimum.SNP || p.UcodeSpl < minimum.Microcode {
			return reject(checkTCB, t.name+" "+formatTCB(">=", minimum.Bootloader, minimum.TEE, minimum.SNP, minimum.Microcode),
				t.name+" "+formatTCB("=", p.BlSpl, p.TeeSpl, p.SnpSpl, p.UcodeSpl), nil)
		}
	}
	if uint64(certTCB) != report.GetReportedTcb() {
		return reject(checkTCB, fmt.Sprintf("vcek_tcb = reported_tcb 0x%016x", report.GetReportedTcb()), fmt.Sprintf("vcek_tcb 0x%016x", uint64(certTCB)), nil)
	}
	return nil
}

func formatTCB(op string, bl, tee, snp, ucode uint8) string {
	return fmt.Sprintf("bootloader%s%d tee%s%d snp%s%d microcode%s%d", op, bl, op, tee, op, snp, op, ucode)
}

// reportProductLine is the product line the chain was checked for: the
// report's signed CPUID (version 3 and later) or else the product named in
// the AMD-signed VCEK/VLEK.
func reportProductLine(report *spb.Report, exts *kds.Extensions, key abi.ReportSigner) (string, error) {
	if fms := report.GetCpuid1EaxFms(); fms != 0 {
		return kds.ProductLineFromFms(fms), nil
	}
	product, err := kds.ParseProductName(exts.ProductName, key)
	if err != nil {
		return "", fmt.Errorf("reading product from %v certificate: %v", key, err)
	}
	return kds.ProductLine(product), nil
}

func reject(check, want, got string, err error) *attestation.CheckError {
	return &attestation.CheckError{Variant: attestation.VariantSNP, Check: check, Want: want, Got: got, Err: err}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
