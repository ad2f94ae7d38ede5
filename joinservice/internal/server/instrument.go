package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// evidenceVerifier is what attested TLS calls to check a peer.
type evidenceVerifier interface {
	Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error)
	Challenge(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestationv1.ActivationChallenge, error)
}

// verificationObserver records verification latency and rejections.
type verificationObserver interface {
	Verification(variant, result string, d time.Duration)
	Rejection(stage, reason string)
}

// InstrumentedVerifier measures every validation and counts every rejection
// by the failed check, so the metrics show why nodes are refused before any
// handler runs.
type InstrumentedVerifier struct {
	next evidenceVerifier
	obs  verificationObserver
	log  *slog.Logger
}

// Instrument wraps next; refusals are also logged to log, one audit line
// each with the failed check (expected vs. actual).
func Instrument(next evidenceVerifier, obs verificationObserver, log *slog.Logger) *InstrumentedVerifier {
	return &InstrumentedVerifier{next: next, obs: obs, log: log}
}

// Validate implements the attested TLS verifier.
func (v *InstrumentedVerifier) Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error) {
	start := time.Now()
	claims, err := v.next.Validate(ctx, ev, userData)
	variant := boundedVariant(ev.GetVariant())
	if err != nil {
		reason := RejectionReason(err)
		v.obs.Verification(variant, "refused", time.Since(start))
		v.obs.Rejection("attestation", reason)
		// The error names the check with what the policy wants and what
		// the evidence shows; it holds no secret.
		v.log.WarnContext(ctx, "attestation refused", "audit", true, "decision", "refused", "stage", "attestation",
			"variant", variant, "reason", reason, "error", err.Error())
		return nil, err
	}
	v.obs.Verification(variant, "accepted", time.Since(start))
	return claims, nil
}

// Challenge implements the attested TLS verifier.
func (v *InstrumentedVerifier) Challenge(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestationv1.ActivationChallenge, error) {
	ch, err := v.next.Challenge(ctx, ev, userData)
	if err != nil {
		reason := RejectionReason(err)
		v.obs.Rejection("attestation", reason)
		v.log.WarnContext(ctx, "attestation refused", "audit", true, "decision", "refused", "stage", "activation",
			"variant", boundedVariant(ev.GetVariant()), "reason", reason, "error", err.Error())
	}
	return ch, err
}

// RejectionReason is the metric label of a validation error: the failed
// check's name, or the class of error. Never text from the peer.
func RejectionReason(err error) string {
	var ce *attestation.CheckError
	switch {
	case errors.As(err, &ce):
		return ce.Check
	case errors.Is(err, attestation.ErrMalformed):
		return "malformed"
	case errors.Is(err, attestation.ErrWrongVariant):
		return "wrong-variant"
	}
	return "error"
}

// boundedVariant keeps peer-chosen strings out of metric labels.
func boundedVariant(v string) string {
	switch attestation.Variant(v) {
	case attestation.VariantTPM, attestation.VariantSNP, attestation.VariantTDX, attestation.VariantInsecureDev:
		return v
	}
	return "unknown"
}
