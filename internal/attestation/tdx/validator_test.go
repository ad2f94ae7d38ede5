package tdx_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// Offsets into a TDX v4 quote in wire form.
const (
	offsetMRTD      = 0x30 + 0x88 // header, then TD body offset of MRTD
	offsetSignature = 0x27c       // signed data starts with the quote signature
)

func TestRoundTripFakeChain(t *testing.T) {
	f := newFixture(t)
	ev := f.issue(t, f.chain, f.body, f.userData)
	if got := ev.GetVariant(); got != string(attestation.VariantTDX) {
		t.Fatalf("evidence variant = %q, want %q", got, attestation.VariantTDX)
	}
	claims, err := f.validator(t, tdx.ValidatorOptions{}).Validate(context.Background(), ev, f.userData)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if claims.Variant != attestation.VariantTDX {
		t.Errorf("claims variant = %q", claims.Variant)
	}
	want := map[string][]byte{"mrtd": f.body.MRTD[:]}
	for i := range f.body.RTMRs {
		want[[]string{"rtmr[0]", "rtmr[1]", "rtmr[2]", "rtmr[3]"}[i]] = f.body.RTMRs[i][:]
	}
	if len(claims.Measurements) != len(want) {
		t.Errorf("claims have %d measurements, want %d", len(claims.Measurements), len(want))
	}
	for name, w := range want {
		if !bytes.Equal(claims.Measurements[name], w) {
			t.Errorf("measurement %s = %x, want %x", name, claims.Measurements[name], w)
		}
	}
	quote, err := abi.QuoteToProto(ev.GetTdxQuote())
	if err != nil {
		t.Fatal(err)
	}
	hwid := sha256.Sum256(quote.(*pb.QuoteV4).GetSignedData().GetEcdsaAttestationKey())
	if !bytes.Equal(claims.HardwareID, hwid[:]) {
		t.Errorf("HardwareID = %x, want SHA-256 of the attestation key %x", claims.HardwareID, hwid)
	}
	if len(claims.Warnings) != 0 {
		t.Errorf("unexpected warnings: %v", claims.Warnings)
	}
}

func TestRoundTripFakeChainWithUpToDateCollateral(t *testing.T) {
	f := newFixture(t)
	f.pol.MinimumTEETCBSVN = nil
	v := f.validator(t, tdx.ValidatorOptions{Collateral: collateral(t, f.chain, tdxtest.CollateralOptions{})})
	for _, svn := range [][16]byte{{3, 4}, {3, 0, 5}} { // with and without a TDX module identity
		body := f.body
		body.TEETCBSVN = svn
		if _, err := v.Validate(context.Background(), f.issue(t, f.chain, body, f.userData), f.userData); err != nil {
			t.Errorf("TEE_TCB_SVN %x: Validate: %v", svn, err)
		}
	}
}

