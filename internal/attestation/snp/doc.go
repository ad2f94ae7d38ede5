// Package snp implements the sev-snp attestation variant: AMD SEV-SNP
// attestation reports, issued and verified with go-sev-guest.
//
// The Issuer runs inside the confidential VM (bootstrapper, disk-mapper). It
// asks the AMD secure processor (through configfs-tsm or /dev/sev-guest) for
// an extended report whose REPORT_DATA is the caller's userData, zero padded
// to 64 bytes, and ships the report with the host's certificate table (VCEK
// or VLEK, ASK or ASVK, ARK) as a go-sev-guest sevsnp.Attestation.
//
// The Validator runs on the verifying side (join service, CLI), usually
// through attestation.Validators. It trusts only the AMD root keys (the real
// ones embedded in go-sev-guest, or ValidatorOptions.TrustedRoots) and the
// cluster policy; everything in the evidence, including its ASK and ARK, and
// the host's certificate table on the issuing side, is untrusted input. It
// is pure: it opens no device, and it reaches the network only through
// ValidatorOptions.Getter, and only when the evidence lacks its VCEK. A
// CertCache in offline mode makes that path network-free as well.
//
// go-sev-guest's testing package (fake device, fake AMD signer, fake KDS)
// registers flags, so only _test.go files import it.
package snp
