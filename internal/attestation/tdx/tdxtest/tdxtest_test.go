package tdxtest_test

import (
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/verify"

	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
)

// TestFakeQuoteVerifiesAgainstFakeRoot checks the fake signer against
// go-tdx-guest's real verifier: trusted with the fake root, untrusted with
// Intel's embedded root or another fake root.
func TestFakeQuoteVerifiesAgainstFakeRoot(t *testing.T) {
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := chain.Quote(tdxtest.Body{MRTD: [48]byte{1}}, [64]byte{7})
	if err != nil {
		t.Fatal(err)
	}
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatalf("fake quote does not parse: %v", err)
	}
	now := &verify.TimeSet{PckCertChain: time.Now()}
	if err := verify.TdxQuote(q, &verify.Options{TrustedRoots: chain.Pool(), Now: now}); err != nil {
		t.Fatalf("fake quote with fake root: %v", err)
	}
	if err := verify.TdxQuote(q, &verify.Options{TrustedRoots: other.Pool(), Now: now}); err == nil {
		t.Error("fake quote verified against another fake root")
	}
}
