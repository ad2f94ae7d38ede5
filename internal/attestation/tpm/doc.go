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
//   - AK certificate: the evidence carries an AK certificate that chains to
//     ValidatorOptions.AKRoots, whose key is the AK that signed the quote,
//     and which asserts the TCG certificate policies
//     tcg-cap-verifiedTPMResidency (2.23.133.11.1.1) and
//     tcg-cap-verifiedTPMRestricted (2.23.133.11.1.3) from "TPM 2.0 Keys
//     for Device Identity and Attestation": the CA's statement that it
//     verified the key lives in a TPM with fixedTPM and restricted set.
//   - Endorsement key: the evidence carries the TPM's EK certificate, which
//     chains to ValidatorOptions.EKRoots (the TPM manufacturer), and the
//     secret recovered by TPM2_ActivateCredential from a challenge made with
//     TPM2_MakeCredential to that EK for the AK's name. Only the TPM holding
//     both keys can recover it, so it proves the AK lives in the certified
//     TPM.
//
// In both modes the AK's public area must describe a restricted signing key
// that never leaves its TPM (fixedTPM, fixedParent, sensitiveDataOrigin), so
// that every TPMS_ATTEST it signs was produced by the TPM itself: a
// restricted key refuses to sign data that starts with TPM_GENERATED_VALUE
// unless the TPM made it, an unrestricted one signs anything, including a
// hand-made "quote" with chosen PCR digests. The public area is sent by the
// node, so its attributes are only a claim until something the validator
// trusts vouches for them:
//
//   - In endorsement mode the TPM does. The credential is made for the AK's
//     name, a hash of the whole public area, attributes included, and the
//     TPM releases the secret only for a loaded object with that name whose
//     authorization it can check. An object loaded from outside with only
//     its public area (TPM2_LoadExternal, any attributes) has neither
//     authValue nor authPolicy available, and one loaded with its sensitive
//     area may not have fixedTPM, fixedParent or restricted set; an imported
//     (duplicated) object cannot have fixedTPM. So a recovered secret means
//     the TPM holds the AK with exactly the attributes checked.
//   - In AK-certificate mode the certificate binds only the key, and the CA
//     has to vouch for the rest: that is what the two TCG policy OIDs say,
//     and the validator refuses certificates without them ("ak-cert-policy").
//     AKRoots are trusted to assert them only for keys they verified. A CA
//     whose AK certificates bind only the key (Google Cloud's, for one)
//     cannot be used in this mode; use endorsement mode on such platforms.
//
// # Event log
//
// The quote's PCR values are what the policy is checked against; the TCG
// event log only explains them, and the "eventlog" check makes sure it
// really does. The log is replayed here, strictly, from the PCR reset values
// (not with go-tpm-tools' server.VerifyAttestation, which accepts an empty
// log, skips PCRs without events and edits logs until they replay), and it
// must reproduce the quoted value of the firmware PCRs 0–9 and 14 and of
// every PCR it has events for. A policy PCR extended without a log entry
// (IMA's PCR 10, the cluster-ID latch 15) is compared with the signed quote
// by its own check only: the log claims nothing about it, so it needs not
// explain it.
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
