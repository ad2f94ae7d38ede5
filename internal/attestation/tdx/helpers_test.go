package tdx_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// testNow is the fixed time of every test: the fake chains are issued
// around it and validators check at it.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

// fixture is a fake Intel chain, the TD body it attests, and a policy that
// matches that body exactly.
type fixture struct {
	chain    *tdxtest.Chain
	body     tdxtest.Body
	pol      *policy.TDX
	userData []byte
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	chain, err := tdxtest.NewChain(tdxtest.Options{Now: fixedNow})
	if err != nil {
		tb.Fatal(err)
	}
	var body tdxtest.Body
	body.MRTD = fill(0xd0)
	for i := range body.RTMRs {
		body.RTMRs[i] = fill(byte(0x10 * (i + 1)))
	}
	body.TDAttributes = [8]byte{0, 0, 0, 0x10} // SEPT_VE_DISABLE, as on real TDs
	body.TEETCBSVN = [16]byte{3, 4}
	pol := &policy.TDX{
		MRTD:             policy.Value{Want: bytes.Clone(body.MRTD[:]), Mode: policy.Enforce},
		RTMRs:            map[int]policy.Value{},
		MinimumTEETCBSVN: []byte{3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	}
	for i := range body.RTMRs {
		pol.RTMRs[i] = policy.Value{Want: bytes.Clone(body.RTMRs[i][:]), Mode: policy.Enforce}
	}
	return &fixture{chain: chain, body: body, pol: pol, userData: bytes.Repeat([]byte{0x5a}, 32)}
}

// validator trusts only the fixture's fake root.
func (f *fixture) validator(tb testing.TB, opts tdx.ValidatorOptions) *tdx.Validator {
	tb.Helper()
	if opts.TrustedRoots == nil {
		opts.TrustedRoots = f.chain.Pool()
	}
	if opts.Now == nil {
		opts.Now = fixedNow
	}
	v, err := tdx.NewValidator(f.pol, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// issue runs the real Issuer over the fake quote provider for body.
func (f *fixture) issue(tb testing.TB, chain *tdxtest.Chain, body tdxtest.Body, userData []byte) *attestationv1.Evidence {
	tb.Helper()
	iss, err := tdx.NewIssuer(chain.QuoteProvider(body), tdx.IssuerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	ev, err := iss.Issue(context.Background(), userData)
	if err != nil {
		tb.Fatal(err)
	}
	return ev
}

// collateral returns a cache holding fake collateral from chain.
func collateral(tb testing.TB, chain *tdxtest.Chain, opts tdxtest.CollateralOptions) *tdx.CollateralCache {
	tb.Helper()
	tcbInfo, qeIdentity, err := chain.Collateral(opts)
	if err != nil {
		tb.Fatal(err)
	}
	cache := tdx.NewCollateralCache(tdx.CollateralCacheOptions{})
	if err := cache.AddTCBInfo(tcbInfo.Header, tcbInfo.Body); err != nil {
		tb.Fatal(err)
	}
	if err := cache.AddQEIdentity(qeIdentity.Header, qeIdentity.Body); err != nil {
		tb.Fatal(err)
	}
	return cache
}

func tdxEvidence(quote []byte) *attestationv1.Evidence {
	return &attestationv1.Evidence{
		Variant: string(attestation.VariantTDX),
		Report:  &attestationv1.Evidence_TdxQuote{TdxQuote: quote},
	}
}

func fill(b byte) [48]byte {
	var out [48]byte
	for i := range out {
		out[i] = b
	}
	return out
}
