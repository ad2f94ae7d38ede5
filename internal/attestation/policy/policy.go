package policy

import (
	"bytes"
	"fmt"

	"github.com/cloister-dev/cloister/internal/attestation"
)

// Version is the only document version this package reads.
const Version = 1

// Mode says what a mismatch of a reference value does.
type Mode string

const (
	// Enforce rejects evidence whose value differs. The default.
	Enforce Mode = "enforce"
	// Warn accepts it and records a warning in the claims.
	Warn Mode = "warn"
)

// Policy is a parsed, validated reference-value document. A nil section means
// the variant is not allowed.
type Policy struct {
	Version int
	// Name identifies the document in audit logs (e.g. "prod-2026-11").
	Name        string
	TPM         *TPM
	SNP         *SNP
	TDX         *TDX
	InsecureDev *InsecureDev
}

// Value is one reference value and its mode.
type Value struct {
	Want []byte
	Mode Mode
}

// Check compares got with the reference value. A mismatch in Enforce mode is a
// *attestation.CheckError; in Warn mode it is returned as a warning line.
func (v Value) Check(variant attestation.Variant, check string, got []byte) (warning string, err error) {
	if bytes.Equal(v.Want, got) {
		return "", nil
	}
	mismatch := &attestation.CheckError{Variant: variant, Check: check, Want: attestation.Hex(v.Want), Got: attestation.Hex(got)}
	if v.Mode == Warn {
		return mismatch.Error(), nil
	}
	return "", mismatch
}

// TPM holds the reference values of the tpm variant.
type TPM struct {
	// PCRs maps a SHA-256 PCR index to its value. Only listed PCRs are
	// checked, but every quote must cover them.
	PCRs map[int]Value
}

// SNP holds the reference values of the sev-snp variant. Debug guests and
// VMPL other than 0 are always refused; there is no setting to allow them.
type SNP struct {
	// Measurement is the 48-byte launch measurement.
	Measurement Value
	// MinimumTCB is the lowest TCB accepted, component by component, in
	// each of the report's CURRENT, REPORTED, COMMITTED and LAUNCH TCB and
	// in the VCEK.
	MinimumTCB SNPTCB
	// Products lists the accepted processor product names ("Milan",
	// "Genoa"). Empty means any supported product.
	Products []string
}

// SNPTCB is an SEV-SNP TCB version, one security version number per component.
type SNPTCB struct {
	Bootloader uint8
	TEE        uint8
	SNP        uint8
	Microcode  uint8
}

// TDX holds the reference values of the tdx variant. The zero value of each
// optional field is the strict choice.
//
// TD_ATTRIBUTES are decided here, bit by bit, and the tdx validator refuses
// every bit it does not know: the whole TUD group (bits 0–7: DEBUG and the
// off-TD debug and profiling bits) is always refused, as Intel treats any of
// them as an untrusted TD; LASS (27), PKS (30) and KL (31) are accepted (they
// only restrict the guest itself); SEPT_VE_DISABLE (28) is accepted either
// way (a Linux guest refuses to run with #VE on private memory enabled: it
// panics unless the attribute is set or it disables the #VEs itself through
// TD_CTLS, as newer kernels do, and the guest kernel is what the RTMRs pin);
// MIGRATABLE (29) and PERFMON (63) must be clear unless allowed below; every
// other bit is reserved and must be zero.
type TDX struct {
	// MRTD is the 48-byte measurement of the initial TD contents.
	MRTD Value
	// RTMRs maps a runtime measurement register (0..3) to its value.
	RTMRs map[int]Value
	// MinimumTEETCBSVN is the lowest TEE_TCB_SVN accepted (16 bytes,
	// compared byte by byte). Nil means no minimum.
	MinimumTEETCBSVN []byte
	// XFAM, if set, is the exact 8-byte XFAM (the extended CPU features the
	// TD may use). Nil still requires an architecturally valid XFAM: x87
	// and SSE set, no bit outside those the TDX module supports.
	XFAM *Value
	// MRConfigID, MROwner and MROwnerConfig are set by the host, not
	// measured by the TDX module: an unpinned one must be all zero, so the
	// host cannot pass the TD configuration that nobody checks. Set one to
	// pin the 48-byte value the deployment uses.
	MRConfigID    *Value
	MROwner       *Value
	MROwnerConfig *Value
	// AllowMigratable accepts TDs with MIGRATABLE set. Such a TD can be
	// exported, with its secrets, to any platform a migration TD approves:
	// the policy must trust that migration TD as well.
	AllowMigratable bool
	// AllowPerfmon accepts TDs with PERFMON set, which hands the TD the
	// performance-monitoring counters (a side channel and a non-default
	// configuration).
	AllowPerfmon bool
}

// InsecureDev allows the insecure-dev variant. Only Parse makes a usable
// one, from a document that says iUnderstandThisProvesNothing: true, so
// evidence that proves nothing cannot be accepted by accident in code either.
type InsecureDev struct {
	consented bool
}

// Allowed reports whether the value came from a consenting policy document.
// A zero InsecureDev{} built in code is not allowed.
func (d *InsecureDev) Allowed() bool { return d != nil && d.consented }

// String gives a one-line summary for logs.
func (p *Policy) String() string {
	var sections []string
	if p.TPM != nil {
		sections = append(sections, fmt.Sprintf("tpm(%d pcrs)", len(p.TPM.PCRs)))
	}
	if p.SNP != nil {
		sections = append(sections, "sev-snp")
	}
	if p.TDX != nil {
		sections = append(sections, "tdx")
	}
	if p.InsecureDev != nil {
		sections = append(sections, "INSECURE-DEV")
	}
	return fmt.Sprintf("policy %q v%d %v", p.Name, p.Version, sections)
}
