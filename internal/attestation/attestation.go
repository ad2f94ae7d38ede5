package attestation

import (
	"context"
	"errors"
	"fmt"

	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// Variant names an attestation platform. It is the key of Validators and the
// value of Evidence.Variant.
type Variant string

// The variants Cloister knows.
const (
	VariantTPM Variant = "tpm"
	VariantSNP Variant = "sev-snp"
	VariantTDX Variant = "tdx"
	// VariantInsecureDev proves nothing. It is for local development only; the
	// default policy refuses it.
	VariantInsecureDev Variant = "insecure-dev"
)

// MaxUserData is the largest userData any variant binds: the size of SNP
// REPORT_DATA and TDX REPORTDATA.
const MaxUserData = 64

// ErrWrongVariant is wrapped by Validate when the evidence belongs to another
// variant than the validator's.
var ErrWrongVariant = errors.New("wrong attestation variant")

// ErrMalformed is wrapped by Validate when the evidence cannot be decoded at
// all (truncated, garbage, oversized, missing fields). Callers map it to
// InvalidArgument; every other validation error is a rejection.
var ErrMalformed = errors.New("malformed evidence")

// Issuer produces evidence on an attesting node.
type Issuer interface {
	// Variant is the platform this issuer attests with.
	Variant() Variant
	// Issue returns evidence whose hardware report binds userData
	// (1..MaxUserData bytes; more is an error, never truncated).
	Issue(ctx context.Context, userData []byte) (*attestationv1.Evidence, error)
}

// Validator checks evidence on the verifying side.
type Validator interface {
	// Variant is the platform this validator accepts.
	Variant() Variant
	// Validate returns Claims only when every check has passed, including
	// that the report binds exactly userData. Errors wrap ErrWrongVariant for
	// evidence of another variant, ErrMalformed for undecodable evidence, and
	// otherwise are rejections, a *CheckError where a check failed.
	Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*Claims, error)
}

// Challenger is implemented by validators that trust a key only after a
// round trip with the issuer (TPM credential activation against a certified
// EK). A verifier calls Challenge before Validate; when it returns a non-nil
// challenge, the issuer's answer goes into the evidence before Validate.
// Validate alone still enforces the answer, so skipping Challenge fails closed.
type Challenger interface {
	Challenge(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestationv1.ActivationChallenge, error)
}

// Responder is implemented by issuers that can answer a Challenger.
type Responder interface {
	// Respond returns the secret the hardware recovered from the challenge.
	Respond(ctx context.Context, ch *attestationv1.ActivationChallenge) ([]byte, error)
}

// Claims is what verified evidence says about the node. Nothing in it is set
// unless Validate checked it.
type Claims struct {
	// Variant is the platform that produced the evidence.
	Variant Variant
	// Measurements holds every verified measurement by name, e.g. "pcr[4]",
	// "measurement", "mrtd", "rtmr[2]". The cluster-ID latch is among them
	// ("pcr[15]" for tpm, "rtmr[3]" for tdx).
	Measurements map[string][]byte
	// HardwareID identifies the attesting key or chip: the SHA-256 of the AK
	// public area (tpm), the chip ID (sev-snp), or the SHA-256 of the quote's
	// attestation key (tdx).
	HardwareID []byte
	// Warnings lists policy values in "warn" mode that did not match.
	Warnings []string
}

// Validators is the registry of validators by variant, built by main.
type Validators map[Variant]Validator

// NewValidators builds a registry and refuses two validators for one variant.
func NewValidators(vs ...Validator) (Validators, error) {
	reg := make(Validators, len(vs))
	for _, v := range vs {
		if _, dup := reg[v.Variant()]; dup {
			return nil, fmt.Errorf("attestation: two validators for variant %q", v.Variant())
		}
		reg[v.Variant()] = v
	}
	return reg, nil
}

// Validate dispatches to the validator of the evidence's variant.
func (r Validators) Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*Claims, error) {
	v, err := r.lookup(ev)
	if err != nil {
		return nil, err
	}
	return v.Validate(ctx, ev, userData)
}

// Challenge dispatches to the validator of the evidence's variant, if it is a
// Challenger; otherwise no challenge is needed.
func (r Validators) Challenge(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestationv1.ActivationChallenge, error) {
	v, err := r.lookup(ev)
	if err != nil {
		return nil, err
	}
	c, ok := v.(Challenger)
	if !ok {
		return nil, nil
	}
	return c.Challenge(ctx, ev, userData)
}

func (r Validators) lookup(ev *attestationv1.Evidence) (Validator, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", ErrMalformed)
	}
	v, ok := r[Variant(ev.GetVariant())]
	if !ok {
		return nil, fmt.Errorf("%w: no validator for variant %q (accepted: %v)", ErrWrongVariant, ev.GetVariant(), r.variants())
	}
	return v, nil
}

func (r Validators) variants() []Variant {
	out := make([]Variant, 0, len(r))
	for v := range r {
		out = append(out, v)
	}
	return out
}

// CheckUserData refuses userData that is empty or longer than MaxUserData.
// Issuers call it before asking the hardware for a report.
func CheckUserData(userData []byte) error {
	if len(userData) == 0 || len(userData) > MaxUserData {
		return fmt.Errorf("attestation: userData must be 1..%d bytes, got %d", MaxUserData, len(userData))
	}
	return nil
}

// CheckVariant is the first check of every Validate: the evidence must be of
// the validator's variant and carry that variant's report.
func CheckVariant(want Variant, ev *attestationv1.Evidence) error {
	if ev == nil {
		return fmt.Errorf("%s: %w: no evidence", want, ErrMalformed)
	}
	if got := Variant(ev.GetVariant()); got != want {
		return fmt.Errorf("%s: %w: evidence is %q", want, ErrWrongVariant, got)
	}
	var hasReport bool
	switch want {
	case VariantTPM:
		hasReport = ev.GetTpm() != nil
	case VariantSNP:
		hasReport = ev.GetSevSnp() != nil
	case VariantTDX:
		hasReport = ev.GetTdxQuote() != nil
	case VariantInsecureDev:
		hasReport = ev.GetInsecureDev() != nil
	}
	if !hasReport {
		return fmt.Errorf("%s: %w: evidence carries no %s report", want, ErrWrongVariant, want)
	}
	return nil
}
