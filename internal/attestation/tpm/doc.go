// Package tpm implements the "tpm" attestation variant: a vTPM quote over the
// boot PCRs (SHA-256 bank, PCRs 0–23, at least 0–15), signed by an attestation
// key (AK), together with the TCG event log. The node's bootstrapper and
// disk-mapper issue evidence with an Issuer; the join service, the CLI and
// peers in attested TLS check it with a Validator.
//
// The issuing side uses go-tpm-tools' client package on a TPM passed in as an
// io.ReadWriter; the validating side is pure and uses go-tpm-tools' server and
// quote packages and go-tpm's credential-activation code.
//
// # Trust
//
// Everything in the evidence is untrusted until Validate has checked it. The AK
// is never trusted by assumption, only through a chain, in one of two modes:
//
//   - AK certificate (the cloud style): the evidence carries an AK certificate
//     that chains to ValidatorOptions.AKRoots, and whose key is the AK that
//     signed the quote.
//   - Endorsement key: the evidence carries the TPM's EK certificate, which
//     chains to ValidatorOptions.EKRoots (the TPM manufacturer), and the
//     secret recovered by TPM2_ActivateCredential from a challenge made with
//     TPM2_MakeCredential to that EK for the AK's name. Only the TPM holding
//     both keys can recover it, so it proves the AK lives in the certified
//     TPM.
//
// In both modes the AK's public area must describe a restricted signing key
// that never leaves its TPM (fixedTPM, fixedParent, sensitiveDataOrigin), so
// that every TPMS_ATTEST it signs was produced by the TPM itself.
//
// # Credential activation
//
// The validator is stateless between Challenge and Validate: it keeps one
// random HMAC key per process, and the expected secret is an HMAC over the AK
// public area, the EK certificate and userData. userData includes the TLS
// exporter of the session, so every secret is fresh and bound to one session;
// a secret answered for another challenge does not match. A consequence is
// that Challenge and Validate must run in the same process (the same
// Validator).
package tpm
