package snp

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify/trust"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

func TestIssueValidateRoundTripFakeDevice(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	ev := amd.issue(t, testUserData, nil)
	if ev.GetVariant() != "sev-snp" || len(ev.GetSevSnp()) == 0 {
		t.Fatalf("evidence variant %q with %d report bytes, want sev-snp with a report", ev.GetVariant(), len(ev.GetSevSnp()))
	}
	claims, err := amd.validator(t, testPolicy(), ValidatorOptions{}).Validate(t.Context(), ev, testUserData)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if claims.Variant != attestation.VariantSNP {
		t.Errorf("claims variant %q, want sev-snp", claims.Variant)
	}
	if got := claims.Measurements["measurement"]; !bytes.Equal(got, testMeasurement) {
		t.Errorf("claims measurement %x, want %x", got, testMeasurement)
	}
	if got := claims.Measurements["host-data"]; !bytes.Equal(got, testHostData) {
		t.Errorf("claims host-data %x, want %x", got, testHostData)
	}
	if hwid := testHWID(); !bytes.Equal(claims.HardwareID, hwid[:]) {
		t.Errorf("claims hardware ID %x, want the chip ID %x", claims.HardwareID, hwid)
	}
	if len(claims.Warnings) != 0 {
		t.Errorf("claims warnings %q, want none", claims.Warnings)
	}
}

func TestValidateGenoaFakeDevice(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{productName: "Genoa-B1"})
	ev := amd.issue(t, testUserData, nil)
	if _, err := amd.validator(t, testPolicy(), ValidatorOptions{}).Validate(t.Context(), ev, testUserData); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestValidateVLEKFakeDevice(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	ev := amd.issue(t, testUserData, signWithVLEK)
	claims, err := amd.validator(t, testPolicy(), ValidatorOptions{}).Validate(t.Context(), ev, testUserData)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if got := claims.Measurements["measurement"]; !bytes.Equal(got, testMeasurement) {
		t.Errorf("claims measurement %x, want %x", got, testMeasurement)
	}
	if claims.HardwareID != nil {
		t.Errorf("claims hardware ID %x for a VLEK report with a masked chip ID, want none", claims.HardwareID)
	}
}

// signWithVLEK makes the fake device sign with its VLEK, as on clouds that
// provision one per platform instead of using the chip's VCEK.
func signWithVLEK(r *spb.Report) {
	r.SignerInfo = abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VlekReportSigner})
	r.ChipId = make([]byte, abi.ChipIDSize)
}

func TestAMDRootsCoverVCEKAndVLEK(t *testing.T) {
	roots, err := amdRoots()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range productLines() {
		var ask, asvk bool
		for _, r := range roots[line] {
			if r.ProductCerts.Ark == nil {
				t.Errorf("%s root without ARK", line)
			}
			ask = ask || r.ProductCerts.Ask != nil
			asvk = asvk || r.ProductCerts.Asvk != nil
		}
		if !ask || !asvk {
			t.Errorf("%s roots: ASK %v, ASVK %v; want both", line, ask, asvk)
		}
	}
}