// TestValidateRealIntelQuote runs the genuine quote shipped with
// go-tdx-guest (from a Sapphire Rapids machine) through a validator with
// default options, i.e. Intel's real root. Its REPORTDATA is not ours, so the
// test binds to whatever the quote holds.
func TestValidateRealIntelQuote(t *testing.T) {
	parsed, err := abi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	body := parsed.(*pb.QuoteV4).GetTdQuoteBody()
	pol := &policy.TDX{MRTD: policy.Value{Want: body.GetMrTd(), Mode: policy.Enforce}, RTMRs: map[int]policy.Value{}}
	for i, r := range body.GetRtmrs() {
		pol.RTMRs[i] = policy.Value{Want: r, Mode: policy.Enforce}
	}
	// The sample's PCK certificate is valid 2022-09-20 .. 2029-09-20.
	v, err := tdx.NewValidator(pol, tdx.ValidatorOptions{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Validate(context.Background(), tdxEvidence(testdata.RawQuote), body.GetReportData())
	if err != nil {
		t.Fatalf("genuine Intel quote refused: %v", err)
	}
	if !bytes.Equal(claims.Measurements["mrtd"], body.GetMrTd()) {
		t.Errorf("mrtd claim = %x, want %x", claims.Measurements["mrtd"], body.GetMrTd())
	}

	// The same validator must refuse a fake chain: only Intel's root is trusted.
	f := newFixture(t)
	_, err = v.Validate(context.Background(), f.issue(t, f.chain, f.body, f.userData), f.userData)
	assertCheck(t, err, "pck-chain")
}

func TestValidateRejects(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other, err := tdxtest.NewChain(tdxtest.Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := tdxtest.NewChain(tdxtest.Options{Now: fixedNow, PCKNotAfter: testNow.Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	valid := f.issue(t, f.chain, f.body, f.userData).GetTdxQuote()
	quoteWith := func(mutate func(*pb.QuoteV4)) []byte {
		t.Helper()
		parsed, err := abi.QuoteToProto(valid)
		if err != nil {
			t.Fatal(err)
		}
		q := parsed.(*pb.QuoteV4)
		mutate(q)
		raw, err := f.chain.Sign(q)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	flip := func(offset int) []byte {
		b := bytes.Clone(valid)
		b[offset] ^= 0x01
		return b
	}
	bodyWith := func(mutate func(*tdxtest.Body)) tdxtest.Body {
		b := f.body
		mutate(&b)
		return b
	}
	tpmEvidence := &attestationv1.Evidence{Variant: string(attestation.VariantTPM), Report: &attestationv1.Evidence_Tpm{Tpm: []byte{1, 2, 3}}}

	tests := []struct {
		name      string
		ev        *attestationv1.Evidence
		userData  []byte // nil means f.userData
		opts      tdx.ValidatorOptions
		wantCheck string
		wantErr   error
	}{
		{
			name:      "wrong MRTD",
			ev:        f.issue(t, f.chain, bodyWith(func(b *tdxtest.Body) { b.MRTD[0] ^= 1 }), f.userData),
			wantCheck: "mrtd",
		},
		{
			name:      "wrong RTMR",
			ev:        f.issue(t, f.chain, bodyWith(func(b *tdxtest.Body) { b.RTMRs[2][47] ^= 1 }), f.userData),
			wantCheck: "rtmr[2]",
		},
		{
			name:      "cluster-ID latch already extended",
			ev:        f.issue(t, f.chain, bodyWith(func(b *tdxtest.Body) { b.RTMRs[3] = fill(0xee) }), f.userData),
			wantCheck: "rtmr[3]",
		},
		{
			name:      "evidence for other userData replayed",
			ev:        f.issue(t, f.chain, f.body, []byte("another TLS session's binding")),
			wantCheck: "binding",
		},
		{
			name:      "userData a prefix of the bound data",
			ev:        tdxEvidence(valid),
			userData:  f.userData[:31],
			wantCheck: "binding",
		},
		{
			name: "nonzero REPORTDATA padding",
			ev: func() *attestationv1.Evidence {
				var rd [64]byte
				copy(rd[:], f.userData)
				rd[63] = 1
				raw, err := f.chain.Quote(f.body, rd)
				if err != nil {
					t.Fatal(err)
				}
				return tdxEvidence(raw)
			}(),
			wantCheck: "binding",
		},
		{
			name:      "PCK chain from an untrusted root",
			ev:        f.issue(t, other, f.body, f.userData),
			wantCheck: "pck-chain",
		},
		{
			name:      "expired PCK certificate",
			ev:        f.issue(t, expired, f.body, f.userData),
			wantCheck: "pck-chain",
		},
		{
			name:      "chain checked at a time after it expires",
			ev:        tdxEvidence(valid),
			opts:      tdx.ValidatorOptions{Now: func() time.Time { return testNow.Add(11 * 365 * 24 * time.Hour) }},
			wantCheck: "pck-chain",
		},
		{
			name:      "debug TD attribute",
			ev:        f.issue(t, f.chain, bodyWith(func(b *tdxtest.Body) { b.TDAttributes[0] |= 1 }), f.userData),
			wantCheck: "debug",
		},
		{
			name:      "TEE_TCB_SVN below minimum",
			ev:        f.issue(t, f.chain, bodyWith(func(b *tdxtest.Body) { b.TEETCBSVN[0] = 2 }), f.userData),
			wantCheck: "tcb-svn",
		},
		{
			name:      "tampered quote signature",
			ev:        tdxEvidence(flip(offsetSignature + 5)),
			wantCheck: "signature",
		},
		{
			name:      "MRTD changed after signing",
			ev:        tdxEvidence(flip(offsetMRTD)),
			wantCheck: "signature",
		},
		{
			name: "attestation key certified by another enclave (QE MRSIGNER)",
			ev: tdxEvidence(quoteWith(func(q *pb.QuoteV4) {
				q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport().MrSigner[0] ^= 1
			})),
			wantCheck: "qe-identity",
		},
		{
			name: "attestation key certified by another Intel enclave (ISVPRODID)",
			ev: tdxEvidence(quoteWith(func(q *pb.QuoteV4) {
				q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport().IsvProdId = 1
			})),
			wantCheck: "qe-identity",
		},
		{
			name: "attestation key certified by a debug quoting enclave",
			ev: tdxEvidence(quoteWith(func(q *pb.QuoteV4) {
				q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport().Attributes[0] |= 0x02
			})),
			wantCheck: "qe-identity",
		},
		{
			name: "TDX module not signed by Intel (MRSIGNERSEAM)",
			ev: tdxEvidence(quoteWith(func(q *pb.QuoteV4) {
				q.GetTdQuoteBody().MrSignerSeam[0] = 1
			})),
			wantCheck: "mrsignerseam",
		},
		{
			name: "QE report data does not bind the attestation key",
			ev: tdxEvidence(quoteWith(func(q *pb.QuoteV4) {
				q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport().ReportData[0] ^= 1
			})),
			wantCheck: "signature",
		},
		{
			name: "attestation key of another chain",
			ev: tdxEvidence(quoteWith(func(q *pb.QuoteV4) {
				parsed, err := abi.QuoteToProto(f.issue(t, other, f.body, f.userData).GetTdxQuote())
				if err != nil {
					t.Fatal(err)
				}
				q.GetSignedData().EcdsaAttestationKey = parsed.(*pb.QuoteV4).GetSignedData().GetEcdsaAttestationKey()
			})),
			wantCheck: "signature",
		},
		{name: "truncated bytes", ev: tdxEvidence(valid[:len(valid)/2]), wantErr: attestation.ErrMalformed},
		{
			// go-tdx-guest slices by this field without checking it.
			name: "certification data size field lies",
			ev: tdxEvidence(func() []byte {
				b := bytes.Clone(valid[:0x3fc])
				binary.LittleEndian.PutUint32(b[0x278:], 0x80+6+0x10)
				binary.LittleEndian.PutUint32(b[offsetSignature+0x80+2:], 0x10)
				return b
			}()),
			wantErr: attestation.ErrMalformed,
		},
		{name: "garbage bytes", ev: tdxEvidence(bytes.Repeat([]byte{0x04, 0x00, 0xff}, 2000)), wantErr: attestation.ErrMalformed},
		{name: "oversized quote", ev: tdxEvidence(append(bytes.Clone(valid), make([]byte, 64<<10)...)), wantErr: attestation.ErrMalformed},
		{name: "empty quote", ev: tdxEvidence([]byte{}), wantErr: attestation.ErrMalformed},
		{name: "wrong variant (TPM evidence)", ev: tpmEvidence, wantErr: attestation.ErrWrongVariant},
		{
			name:    "tdx label on a TPM report",
			ev:      &attestationv1.Evidence{Variant: string(attestation.VariantTDX), Report: &attestationv1.Evidence_Tpm{Tpm: []byte{1}}},
			wantErr: attestation.ErrWrongVariant,
		},
		{name: "no evidence", ev: nil, wantErr: attestation.ErrMalformed},
		{
			name:      "TCB status out of date",
			ev:        tdxEvidence(valid),
			opts:      tdx.ValidatorOptions{Collateral: collateral(t, f.chain, tdxtest.CollateralOptions{TCBStatus: "OutOfDate"})},
			wantCheck: "tcb-status",
		},
		{
			name:      "TCB status needs SW hardening",
			ev:        tdxEvidence(valid),
			opts:      tdx.ValidatorOptions{Collateral: collateral(t, f.chain, tdxtest.CollateralOptions{TCBStatus: "SWHardeningNeeded"})},
			wantCheck: "tcb-status",
		},
		{
			name:      "QE TCB status revoked",
			ev:        tdxEvidence(valid),
			opts:      tdx.ValidatorOptions{Collateral: collateral(t, f.chain, tdxtest.CollateralOptions{QETCBStatus: "Revoked"})},
			wantCheck: "tcb-status",
		},
		{
			name:      "stale collateral",
			ev:        tdxEvidence(valid),
			opts:      tdx.ValidatorOptions{Collateral: collateral(t, f.chain, tdxtest.CollateralOptions{NextUpdate: testNow.Add(-time.Hour)})},
			wantCheck: "collateral",
		},
		{
			name:      "collateral signed under an untrusted root",
			ev:        tdxEvidence(valid),
			opts:      tdx.ValidatorOptions{Collateral: collateral(t, other, tdxtest.CollateralOptions{})},
			wantCheck: "collateral",
		},
		{
			name:      "offline collateral cache is empty",
			ev:        tdxEvidence(valid),
			opts:      tdx.ValidatorOptions{Collateral: tdx.NewCollateralCache(tdx.CollateralCacheOptions{})},
			wantCheck: "collateral",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			userData := tt.userData
			if userData == nil {
				userData = f.userData
			}
			claims, err := f.validator(t, tt.opts).Validate(ctx, tt.ev, userData)
			t.Logf("error: %v", err)
			if claims != nil {
				t.Errorf("claims returned with error %v", err)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			assertCheck(t, err, tt.wantCheck)
		})
	}
}

func TestValidateWarnModeRTMRMismatchPassesWithWarning(t *testing.T) {
	f := newFixture(t)
	f.pol.RTMRs[1] = policy.Value{Want: bytes.Repeat([]byte{0x99}, 48), Mode: policy.Warn}
	v := f.validator(t, tdx.ValidatorOptions{})
	claims, err := v.Validate(context.Background(), f.issue(t, f.chain, f.body, f.userData), f.userData)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if len(claims.Warnings) != 1 {
		t.Fatalf("warnings = %q, want one for rtmr[1]", claims.Warnings)
	}
	if !bytes.Contains([]byte(claims.Warnings[0]), []byte("rtmr[1]")) {
		t.Errorf("warning %q does not name rtmr[1]", claims.Warnings[0])
	}
	if !bytes.Equal(claims.Measurements["rtmr[1]"], f.body.RTMRs[1][:]) {
		t.Errorf("rtmr[1] claim = %x, want the quote's value", claims.Measurements["rtmr[1]"])
	}
}

func TestValidateUnlistedRTMRsAreClaimedButNotChecked(t *testing.T) {
	f := newFixture(t)
	f.pol.RTMRs = map[int]policy.Value{0: f.pol.RTMRs[0]}
	body := f.body
	body.RTMRs[3] = fill(0x77)
	claims, err := f.validator(t, tdx.ValidatorOptions{}).Validate(context.Background(), f.issue(t, f.chain, body, f.userData), f.userData)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if !bytes.Equal(claims.Measurements["rtmr[3]"], body.RTMRs[3][:]) {
		t.Errorf("rtmr[3] (latch) claim = %x, want %x", claims.Measurements["rtmr[3]"], body.RTMRs[3])
	}
}

func TestNewValidatorRefusesBadOptions(t *testing.T) {
	good := newFixture(t).pol
	tests := []struct {
		name string
		pol  func() *policy.TDX
	}{
		{"no policy", func() *policy.TDX { return nil }},
		{"no MRTD", func() *policy.TDX { p := *good; p.MRTD = policy.Value{}; return &p }},
		{"RTMR index 4", func() *policy.TDX {
			p := *good
			p.RTMRs = map[int]policy.Value{4: {Want: make([]byte, 48)}}
			return &p
		}},
		{"short RTMR", func() *policy.TDX {
			p := *good
			p.RTMRs = map[int]policy.Value{0: {Want: make([]byte, 32)}}
			return &p
		}},
		{"short minimum TEE_TCB_SVN", func() *policy.TDX { p := *good; p.MinimumTEETCBSVN = []byte{1}; return &p }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v, err := tdx.NewValidator(tt.pol(), tdx.ValidatorOptions{}); err == nil || v != nil {
				t.Errorf("NewValidator = %v, %v; want an error", v, err)
			}
		})
	}
}

func assertCheck(t *testing.T, err error, want string) {
	t.Helper()
	var ce *attestation.CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v, want a CheckError for %q", err, want)
	}
	if ce.Check != want {
		t.Fatalf("failed check = %q, want %q (error: %v)", ce.Check, want, err)
	}
	if ce.Variant != attestation.VariantTDX {
		t.Errorf("CheckError variant = %q", ce.Variant)
	}
	if errors.Is(err, attestation.ErrMalformed) {
		t.Errorf("rejection %v also wraps ErrMalformed", err)
	}
}

func FuzzValidate(f *testing.F) {
	fx := newFixture(f)
	valid := fx.issue(f, fx.chain, fx.body, fx.userData).GetTdxQuote()
	seeds := [][]byte{valid, testdata.RawQuote}
	for _, cut := range []int{0x30, 0x27c, 0x27c + 0x80, len(valid) - 1} {
		seeds = append(seeds, valid[:cut])
	}
	// TD_ATTRIBUTES and host-set values the policy decides on.
	for _, mutate := range []func(*tdxtest.Body){
		func(b *tdxtest.Body) { b.TDAttributes[0] |= 0x10 },  // TUD group, not DEBUG
		func(b *tdxtest.Body) { b.TDAttributes[3] |= 0x20 },  // MIGRATABLE
		func(b *tdxtest.Body) { b.TDAttributes[2] |= 0x01 },  // reserved
		func(b *tdxtest.Body) { b.MRConfigID[0] = 1 },        // host-set, not pinned
		func(b *tdxtest.Body) { b.XFAM = make([]byte, 8) },   // x87/SSE missing
		func(b *tdxtest.Body) { b.SEAMAttributes[0] = 0x80 }, // debug module
	} {
		b := fx.body
		mutate(&b)
		seeds = append(seeds, fx.issue(f, fx.chain, b, fx.userData).GetTdxQuote())
	}
	for _, off := range []int{0x27c + 0x80 + 2, 0x27c + 0x80 + 6 + 0x180 + 0x40, len(valid) - 100} {
		b := slices.Clone(valid)
		b[off] ^= 0xff
		seeds = append(seeds, b)
	}
	if len(seeds) == 0 {
		f.Fatal("no seeds")
	}
	for _, s := range seeds {
		f.Add(s)
	}
	v := fx.validator(f, tdx.ValidatorOptions{})
	f.Fuzz(func(t *testing.T, quote []byte) {
		claims, err := v.Validate(context.Background(), tdxEvidence(quote), fx.userData)
		if err != nil && claims != nil {
			t.Fatalf("claims returned with error %v", err)
		}
		if err == nil && claims == nil {
			t.Fatal("no error and no claims")
		}
	})
}

func BenchmarkValidate(b *testing.B) {
	fx := newFixture(b)
	ev := fx.issue(b, fx.chain, fx.body, fx.userData)
	for _, bc := range []struct {
		name string
		opts tdx.ValidatorOptions
	}{
		{"chain+policy", tdx.ValidatorOptions{}},
		{"with-collateral", tdx.ValidatorOptions{Collateral: collateral(b, fx.chain, tdxtest.CollateralOptions{})}},
	} {
		v := fx.validator(b, bc.opts)
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := v.Validate(context.Background(), ev, fx.userData); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
