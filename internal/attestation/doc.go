// Package attestation defines how Cloister nodes prove what they run: an
// Issuer turns userData into hardware-signed Evidence, and a Validator checks
// Evidence against userData and the cluster policy and returns Claims.
//
// One sub-package per platform implements both sides: tpm (vTPM quotes via
// go-tpm-tools), snp (AMD SEV-SNP via go-sev-guest), tdx (Intel TDX via
// go-tdx-guest). Package policy holds the reference values.
//
// # Trust
//
// Evidence is untrusted input. Validators are pure (no devices, no network on
// the hot path) and return Claims only after every check has passed; a
// rejection is a *CheckError that names the check and its expected and actual
// values. userData is at most MaxUserData bytes and is always bound into the
// hardware report; it is never cut short.
//
// # Registries
//
// Validators (keyed by Variant) is built by main, never in init(). Lookup goes
// by the evidence's variant, and a validator refuses evidence of another
// variant with ErrWrongVariant, so one platform cannot pose as another.
package attestation