func TestValidateRejectsAttacks(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	good := amd.issue(t, testUserData, nil)

	lowTCB := goodTCB
	lowTCB.SnpSpl--
	lowComposed, err := kds.ComposeTCBParts(lowTCB)
	if err != nil {
		t.Fatal(err)
	}
	oldPlatform := newFakeAMD(t, fakeAMDOptions{vcekTCB: &lowTCB})
	lowVCEK := newFakeAMD(t, fakeAMDOptions{vcekTCB: &lowTCB})
	rogue := newFakeAMD(t, fakeAMDOptions{rogue: true})
	expired := newFakeAMD(t, fakeAMDOptions{vcekCreated: testNow.Add(-8 * 365 * 24 * time.Hour)})

	genoaOnly := testPolicy()
	genoaOnly.Products = []string{"Genoa"}
	otherMeasurement := testPolicy()
	otherMeasurement.Measurement.Want = bytes.Repeat([]byte{0x9a}, abi.MeasurementSize)

	// paddedEvidence carries a genuine report whose REPORT_DATA is userData
	// followed by a non-zero byte, as a node could request it directly.
	paddedEvidence := func() *attestationv1.Evidence {
		rd := pad(testUserData)
		rd[len(testUserData)] = 0x01
		qp := amd.device(t, rd, amd.report(t, rd))
		raw, err := qp.GetRawQuote(rd)
		if err != nil {
			t.Fatal(err)
		}
		att, err := abi.ReportCertsToProto(raw)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(att)
		if err != nil {
			t.Fatal(err)
		}
		return snpEvidence(b)
	}

	for _, tc := range []struct {
		name      string
		ev        *attestationv1.Evidence
		userData  []byte
		pol       *policy.SNP
		opts      ValidatorOptions
		wantCheck string
		wantErr   error
	}{
		{
			name:      "launch measurement differs from the policy",
			ev:        good,
			pol:       otherMeasurement,
			wantCheck: checkMeasurement,
		},
		{
			name:      "report replayed for another userData",
			ev:        good,
			userData:  []byte("a fresh TLS session's binding"),
			wantCheck: checkBinding,
		},
		{
			name:      "non-zero padding after userData in REPORT_DATA",
			ev:        paddedEvidence(),
			wantCheck: checkBinding,
		},
		{
			name:      "VCEK chains to an untrusted fake AMD root",
			ev:        rogue.issue(t, testUserData, nil),
			wantCheck: checkChain,
		},
		{
			name:      "fake chain checked against the real AMD roots",
			ev:        good,
			opts:      ValidatorOptions{TrustedRoots: realRoots(t)},
			wantCheck: checkChain,
		},
		{
			name:      "VCEK expired",
			ev:        expired.issue(t, testUserData, nil),
			opts:      ValidatorOptions{TrustedRoots: expired.roots},
			wantCheck: checkChain,
		},
		{
			name:      "Milan evidence, policy allows only Genoa",
			ev:        good,
			pol:       genoaOnly,
			wantCheck: checkProduct,
		},
		{
			name: "platform TCB below the minimum (with a matching VCEK)",
			ev: oldPlatform.issue(t, testUserData, func(r *spb.Report) {
				r.CurrentTcb, r.ReportedTcb, r.CommittedTcb, r.LaunchTcb = uint64(lowComposed), uint64(lowComposed), uint64(lowComposed), uint64(lowComposed)
			}),
			opts:      ValidatorOptions{TrustedRoots: oldPlatform.roots},
			wantCheck: checkTCB,
		},
		{
			name:      "VCEK TCB below the minimum",
			ev:        lowVCEK.issue(t, testUserData, nil),
			opts:      ValidatorOptions{TrustedRoots: lowVCEK.roots},
			wantCheck: checkTCB,
		},
		{
			name: "reported TCB is not the VCEK's",
			ev: amd.issue(t, testUserData, func(r *spb.Report) {
				higher := goodTCB
				higher.UcodeSpl++
				tcb, _ := kds.ComposeTCBParts(higher)
				r.ReportedTcb = uint64(tcb)
			}),
			wantCheck: checkTCB,
		},
		{
			name: "guest policy allows a migration agent",
			ev: amd.issue(t, testUserData, func(r *spb.Report) {
				r.Policy = abi.SnpPolicyToBytes(abi.SnpPolicy{ABIMajor: 1, SMT: true, MigrateMA: true})
			}),
			wantCheck: checkMigrateMA,
		},
		{
			name: "guest policy allows debugging",
			ev: amd.issue(t, testUserData, func(r *spb.Report) {
				r.Policy = abi.SnpPolicyToBytes(abi.SnpPolicy{ABIMajor: 1, SMT: true, Debug: true})
			}),
			wantCheck: checkDebug,
		},
		{
			name:      "report requested at VMPL 1",
			ev:        amd.issue(t, testUserData, func(r *spb.Report) { r.Vmpl = 1 }),
			wantCheck: checkVMPL,
		},
		{
			name: "report CHIP_ID is not the VCEK's",
			ev: amd.issue(t, testUserData, func(r *spb.Report) {
				r.ChipId = bytes.Repeat([]byte{0xee}, abi.ChipIDSize)
			}),
			wantCheck: checkChipID,
		},
		{
			name: "measurement changed after signing",
			ev: editAttestation(t, good, func(a *spb.Attestation) {
				a.Report.Measurement = bytes.Repeat([]byte{0x9a}, abi.MeasurementSize)
			}),
			pol:       otherMeasurement,
			wantCheck: checkChain,
		},
		{
			name:      "signature tampered",
			ev:        editAttestation(t, good, func(a *spb.Attestation) { a.Report.Signature[0] ^= 0x01 }),
			wantCheck: checkChain,
		},
		{
			name:      "VLEK-signed report without its VLEK certificate",
			ev:        editAttestation(t, amd.issue(t, testUserData, signWithVLEK), func(a *spb.Attestation) { a.CertificateChain.VlekCert = nil }),
			opts:      ValidatorOptions{Getter: offlineCache(t)},
			wantCheck: checkChain,
		},
		{
			name:      "VCEK missing, no certificate getter",
			ev:        editAttestation(t, good, func(a *spb.Attestation) { a.CertificateChain.VcekCert = nil }),
			wantCheck: checkChain,
		},
		{
			name:      "VCEK missing, offline cache without it",
			ev:        editAttestation(t, good, func(a *spb.Attestation) { a.CertificateChain.VcekCert = nil }),
			opts:      ValidatorOptions{Getter: offlineCache(t)},
			wantCheck: checkChain,
			wantErr:   ErrNotCached,
		},
		{
			name:    "truncated bytes",
			ev:      snpEvidence(good.GetSevSnp()[:len(good.GetSevSnp())/2]),
			wantErr: attestation.ErrMalformed,
		},
		{
			name:    "garbage bytes",
			ev:      snpEvidence(bytes.Repeat([]byte{0xff}, 300)),
			wantErr: attestation.ErrMalformed,
		},
		{
			name:    "no report in the attestation",
			ev:      editAttestation(t, good, func(a *spb.Attestation) { a.Report = nil }),
			wantErr: attestation.ErrMalformed,
		},
		{
			name:    "report field of the wrong size",
			ev:      editAttestation(t, good, func(a *spb.Attestation) { a.Report.ReportData = testUserData }),
			wantErr: attestation.ErrMalformed,
		},
		{
			name:    "oversized evidence",
			ev:      snpEvidence(make([]byte, maxEvidenceSize+1)),
			wantErr: attestation.ErrMalformed,
		},
		{
			name: "TDX evidence",
			ev: &attestationv1.Evidence{
				Variant: "tdx",
				Report:  &attestationv1.Evidence_TdxQuote{TdxQuote: []byte("quote")},
			},
			wantErr: attestation.ErrWrongVariant,
		},
		{
			name: "sev-snp label on a TDX quote",
			ev: &attestationv1.Evidence{
				Variant: "sev-snp",
				Report:  &attestationv1.Evidence_TdxQuote{TdxQuote: []byte("quote")},
			},
			wantErr: attestation.ErrWrongVariant,
		},
		{
			name:    "no evidence",
			ev:      nil,
			wantErr: attestation.ErrMalformed,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := tc.pol
			if pol == nil {
				pol = testPolicy()
			}
			userData := tc.userData
			if userData == nil {
				userData = testUserData
			}
			opts := tc.opts
			if opts.TrustedRoots == nil {
				opts.TrustedRoots = amd.roots
			}
			claims, err := amd.validator(t, pol, opts).Validate(t.Context(), tc.ev, userData)
			if err == nil {
				t.Fatalf("Validate accepted the evidence (claims %+v)", claims)
			}
			t.Logf("rejected: %v", err)
			if claims != nil {
				t.Errorf("Validate returned claims with error %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Validate error %v, want it to wrap %v", err, tc.wantErr)
			}
			var ce *attestation.CheckError
			if tc.wantCheck == "" {
				if errors.As(err, &ce) {
					t.Errorf("Validate error %v is a rejection by check %q, want no check error", err, ce.Check)
				}
				return
			}
			if !errors.As(err, &ce) {
				t.Fatalf("Validate error %v is not a *attestation.CheckError", err)
			}
			if ce.Check != tc.wantCheck {
				t.Errorf("failed check %q (%v), want %q", ce.Check, err, tc.wantCheck)
			}
			if errors.Is(err, attestation.ErrMalformed) {
				t.Errorf("rejection %v also wraps ErrMalformed", err)
			}
		})
	}
}

