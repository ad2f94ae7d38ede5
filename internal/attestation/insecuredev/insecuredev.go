package insecuredev

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// Warning is the warning every insecure-dev Claims carries.
const Warning = "insecure-dev: this evidence proves nothing; never accept it outside local development"

var (
	_ attestation.Issuer    = (*Issuer)(nil)
	_ attestation.Validator = (*Validator)(nil)
)

// Issuer produces insecure-dev evidence. It needs no device and proves
// nothing.
type Issuer struct{}

// NewIssuer returns an insecure-dev issuer.
func NewIssuer() *Issuer { return &Issuer{} }

// Variant returns attestation.VariantInsecureDev.
func (*Issuer) Variant() attestation.Variant { return attestation.VariantInsecureDev }

// Issue returns evidence that echoes userData (1..attestation.MaxUserData
// bytes; anything else is an error).
func (*Issuer) Issue(_ context.Context, userData []byte) (*attestationv1.Evidence, error) {
	if err := attestation.CheckUserData(userData); err != nil {
		return nil, fmt.Errorf("insecure-dev: %w", err)
	}
	return &attestationv1.Evidence{
		Variant: string(attestation.VariantInsecureDev),
		Report: &attestationv1.Evidence_InsecureDev{
			InsecureDev: &attestationv1.InsecureDevReport{UserData: bytes.Clone(userData)},
		},
	}, nil
}

// Validator accepts insecure-dev evidence whose echoed userData is the
// expected one. It proves nothing about the peer.
type Validator struct{}

// NewInsecureValidator returns a validator for evidence that proves nothing.
// It refuses a nil section: only a policy that explicitly allows insecure-dev
// (`insecure-dev: {iUnderstandThisProvesNothing: true}`) enables it.
func NewInsecureValidator(allowed *policy.InsecureDev) (*Validator, error) {
	if !allowed.Allowed() {
		return nil, errors.New("insecure-dev: not allowed by policy: add `insecure-dev: {iUnderstandThisProvesNothing: true}` to the policy document, for local development only")
	}
	return &Validator{}, nil
}

// Variant returns attestation.VariantInsecureDev.
func (*Validator) Variant() attestation.Variant { return attestation.VariantInsecureDev }

// Validate checks, in order:
//  1. variant: the evidence is insecure-dev and carries an insecure-dev report
//     (attestation.ErrWrongVariant otherwise);
//  2. size: the echoed userData is at most attestation.MaxUserData bytes
//     (attestation.ErrMalformed otherwise);
//  3. binding: the echoed userData equals userData (*attestation.CheckError
//     with Check "binding" otherwise).
//
// The Claims it returns have no measurements, no hardware ID and carry
// Warning: they prove nothing.
func (*Validator) Validate(_ context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error) {
	if err := attestation.CheckVariant(attestation.VariantInsecureDev, ev); err != nil {
		return nil, err
	}
	got := ev.GetInsecureDev().GetUserData()
	if len(got) > attestation.MaxUserData {
		return nil, fmt.Errorf("insecure-dev: %w: user_data is %d bytes, limit %d", attestation.ErrMalformed, len(got), attestation.MaxUserData)
	}
	if len(userData) == 0 || !bytes.Equal(got, userData) {
		return nil, &attestation.CheckError{
			Variant: attestation.VariantInsecureDev,
			Check:   "binding",
			Want:    attestation.Hex(userData),
			Got:     attestation.Hex(got),
		}
	}
	return &attestation.Claims{
		Variant:      attestation.VariantInsecureDev,
		Measurements: map[string][]byte{},
		Warnings:     []string{Warning},
	}, nil
}
