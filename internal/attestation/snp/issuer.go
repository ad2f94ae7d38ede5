package snp

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	"github.com/google/go-sev-guest/verify/trust"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// QuoteProvider returns an extended attestation report: the raw report whose
// REPORT_DATA is reportData, followed by the host's certificate table.
// go-sev-guest's client.QuoteProvider implementations (configfs-tsm,
// /dev/sev-guest) and its test fakes satisfy it.
type QuoteProvider interface {
	GetRawQuote(reportData [64]byte) ([]byte, error)
}

var _ QuoteProvider = client.QuoteProvider(nil)

// IssuerOptions are the optional settings of an Issuer. The zero value is
// safe: the evidence carries exactly the certificates the host provided.
type IssuerOptions struct {
	// Getter fetches the VCEK from AMD's KDS (usually through a CertCache)
	// when the host's certificate table lacks it, so that validators need
	// not. Nil leaves a missing VCEK to the validator.
	Getter trust.HTTPSGetter
}

// Issuer produces sev-snp evidence inside an SEV-SNP guest.
type Issuer struct {
	qp     QuoteProvider
	getter trust.HTTPSGetter
}

var _ attestation.Issuer = (*Issuer)(nil)

// NewIssuer returns an Issuer that asks qp for reports.
func NewIssuer(qp QuoteProvider, opts IssuerOptions) (*Issuer, error) {
	if qp == nil {
		return nil, fmt.Errorf("snp: no quote provider: pass one, or use OpenIssuer inside an SEV-SNP guest")
	}
	return &Issuer{qp: qp, getter: opts.Getter}, nil
}

// OpenIssuer opens this guest's SEV-SNP report interface, configfs-tsm if the
// kernel has it and /dev/sev-guest otherwise, and returns an Issuer on it.
func OpenIssuer(opts IssuerOptions) (*Issuer, error) {
	qp, err := client.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("snp: opening the SEV-SNP guest interface (configfs-tsm or /dev/sev-guest): %w", err)
	}
	return NewIssuer(qp, opts)
}

// Variant returns attestation.VariantSNP.
func (i *Issuer) Variant() attestation.Variant { return attestation.VariantSNP }

// Issue returns evidence whose report binds userData (1..64 bytes) in
// REPORT_DATA, zero padded to 64 bytes.
func (i *Issuer) Issue(ctx context.Context, userData []byte) (*attestationv1.Evidence, error) {
	if err := attestation.CheckUserData(userData); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("snp: issuing: %w", err)
	}
	var reportData [abi.ReportDataSize]byte
	copy(reportData[:], userData)
	raw, err := i.qp.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("snp: getting extended report: %w", err)
	}
	if err := checkCertTable(raw); err != nil {
		return nil, fmt.Errorf("snp: extended report from the host: %w", err)
	}
	att, err := abi.ReportCertsToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("snp: parsing extended report: %w", err)
	}
	// A report that does not bind what we asked for would be refused by
	// every validator; say so here, where the cause is.
	if !bytes.Equal(att.GetReport().GetReportData(), reportData[:]) {
		return nil, fmt.Errorf("snp: report from the quote provider has REPORT_DATA %x, want %x", att.GetReport().GetReportData(), reportData)
	}
	if i.getter != nil {
		if err := fetchVCEK(ctx, i.getter, att); err != nil {
			return nil, fmt.Errorf("snp: completing the certificate chain: %w", err)
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(att)
	if err != nil {
		return nil, fmt.Errorf("snp: encoding attestation: %w", err)
	}
	return &attestationv1.Evidence{
		Variant: string(attestation.VariantSNP),
		Report:  &attestationv1.Evidence_SevSnp{SevSnp: b},
	}, nil
}

// checkCertTable bounds the host's certificate table before go-sev-guest
// parses it: the host is untrusted, and an entry whose offset plus length
// overflows 32 bits would pass the library's range check and panic.
func checkCertTable(raw []byte) error {
	if len(raw) <= abi.ReportSize {
		return nil
	}
	table := raw[abi.ReportSize:]
	entries, err := abi.ParseSnpCertTableHeader(table)
	if err != nil {
		return fmt.Errorf("certificate table: %v", err)
	}
	for i, e := range entries {
		if uint64(e.Offset)+uint64(e.Length) > uint64(len(table)) {
			return fmt.Errorf("certificate table entry %d (offset %d, length %d) runs past the %d-byte table", i, e.Offset, e.Length, len(table))
		}
	}
	return nil
}
