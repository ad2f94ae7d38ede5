package tdx

import (
	"fmt"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cloister-dev/cloister/internal/attestation"
)

const (
	// reportDataSize is the size of REPORTDATA in a TD quote body.
	reportDataSize = abi.ReportDataSize
	// maxQuoteSize bounds the quote bytes before parsing. A real quote is
	// about 5 KiB, most of it the PEM PCK chain.
	maxQuoteSize = 32 << 10
	// rtmrCount is the number of runtime measurement registers.
	rtmrCount = 4
	// latchRTMR is the RTMR that holds the cluster-ID latch.
	latchRTMR = 3
)

// padReportData returns userData zero padded to REPORTDATA's size. The
// caller has checked len(userData) <= reportDataSize.
func padReportData(userData []byte) [reportDataSize]byte {
	var rd [reportDataSize]byte
	copy(rd[:], userData)
	return rd
}

// parseQuote decodes untrusted quote bytes into a QuoteV4, after checking
// their size. go-tdx-guest trusts some inner length fields while slicing;
// a panic on hostile bytes becomes ErrMalformed here instead of taking the
// process down.
func parseQuote(raw []byte) (quote *pb.QuoteV4, err error) {
	if len(raw) == 0 || len(raw) > maxQuoteSize {
		return nil, fmt.Errorf("%w: quote is %d bytes, want 1..%d", attestation.ErrMalformed, len(raw), maxQuoteSize)
	}
	defer func() {
		if r := recover(); r != nil {
			quote, err = nil, fmt.Errorf("%w: decoding quote: %v", attestation.ErrMalformed, r)
		}
	}()
	parsed, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: decoding quote: %v", attestation.ErrMalformed, err)
	}
	q, ok := parsed.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("%w: quote is %T, want a version 4 quote", attestation.ErrMalformed, parsed)
	}
	if q.GetHeader().GetTeeType() != abi.TeeTDX {
		return nil, fmt.Errorf("%w: quote TEE type is %#x, want TDX (%#x)", attestation.ErrMalformed, q.GetHeader().GetTeeType(), abi.TeeTDX)
	}
	if n := len(q.GetTdQuoteBody().GetRtmrs()); n != rtmrCount {
		return nil, fmt.Errorf("%w: quote has %d RTMRs, want %d", attestation.ErrMalformed, n, rtmrCount)
	}
	return q, nil
}