func TestValidateWarnModeMeasurementMismatch(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	ev := amd.issue(t, testUserData, nil)
	pol := testPolicy()
	pol.Measurement = policy.Value{Want: bytes.Repeat([]byte{0x9a}, abi.MeasurementSize), Mode: policy.Warn}
	claims, err := amd.validator(t, pol, ValidatorOptions{}).Validate(t.Context(), ev, testUserData)
	if err != nil {
		t.Fatalf("Validate in warn mode: %v", err)
	}
	if len(claims.Warnings) != 1 {
		t.Fatalf("claims warnings %q, want one measurement warning", claims.Warnings)
	}
	if got := claims.Measurements["measurement"]; !bytes.Equal(got, testMeasurement) {
		t.Errorf("claims measurement %x, want the reported %x", got, testMeasurement)
	}
}

func TestValidateMissingVCEKFromWarmOfflineCache(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	ev := editAttestation(t, amd.issue(t, testUserData, nil), func(a *spb.Attestation) { a.CertificateChain.VcekCert = nil })
	dir := t.TempDir()
	kdsFake := fakeKDS(t, amd)
	online, err := NewCertCache(dir, CertCacheOptions{Upstream: kdsFake})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := amd.validator(t, testPolicy(), ValidatorOptions{Getter: online}).Validate(t.Context(), ev, testUserData); err != nil {
		t.Fatalf("Validate with a cache over the fake KDS: %v", err)
	}
	if kdsFake.calls != 1 {
		t.Errorf("fake KDS called %d times, want 1", kdsFake.calls)
	}
	offline, err := NewCertCache(dir, CertCacheOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := amd.validator(t, testPolicy(), ValidatorOptions{Getter: offline}).Validate(t.Context(), ev, testUserData); err != nil {
		t.Fatalf("Validate with the warm offline cache: %v", err)
	}
	if kdsFake.calls != 1 {
		t.Errorf("fake KDS called %d times after an offline validation, want still 1", kdsFake.calls)
	}
}

func TestValidateDoesNotFetchWhenEvidenceCarriesVCEK(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	ev := amd.issue(t, testUserData, nil)
	kdsFake := fakeKDS(t, amd)
	if _, err := amd.validator(t, testPolicy(), ValidatorOptions{Getter: kdsFake}).Validate(t.Context(), ev, testUserData); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if kdsFake.calls != 0 {
		t.Errorf("getter called %d times for evidence with its VCEK, want 0", kdsFake.calls)
	}
}

func TestValidateRefusesBadUserData(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	ev := amd.issue(t, testUserData, nil)
	v := amd.validator(t, testPolicy(), ValidatorOptions{})
	for _, ud := range [][]byte{nil, make([]byte, attestation.MaxUserData+1)} {
		if claims, err := v.Validate(t.Context(), ev, ud); err == nil || claims != nil {
			t.Errorf("Validate with %d bytes of userData: claims %v, err %v; want an error", len(ud), claims, err)
		}
	}
}

func TestNewValidatorRefusesBadOptions(t *testing.T) {
	badMeasurement := testPolicy()
	badMeasurement.Measurement.Want = []byte{1, 2, 3}
	unknownProduct := testPolicy()
	unknownProduct.Products = []string{"Naples"}
	for _, tc := range []struct {
		name string
		pol  *policy.SNP
		opts ValidatorOptions
	}{
		{"no policy", nil, ValidatorOptions{}},
		{"short measurement", badMeasurement, ValidatorOptions{}},
		{"unknown product", unknownProduct, ValidatorOptions{}},
		{"empty trusted roots", testPolicy(), ValidatorOptions{TrustedRoots: map[string][]*trust.AMDRootCerts{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v, err := NewValidator(tc.pol, tc.opts); err == nil {
				t.Fatalf("NewValidator accepted it: %v", v)
			}
		})
	}
	if _, err := NewValidator(testPolicy(), ValidatorOptions{}); err != nil {
		t.Errorf("NewValidator with zero options: %v", err)
	}
}

func FuzzValidate(f *testing.F) {
	amd := newFakeAMD(f, fakeAMDOptions{})
	good := amd.issue(f, testUserData, nil).GetSevSnp()
	seeds := [][]byte{
		good,
		good[:len(good)/2],
		good[:len(good)-1],
		{},
		bytes.Repeat([]byte{0xff}, 64),
	}
	// Each TCB field of the report one step below the minimum.
	low := goodTCB
	low.SnpSpl--
	lowTCB, err := kds.ComposeTCBParts(low)
	if err != nil {
		f.Fatal(err)
	}
	for _, set := range []func(r *spb.Report){
		func(r *spb.Report) { r.LaunchTcb = uint64(lowTCB) },
		func(r *spb.Report) { r.CommittedTcb = uint64(lowTCB) },
		func(r *spb.Report) { r.CurrentTcb = uint64(lowTCB) },
	} {
		seeds = append(seeds, amd.issue(f, testUserData, set).GetSevSnp())
	}
	for _, i := range []int{0, 10, len(good) / 3, len(good) / 2, len(good) - 10} {
		flipped := bytes.Clone(good)
		flipped[i] ^= 0x80
		seeds = append(seeds, flipped)
	}
	if len(seeds) == 0 {
		f.Fatal("no seeds")
	}
	for _, s := range seeds {
		f.Add(s)
	}
	v := amd.validator(f, testPolicy(), ValidatorOptions{Getter: offlineCache(f)})
	f.Fuzz(func(t *testing.T, b []byte) {
		claims, err := v.Validate(t.Context(), snpEvidence(b), testUserData)
		if err != nil && claims != nil {
			t.Fatalf("Validate returned claims with error %v", err)
		}
		if err == nil && claims == nil {
			t.Fatal("Validate returned neither claims nor an error")
		}
	})
}

func BenchmarkValidate(b *testing.B) {
	amd := newFakeAMD(b, fakeAMDOptions{})
	ev := amd.issue(b, testUserData, nil)
	v := amd.validator(b, testPolicy(), ValidatorOptions{})
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(ctx, ev, testUserData); err != nil {
			b.Fatal(err)
		}
	}
}

// realRoots is the real AMD roots embedded in go-sev-guest, spelled out (a
// nil TrustedRoots means the same to NewValidator).
func realRoots(tb testing.TB) map[string][]*trust.AMDRootCerts {
	tb.Helper()
	roots := map[string][]*trust.AMDRootCerts{}
	for _, line := range []string{"Milan", "Genoa", "Turin"} {
		r, err := trust.GetDefaultRootCerts(line)
		if err != nil {
			tb.Fatalf("GetDefaultRootCerts(%s): %v", line, err)
		}
		roots[line] = []*trust.AMDRootCerts{r}
	}
	return roots
}

// A version 2 report names no processor: the validator takes the product
// from the VCEK, and a missing VCEK is looked up by the host's platform info.
func TestValidateVersion2ReportFakeDevice(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{productName: "Genoa-B1"})
	ev := amd.issue(t, testUserData, func(r *spb.Report) { r.Version, r.Cpuid1EaxFms = 2, 0 })
	milanOnly := testPolicy()
	milanOnly.Products = []string{"Milan"}
	_, err := amd.validator(t, milanOnly, ValidatorOptions{}).Validate(t.Context(), ev, testUserData)
	if ce := (*attestation.CheckError)(nil); !errors.As(err, &ce) || ce.Check != checkProduct {
		t.Fatalf("Validate of Genoa evidence against a Milan-only policy: %v, want a product rejection", err)
	}
	// The host supplies no VCEK; go-sev-guest's fake provider then adds
	// the platform info entry, as the Linux providers do.
	rd := pad(testUserData)
	r := amd.report(t, rd)
	r.Version, r.Cpuid1EaxFms = 2, 0
	qp := amd.device(t, rd, r)
	table := new(abi.CertTable)
	if err := table.Unmarshal(qp.Device.Certs); err != nil {
		t.Fatal(err)
	}
	table.Entries = slices.DeleteFunc(table.Entries, func(e abi.CertTableEntry) bool { return e.GUID.String() == abi.VcekGUID })
	qp.Device.Certs = table.Marshal()
	iss, err := NewIssuer(qp, IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	noVCEK, err := iss.Issue(t.Context(), testUserData)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := NewCertCache(t.TempDir(), CertCacheOptions{Upstream: fakeKDS(t, amd)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := amd.validator(t, testPolicy(), ValidatorOptions{Getter: cache}).Validate(t.Context(), noVCEK, testUserData); err != nil {
		t.Fatalf("Validate with the VCEK from the fake KDS: %v", err)
	}
}

// TestValidateEveryTCBFieldMeetsTheMinimum lowers one component of one TCB
// field of the report at a time, every other field staying at the minimum.
// Before LAUNCH_TCB was compared, the launch_tcb cases were accepted.
func TestValidateEveryTCBFieldMeetsTheMinimum(t *testing.T) {
	amd := newFakeAMD(t, fakeAMDOptions{})
	v := amd.validator(t, testPolicy(), ValidatorOptions{TrustedRoots: amd.roots})
	fields := []struct {
		name string
		set  func(r *spb.Report, tcb uint64)
	}{
		{"current_tcb", func(r *spb.Report, tcb uint64) { r.CurrentTcb = tcb }},
		{"reported_tcb", func(r *spb.Report, tcb uint64) { r.ReportedTcb = tcb }},
		{"committed_tcb", func(r *spb.Report, tcb uint64) { r.CommittedTcb = tcb }},
		{"launch_tcb", func(r *spb.Report, tcb uint64) { r.LaunchTcb = tcb }},
	}
	components := []struct {
		name  string
		lower func(p *kds.TCBParts)
	}{
		{"bootloader", func(p *kds.TCBParts) { p.BlSpl-- }},
		{"tee", func(p *kds.TCBParts) { p.TeeSpl-- }},
		{"snp", func(p *kds.TCBParts) { p.SnpSpl-- }},
		{"microcode", func(p *kds.TCBParts) { p.UcodeSpl-- }},
	}
	for _, f := range fields {
		for _, c := range components {
			t.Run(f.name+"/"+c.name, func(t *testing.T) {
				low := goodTCB
				c.lower(&low)
				tcb, err := kds.ComposeTCBParts(low)
				if err != nil {
					t.Fatal(err)
				}
				ev := amd.issue(t, testUserData, func(r *spb.Report) { f.set(r, uint64(tcb)) })
				claims, err := v.Validate(t.Context(), ev, testUserData)
				var ce *attestation.CheckError
				if !errors.As(err, &ce) || ce.Check != checkTCB || claims != nil {
					t.Fatalf("Validate = %v, %v; want a %q rejection", claims, err, checkTCB)
				}
				if !strings.HasPrefix(ce.Got, f.name+" ") || !strings.Contains(ce.Want, ">=") {
					t.Errorf("rejection %v does not name %s with want/got", err, f.name)
				}
			})
		}
	}
	t.Run("launch_tcb zero (not filled in)", func(t *testing.T) {
		ev := amd.issue(t, testUserData, func(r *spb.Report) { r.LaunchTcb = 0 })
		_, err := v.Validate(t.Context(), ev, testUserData)
		var ce *attestation.CheckError
		if !errors.As(err, &ce) || ce.Check != checkTCB || !strings.HasPrefix(ce.Got, "launch_tcb") {
			t.Fatalf("Validate = %v; want a launch_tcb rejection", err)
		}
	})
}
