// Package tdx implements the "tdx" attestation variant: Intel TDX version 4
// quotes, produced and checked with go-tdx-guest.
//
// The Issuer runs inside a TD. It asks a quote provider (configfs-tsm or
// /dev/tdx_guest, opened by OpenIssuer; a fake in tests) for a quote whose
// REPORTDATA is the caller's userData, zero padded to 64 bytes, and returns
// the quote bytes as they came from the hardware.
//
// The Validator runs anywhere (join service, CLI). It is pure: no device, no
// network. It trusts only the configured root certificates (by default Intel's
// SGX root CA, embedded here) and the reference values of a policy.TDX; the
// quote, its PCK certificate chain and everything the TD claims are untrusted
// until checked. Optionally it also checks the platform's TCB status against
// Intel PCS collateral held in a CollateralCache, which is filled off the hot
// path (from Intel PCS, or from files in offline mode).
//
// The fake Intel-shaped signer for tests is in package tdxtest.
package tdx
