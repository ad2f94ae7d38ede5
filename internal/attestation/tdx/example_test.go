package tdx_test

import (
	"context"
	"fmt"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
)

// Example issues evidence through a FAKE quote provider and validates it
// against the fake chain's root. In production the issuer comes from
// OpenIssuer inside a TD and the validator trusts Intel's root (the zero
// ValidatorOptions).
func Example() {
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		panic(err)
	}
	body := tdxtest.Body{MRTD: [48]byte{0x42}}
	issuer, err := tdx.NewIssuer(chain.QuoteProvider(body), tdx.IssuerOptions{})
	if err != nil {
		panic(err)
	}
	userData := []byte("channel binding")
	ev, err := issuer.Issue(context.Background(), userData)
	if err != nil {
		panic(err)
	}

	pol := &policy.TDX{MRTD: policy.Value{Want: body.MRTD[:], Mode: policy.Enforce}}
	validator, err := tdx.NewValidator(pol, tdx.ValidatorOptions{TrustedRoots: chain.Pool()})
	if err != nil {
		panic(err)
	}
	claims, err := validator.Validate(context.Background(), ev, userData)
	if err != nil {
		fmt.Println("rejected:", err)
		return
	}
	fmt.Printf("%s mrtd %x…\n", claims.Variant, claims.Measurements["mrtd"][:2])

	_, err = validator.Validate(context.Background(), ev, []byte("another session"))
	fmt.Println(err != nil)
	// Output:
	// tdx mrtd 4200…
	// true
}
