package tdx

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/go-tdx-guest/client"

	"github.com/cloister-dev/cloister/internal/attestation"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

var _ attestation.Issuer = (*Issuer)(nil)

// quoteProvider produces a TDX quote whose REPORTDATA is reportData.
// go-tdx-guest's client.QuoteProvider (configfs-tsm) satisfies it.
type quoteProvider interface {
	GetRawQuote(reportData [reportDataSize]byte) ([]uint8, error)
}

// IssuerOptions configures an Issuer. It has no settings yet; the zero value
// is the only value.
type IssuerOptions struct{}

// Issuer produces tdx evidence inside a TD.
type Issuer struct {
	qp quoteProvider
}

// NewIssuer returns an issuer that asks qp for quotes.
func NewIssuer(qp quoteProvider, _ IssuerOptions) (*Issuer, error) {
	if qp == nil {
		return nil, fmt.Errorf("tdx: no quote provider: pass one, or use OpenIssuer inside a TD")
	}
	return &Issuer{qp: qp}, nil
}

// OpenIssuer opens the TD's quote interface: configfs-tsm when the kernel
// offers it, else /dev/tdx_guest. It only opens; quotes are taken by Issue.
func OpenIssuer(opts IssuerOptions) (*Issuer, error) {
	tsm, err := client.GetQuoteProvider()
	if err == nil && tsm.IsSupported() == nil {
		return NewIssuer(tsm, opts)
	}
	dev, err := client.OpenDevice()
	if err != nil {
		return nil, fmt.Errorf("tdx: opening quote interface: neither configfs-tsm nor /dev/tdx_guest is available: %w", err)
	}
	if err := dev.Close(); err != nil {
		return nil, fmt.Errorf("tdx: closing /dev/tdx_guest after probing: %w", err)
	}
	return NewIssuer(deviceProvider{}, opts)
}

// deviceProvider takes quotes through /dev/tdx_guest, opening it per quote
// so that the Issuer holds no file descriptor between quotes.
type deviceProvider struct{}

func (deviceProvider) GetRawQuote(reportData [reportDataSize]byte) ([]uint8, error) {
	dev, err := client.OpenDevice()
	if err != nil {
		return nil, fmt.Errorf("opening /dev/tdx_guest: %w", err)
	}
	quote, qerr := client.GetRawQuote(dev, reportData)
	if cerr := dev.Close(); cerr != nil && qerr == nil {
		return nil, fmt.Errorf("closing /dev/tdx_guest: %w", cerr)
	}
	return quote, qerr
}

// Variant is attestation.VariantTDX.
func (*Issuer) Variant() attestation.Variant { return attestation.VariantTDX }

// Issue returns evidence whose quote has REPORTDATA = userData zero padded to
// 64 bytes. It checks that the provider's quote parses and binds exactly
// that REPORTDATA, so a broken provider fails here rather than at the
// verifier.
func (i *Issuer) Issue(ctx context.Context, userData []byte) (*attestationv1.Evidence, error) {
	if err := attestation.CheckUserData(userData); err != nil {
		return nil, fmt.Errorf("tdx: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tdx: issuing: %w", err)
	}
	reportData := padReportData(userData)
	raw, err := i.qp.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("tdx: getting quote: %w", err)
	}
	quote, err := parseQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("tdx: quote from provider: %w", err)
	}
	if got := quote.GetTdQuoteBody().GetReportData(); !bytes.Equal(got, reportData[:]) {
		return nil, fmt.Errorf("tdx: quote from provider binds REPORTDATA %s, asked for %s", attestation.Hex(got), attestation.Hex(reportData[:]))
	}
	return &attestationv1.Evidence{
		Variant: string(attestation.VariantTDX),
		Report:  &attestationv1.Evidence_TdxQuote{TdxQuote: raw},
	}, nil
}
