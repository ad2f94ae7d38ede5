package snp

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// testNow is the clock of every test: fake certificates are minted relative
// to it, so the tests do not age.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// CPUID_1_EAX of a Milan B1 and a Genoa B1 processor.
const (
	milanFMS = 0x00a00f11
	genoaFMS = 0x00a10f11
)

// goodTCB is the TCB of the fake platform; testPolicy's minimum is just
// reached, so lowering any component fails the tcb check.
var goodTCB = kds.TCBParts{BlSpl: 3, TeeSpl: 1, SnpSpl: 8, UcodeSpl: 115}

var (
	testMeasurement = bytes.Repeat([]byte{0x4f}, abi.MeasurementSize)
	testHostData    = bytes.Repeat([]byte{0x11}, abi.HostDataSize)
	testUserData    = []byte("cloister-atls-v1 binding: 32 bytes")
)

func testHWID() [abi.ChipIDSize]byte {
	var id [abi.ChipIDSize]byte
	for i := range id {
		id[i] = byte(0xc0 + i)
	}
	return id
}

func testPolicy() *policy.SNP {
	return &policy.SNP{
		Measurement: policy.Value{Want: bytes.Clone(testMeasurement), Mode: policy.Enforce},
		MinimumTCB:  policy.SNPTCB{Bootloader: goodTCB.BlSpl, TEE: goodTCB.TeeSpl, SNP: goodTCB.SnpSpl, Microcode: goodTCB.UcodeSpl},
		Products:    []string{"Milan", "Genoa"},
	}
}

// fakeAMDOptions configure a fake AMD key hierarchy from go-sev-guest's
// test signer.
type fakeAMDOptions struct {
	productName string // "Milan-B1" unless set
	vcekTCB     *kds.TCBParts
	vcekCreated time.Time
	// rogue uses fresh ARK and ASK keys instead of go-sev-guest's fixed
	// test keys: a chain that looks like AMD's but is not trusted.
	rogue bool
}

// fakeAMD is a fake AMD root, ASK and VCEK (go-sev-guest AmdSignerBuilder)
// plus the trusted-roots map that accepts it.
type fakeAMD struct {
	signer  *sevtest.AmdSigner
	roots   map[string][]*trust.AMDRootCerts
	line    string
	fms     uint32
	product *spb.SevProduct
}

func newFakeAMD(tb testing.TB, o fakeAMDOptions) *fakeAMD {
	tb.Helper()
	if o.productName == "" {
		o.productName = "Milan-B1"
	}
	tcb := goodTCB
	if o.vcekTCB != nil {
		tcb = *o.vcekTCB
	}
	if o.vcekCreated.IsZero() {
		o.vcekCreated = testNow.Add(-24 * time.Hour)
	}
	product, err := kds.ParseProductName(o.productName, abi.VcekReportSigner)
	if err != nil {
		tb.Fatalf("ParseProductName(%q): %v", o.productName, err)
	}
	composed, err := kds.ComposeTCBParts(tcb)
	if err != nil {
		tb.Fatalf("ComposeTCBParts: %v", err)
	}
	hwid := testHWID()
	keys := sevtest.DefaultAmdKeys()
	if o.rogue {
		keys.Ark = rsaKey(tb)
		keys.Ask = rsaKey(tb)
	}
	created := testNow.Add(-365 * 24 * time.Hour)
	b := &sevtest.AmdSignerBuilder{
		Keys:             keys,
		ProductName:      o.productName,
		ArkCreationTime:  created,
		AskCreationTime:  created,
		AsvkCreationTime: created,
		VcekCreationTime: o.vcekCreated,
		VlekCreationTime: created,
		CSPID:            "cloister-test",
		HWID:             hwid,
		TCB:              composed,
		VcekCustom: sevtest.CertOverride{
			Extensions: sevtest.CustomExtensions(tcb, hwid[:], "", o.productName),
		},
		VlekCustom: sevtest.CertOverride{
			Extensions: sevtest.CustomExtensions(tcb, nil, "cloister-test", o.productName),
		},
	}
	signer, err := b.TestOnlyCertChain()
	if err != nil {
		tb.Fatalf("fake AMD signer: %v", err)
	}
	signer.Product = product
	line := kds.ProductLine(product)
	fms := uint32(milanFMS)
	if line == "Genoa" {
		fms = genoaFMS
	}
	return &fakeAMD{
		signer: signer,
		roots: map[string][]*trust.AMDRootCerts{line: {{
			ProductLine:  line,
			ProductCerts: &trust.ProductCerts{Ark: signer.Ark, Ask: signer.Ask, Asvk: signer.Asvk},
		}}},
		line:    line,
		fms:     fms,
		product: product,
	}
}

func rsaKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("rsa.GenerateKey: %v", err)
	}
	return k
}

// report is the unsigned report a healthy guest on a's platform produces for
// reportData. go-sev-guest's CreateRawReport sets the debug policy bit and
// no TCB, so every field that matters is set here.
func (a *fakeAMD) report(tb testing.TB, reportData [abi.ReportDataSize]byte) *spb.Report {
	tb.Helper()
	raw := sevtest.CreateRawReport(&sevtest.TestReportOptions{
		ReportData: reportData[:],
		SignerInfo: abi.SignerInfo{SigningKey: abi.VcekReportSigner},
		FMS:        a.fms,
		Version:    3,
	})
	r, err := abi.ReportToProto(raw[:abi.ReportSize])
	if err != nil {
		tb.Fatalf("ReportToProto: %v", err)
	}
	tcb, err := kds.ComposeTCBParts(goodTCB)
	if err != nil {
		tb.Fatalf("ComposeTCBParts: %v", err)
	}
	r.Policy = abi.SnpPolicyToBytes(abi.SnpPolicy{ABIMajor: 1, ABIMinor: 55, SMT: true})
	r.Vmpl = 0
	r.Measurement = bytes.Clone(testMeasurement)
	r.HostData = bytes.Clone(testHostData)
	hwid := testHWID()
	r.ChipId = hwid[:]
	r.CurrentTcb, r.ReportedTcb, r.CommittedTcb, r.LaunchTcb = uint64(tcb), uint64(tcb), uint64(tcb), uint64(tcb)
	return r
}

// device returns go-sev-guest's fake configfs-tsm quote provider (over its
// fake sev-guest device) that answers reportData with r, signed by a's VCEK,
// and a's certificate table.
func (a *fakeAMD) device(tb testing.TB, reportData [abi.ReportDataSize]byte, r *spb.Report) *sevtest.QuoteProvider {
	tb.Helper()
	raw, err := abi.ReportToAbiBytes(r)
	if err != nil {
		tb.Fatalf("ReportToAbiBytes: %v", err)
	}
	var resp labi.SnpReportRespABI
	copy(resp.Data[:], raw)
	certs, err := a.signer.CertTableBytes()
	if err != nil {
		tb.Fatalf("CertTableBytes: %v", err)
	}
	return &sevtest.QuoteProvider{Device: &sevtest.Device{
		ReportDataRsp: map[string]any{hex.EncodeToString(reportData[:]): &sevtest.GetReportResponse{Resp: resp}},
		Certs:         certs,
		Signer:        a.signer,
		SevProduct:    a.product,
	}}
}

// issue runs the Issuer on a fake device whose report for userData is
// changed by mutate (nil: a healthy report).
func (a *fakeAMD) issue(tb testing.TB, userData []byte, mutate func(*spb.Report)) *attestationv1.Evidence {
	tb.Helper()
	rd := pad(userData)
	r := a.report(tb, rd)
	if mutate != nil {
		mutate(r)
	}
	iss, err := NewIssuer(a.device(tb, rd, r), IssuerOptions{})
	if err != nil {
		tb.Fatalf("NewIssuer: %v", err)
	}
	ev, err := iss.Issue(tb.Context(), userData)
	if err != nil {
		tb.Fatalf("Issue: %v", err)
	}
	return ev
}

func (a *fakeAMD) validator(tb testing.TB, pol *policy.SNP, opts ValidatorOptions) *Validator {
	tb.Helper()
	if opts.TrustedRoots == nil {
		opts.TrustedRoots = a.roots
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return testNow }
	}
	v, err := NewValidator(pol, opts)
	if err != nil {
		tb.Fatalf("NewValidator: %v", err)
	}
	return v
}

func pad(userData []byte) [abi.ReportDataSize]byte {
	var rd [abi.ReportDataSize]byte
	copy(rd[:], userData)
	return rd
}

// editAttestation decodes the evidence's attestation, lets edit change it,
// and encodes it again: the tool of an attacker who holds the bytes.
func editAttestation(tb testing.TB, ev *attestationv1.Evidence, edit func(*spb.Attestation)) *attestationv1.Evidence {
	tb.Helper()
	att := &spb.Attestation{}
	if err := proto.Unmarshal(ev.GetSevSnp(), att); err != nil {
		tb.Fatalf("decoding attestation: %v", err)
	}
	edit(att)
	b, err := proto.Marshal(att)
	if err != nil {
		tb.Fatalf("encoding attestation: %v", err)
	}
	return snpEvidence(b)
}

func snpEvidence(b []byte) *attestationv1.Evidence {
	return &attestationv1.Evidence{Variant: "sev-snp", Report: &attestationv1.Evidence_SevSnp{SevSnp: b}}
}
