package tdx_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
)

func TestIssueFakeProviderBindsPaddedUserData(t *testing.T) {
	f := newFixture(t)
	for _, n := range []int{1, 32, attestation.MaxUserData} {
		userData := bytes.Repeat([]byte{0xab}, n)
		ev := f.issue(t, f.chain, f.body, userData)
		parsed, err := abi.QuoteToProto(ev.GetTdxQuote())
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 64)
		copy(want, userData)
		if got := parsed.(*pb.QuoteV4).GetTdQuoteBody().GetReportData(); !bytes.Equal(got, want) {
			t.Errorf("%d bytes of userData: REPORTDATA = %x, want %x", n, got, want)
		}
	}
}

// brokenProvider is a fake quote provider that misbehaves.
type brokenProvider struct {
	quote []byte
	err   error
}

func (p brokenProvider) GetRawQuote([64]byte) ([]uint8, error) { return p.quote, p.err }

// otherDataProvider is a fake quote provider that ignores the REPORTDATA it
// is asked for and signs another one.
type otherDataProvider struct{ chain *tdxtest.Chain }

func (p otherDataProvider) GetRawQuote([64]byte) ([]uint8, error) {
	return p.chain.Quote(tdxtest.Body{}, [64]byte{0xff})
}

func TestIssueRefuses(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		qp   interface {
			GetRawQuote([64]byte) ([]uint8, error)
		}
		userData []byte
	}{
		{"empty userData", f.chain.QuoteProvider(f.body), nil},
		{"userData over 64 bytes, never truncated", f.chain.QuoteProvider(f.body), make([]byte, 65)},
		{"provider error", brokenProvider{err: errors.New("device busy")}, f.userData},
		{"provider returns garbage", brokenProvider{quote: []byte("not a quote")}, f.userData},
		{"provider returns nothing", brokenProvider{}, f.userData},
		{"provider binds other REPORTDATA", otherDataProvider{f.chain}, f.userData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := tdx.NewIssuer(tt.qp, tdx.IssuerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ev, err := iss.Issue(context.Background(), tt.userData); err == nil || ev != nil {
				t.Errorf("Issue = %v, %v; want an error", ev, err)
			}
		})
	}
}

func TestIssueHonoursCancelledContext(t *testing.T) {
	f := newFixture(t)
	iss, err := tdx.NewIssuer(f.chain.QuoteProvider(f.body), tdx.IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := iss.Issue(ctx, f.userData); !errors.Is(err, context.Canceled) {
		t.Errorf("Issue with cancelled context = %v, want context.Canceled", err)
	}
}

func TestNewIssuerRefusesNilProvider(t *testing.T) {
	if iss, err := tdx.NewIssuer(nil, tdx.IssuerOptions{}); err == nil || iss != nil {
		t.Errorf("NewIssuer(nil) = %v, %v; want an error", iss, err)
	}
}

// TestOpenIssuerOutsideTD checks that OpenIssuer fails cleanly where there is
// no TDX guest interface, which is every CI machine. Inside a TD it must
// succeed.
func TestOpenIssuerOutsideTD(t *testing.T) {
	iss, err := tdx.OpenIssuer(tdx.IssuerOptions{})
	if err == nil {
		t.Skip("running inside a TD: OpenIssuer found a quote interface")
	}
	if iss != nil {
		t.Errorf("OpenIssuer returned an issuer with error %v", err)
	}
}
