package snp

import (
	"bytes"
	"testing"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
)

func TestIssueBindsPaddedUserDataFakeDevice(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	ev := amd.issue(t, testUserData, nil)
	att := &spb.Attestation{}
	if err := proto.Unmarshal(ev.GetSevSnp(), att); err != nil {
		t.Fatal(err)
	}
	if want := pad(testUserData); !bytes.Equal(att.GetReport().GetReportData(), want[:]) {
		t.Errorf("REPORT_DATA %x, want %x", att.GetReport().GetReportData(), want)
	}
	chain := att.GetCertificateChain()
	if !bytes.Equal(chain.GetVcekCert(), amd.signer.Vcek.Raw) || !bytes.Equal(chain.GetAskCert(), amd.signer.Ask.Raw) || !bytes.Equal(chain.GetArkCert(), amd.signer.Ark.Raw) {
		t.Error("evidence does not carry the host's VCEK, ASK and ARK")
	}
}

func TestIssueRefusesBadUserData(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	rd := pad(testUserData)
	iss, err := NewIssuer(amd.device(t, rd, amd.report(t, rd)), IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ud := range [][]byte{nil, make([]byte, attestation.MaxUserData+1)} {
		if ev, err := iss.Issue(t.Context(), ud); err == nil {
			t.Errorf("Issue with %d bytes of userData returned %v, want an error", len(ud), ev)
		}
	}
}

func TestIssueRefusesReportForOtherDataFakeDevice(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	asked := pad(testUserData)
	// The fake device answers the request with a report for other data.
	iss, err := NewIssuer(amd.device(t, asked, amd.report(t, pad([]byte("other")))), IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := iss.Issue(t.Context(), testUserData); err == nil {
		t.Fatalf("Issue returned evidence %v for a report that binds other data", ev)
	}
}

// stripVCEK is a quote provider whose host supplies no VCEK, as on clouds
// that leave the certificate table empty.
type stripVCEK struct{ inner QuoteProvider }

func (s stripVCEK) GetRawQuote(rd [64]byte) ([]byte, error) {
	raw, err := s.inner.GetRawQuote(rd)
	if err != nil {
		return nil, err
	}
	att, err := abi.ReportCertsToProto(raw)
	if err != nil {
		return nil, err
	}
	att.CertificateChain.VcekCert = nil
	return append(raw[:abi.ReportSize:abi.ReportSize], abi.CertsFromProto(att.CertificateChain).Marshal()...), nil
}

func TestIssuerFetchesMissingVCEKFromFakeKDS(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	rd := pad(testUserData)
	qp := stripVCEK{amd.device(t, rd, amd.report(t, rd))}
	kdsFake := fakeKDS(t, amd)
	for _, tc := range []struct {
		name     string
		opts     IssuerOptions
		wantVCEK bool
	}{
		{"no getter leaves the VCEK out", IssuerOptions{}, false},
		{"getter fills the VCEK in", IssuerOptions{Getter: kdsFake}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss, err := NewIssuer(qp, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := iss.Issue(t.Context(), testUserData)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			att := &spb.Attestation{}
			if err := proto.Unmarshal(ev.GetSevSnp(), att); err != nil {
				t.Fatal(err)
			}
			if got := bytes.Equal(att.GetCertificateChain().GetVcekCert(), amd.signer.Vcek.Raw); got != tc.wantVCEK {
				t.Fatalf("evidence carries the VCEK: %v, want %v", got, tc.wantVCEK)
			}
			_, err = amd.validator(t, testPolicy(), ValidatorOptions{Getter: offlineCache(t)}).Validate(t.Context(), ev, testUserData)
			if (err == nil) != tc.wantVCEK {
				t.Errorf("Validate with an empty offline cache: %v; want success iff the evidence has its VCEK", err)
			}
		})
	}
}

func TestNewIssuerNeedsQuoteProvider(t *testing.T) {
	if _, err := NewIssuer(nil, IssuerOptions{}); err == nil {
		t.Fatal("NewIssuer accepted a nil quote provider")
	}
}

// fakeRawQuote is a fake quote provider that returns fixed bytes, as a
// malicious host could make the driver return.
type fakeRawQuote []byte

func (f fakeRawQuote) GetRawQuote([64]byte) ([]byte, error) { return f, nil }

func TestIssueRefusesHostileCertTable(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	rd := pad(testUserData)
	raw, err := amd.device(t, rd, amd.report(t, rd)).GetRawQuote(rd)
	if err != nil {
		t.Fatal(err)
	}
	// One entry whose offset+length wraps around 2^32, then the terminator.
	table := make([]byte, 2*abi.CertTableEntrySize)
	entry := abi.CertTableHeaderEntry{Offset: 0xfffffff0, Length: 0x20}
	copy(entry.GUID[:], bytes.Repeat([]byte{0x42}, 16))
	if err := entry.Write(table); err != nil {
		t.Fatal(err)
	}
	hostile := append(bytes.Clone(raw[:abi.ReportSize]), table...)
	iss, err := NewIssuer(fakeRawQuote(hostile), IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := iss.Issue(t.Context(), testUserData); err == nil {
		t.Fatalf("Issue accepted a hostile certificate table: %v", ev)
	}
}
