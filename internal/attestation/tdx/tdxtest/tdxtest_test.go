package tdxtest_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
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

// TestFakeChainIsIntelShaped pins what go-tdx-guest demands of a PCK chain,
// so that a change in the fake shows up here rather than as a confusing
// verification failure elsewhere.
func TestFakeChainIsIntelShaped(t *testing.T) {
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := chain.QuoteProvider(tdxtest.Body{}).GetRawQuote([64]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	pck, err := verify.ExtractChainFromQuote(parsed)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cert *x509.Certificate
		cn   string
	}{
		{pck.RootCertificate, "Intel SGX Root CA"},
		{pck.IntermediateCertificate, "Intel SGX PCK Platform CA"},
		{pck.PCKCertificate, "Intel SGX PCK Certificate"},
	} {
		if c.cert.Subject.CommonName != c.cn {
			t.Errorf("certificate CN = %q, want %q", c.cert.Subject.CommonName, c.cn)
		}
		if c.cert.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("%s: signature algorithm %v, want ECDSA-SHA256", c.cn, c.cert.SignatureAlgorithm)
		}
	}
	if !pck.RootCertificate.Equal(chain.Root()) {
		t.Error("quote's root is not Chain.Root")
	}
	if n := len(pck.PCKCertificate.Extensions); n != 6 {
		t.Errorf("PCK leaf has %d extensions, want 6", n)
	}
	exts, err := pcs.PckCertificateExtensions(pck.PCKCertificate)
	if err != nil {
		t.Fatalf("PCK leaf SGX extension: %v", err)
	}
	if exts.FMSPC != "50806f000000" {
		t.Errorf("FMSPC = %q, want the sample platform's 50806f000000", exts.FMSPC)
	}
}
