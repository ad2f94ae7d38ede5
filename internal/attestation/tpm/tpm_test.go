package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm-tools/client"
	attestpb "github.com/google/go-tpm-tools/proto/attest"
	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

func enforce(want []byte) policy.Value { return policy.Value{Want: want, Mode: policy.Enforce} }

func newValidator(tb testing.TB, pol *policy.TPM, opts ValidatorOptions) *Validator {
	tb.Helper()
	v, err := NewValidator(pol, opts)
	if err != nil {
		tb.Fatalf("NewValidator: %v", err)
	}
	return v
}

func TestNewValidatorNeedsTrustAnchor(t *testing.T) {
	_, err := NewValidator(&policy.TPM{}, ValidatorOptions{})
	if err == nil {
		t.Fatal("NewValidator accepted options without AKRoots and EKRoots")
	}
	if _, err := NewValidator(nil, ValidatorOptions{AKRoots: x509.NewCertPool()}); err == nil {
		t.Fatal("NewValidator accepted a nil policy")
	}
}

// TestSimulatorAKCertRoundTrip issues on the TPM simulator in AK-certificate
// mode (the AK certified by a fake platform CA) with a real event log, and
// validates against the PCRs read from the TPM, including the cluster-ID
// latch in PCR 15.
func TestSimulatorAKCertRoundTrip(t *testing.T) {
	sim := newSimulator(t, realEventLog)
	latch := sha256.Sum256([]byte("cluster id"))
	if err := tpm2.PCRExtend(sim, tpmutil.Handle(15), tpm2.AlgSHA256, latch[:], ""); err != nil {
		t.Fatal(err)
	}
	want := tpmtest.PCRs(t, sim)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss := newAKCertIssuer(t, sim, ca, realEventLog)
	v := newValidator(t, &policy.TPM{PCRs: map[int]policy.Value{0: enforce(want[0]), 4: enforce(want[4]), 15: enforce(want[15])}}, ValidatorOptions{AKRoots: ca.Pool()})

	userData := userDataFor("a")
	ev := mustIssue(t, iss, userData)
	if ev.GetVariant() != string(attestation.VariantTPM) || ev.GetTpmEndorsement() != nil {
		t.Fatalf("evidence variant %q, endorsement %v; want tpm without endorsement", ev.GetVariant(), ev.GetTpmEndorsement())
	}
	ch, err := v.Challenge(context.Background(), ev, userData)
	if err != nil || ch != nil {
		t.Fatalf("Challenge in AK-certificate mode = %v, %v; want nil, nil", ch, err)
	}
	claims, err := v.Validate(context.Background(), ev, userData)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if len(claims.Measurements) != 24 {
		t.Errorf("%d measurements, want 24 SHA-256 PCRs", len(claims.Measurements))
	}
	for i, val := range want {
		if got := claims.Measurements[pcrName(int(i))]; !bytes.Equal(got, val) {
			t.Errorf("%s = %x, want %x", pcrName(int(i)), got, val)
		}
	}
	if bytes.Equal(want[15], make([]byte, 32)) {
		t.Error("latch PCR 15 still at reset value")
	}
	if bytes.Equal(want[0], make([]byte, 32)) {
		t.Error("pcr[0] is zero: the event log was not replayed into the simulator")
	}
	att := &attestpb.Attestation{}
	if err := proto.Unmarshal(ev.GetTpm(), att); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(att.GetEventLog(), realEventLog) {
		t.Error("evidence does not carry the event log")
	}
	hwid := sha256.Sum256(att.GetAkPub())
	if !bytes.Equal(claims.HardwareID, hwid[:]) {
		t.Errorf("HardwareID %x, want SHA-256 of the AK public area %x", claims.HardwareID, hwid)
	}
	if len(claims.Warnings) != 0 {
		t.Errorf("warnings %v, want none", claims.Warnings)
	}
}

// TestSimulatorAdversarial runs one attack per case against evidence issued
// on the simulator in AK-certificate mode.
func TestSimulatorAdversarial(t *testing.T) {
	sim := newSimulator(t, realEventLog)
	pcrs := tpmtest.PCRs(t, sim)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss := newAKCertIssuer(t, sim, ca, realEventLog)
	pol := &policy.TPM{PCRs: map[int]policy.Value{0: enforce(pcrs[0]), 4: enforce(pcrs[4])}}
	v := newValidator(t, pol, ValidatorOptions{AKRoots: ca.Pool()})

	userData := userDataFor("this session")
	good := mustIssue(t, iss, userData)
	if _, err := v.Validate(context.Background(), good, userData); err != nil {
		t.Fatalf("valid evidence refused: %v", err)
	}
	otherSession := mustIssue(t, iss, userDataFor("another session"))
	akPub := tpmtest.AKPublicKey(t, sim)

	// A second AK in the same TPM (RSA), not certified.
	rsaAK, err := client.AttestationKeyRSA(sim)
	if err != nil {
		t.Fatal(err)
	}
	swappedAtt, err := rsaAK.Attest(client.AttestOpts{Nonce: userData, TCGEventLog: realEventLog, SkipTeeAttestation: true})
	rsaAK.Close()
	if err != nil {
		t.Fatal(err)
	}

	// A signing key that is not restricted: it could sign a forged TPMS_ATTEST.
	tmpl := AKTemplate()
	tmpl.Attributes &^= tpm2.FlagRestricted
	loose, err := client.NewKey(sim, tpm2.HandleOwner, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	// go-tpm-tools refuses to quote with such a key; the TPM does not.
	looseAtt := &attestpb.Attestation{EventLog: realEventLog}
	if looseAtt.AkPub, err = loose.PublicArea().Encode(); err != nil {
		t.Fatal(err)
	}
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}}
	looseQuote := &tpmpb.Quote{}
	if looseQuote.Quote, looseQuote.RawSig, err = tpm2.QuoteRaw(sim, loose.Handle(), "", "", userData, sel, tpm2.AlgNull); err != nil {
		t.Fatal(err)
	}
	if looseQuote.Pcrs, err = client.ReadPCRs(sim, sel); err != nil {
		t.Fatal(err)
	}
	looseAtt.Quotes = []*tpmpb.Quote{looseQuote}
	looseAtt.AkCert = ca.CertifyAsVerified(t, loose.PublicKey())
	loose.Close()

	otherCA := tpmtest.NewFakePlatformCA(t, "fake untrusted CA")

	// A genuine quote by the certified AK, but over PCRs 0-7 only.
	narrowAK, err := client.NewKey(sim, tpm2.HandleOwner, AKTemplate())
	if err != nil {
		t.Fatal(err)
	}
	narrowQuote, err := narrowAK.Quote(tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}, userData)
	narrowAK.Close()
	if err != nil {
		t.Fatal(err)
	}

	type result struct {
		ev       *attestationv1.Evidence
		userData []byte
		pol      *policy.TPM
	}
	cases := []struct {
		name      string
		mk        func(t *testing.T) result
		wantCheck string
		wantErr   error
	}{
		{
			name: "wrong PCR value",
			mk: func(t *testing.T) result {
				bad := bytes.Repeat([]byte{0xab}, 32)
				return result{ev: good, pol: &policy.TPM{PCRs: map[int]policy.Value{4: enforce(bad)}}}
			},
			wantCheck: "pcr[4]",
		},
		{
			name:      "quote for other userData (replay)",
			mk:        func(t *testing.T) result { return result{ev: good, userData: userDataFor("later session")} },
			wantCheck: "binding",
		},
		{
			name:      "evidence bound to another session's userData (relay)",
			mk:        func(t *testing.T) result { return result{ev: otherSession} },
			wantCheck: "binding",
		},
		{
			name: "AK cert from an untrusted CA",
			mk: func(t *testing.T) result {
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) { a.AkCert = otherCA.Certify(t, akPub) })}
			},
			wantCheck: "ak-chain",
		},
		{
			name: "expired AK cert",
			mk: func(t *testing.T) result {
				der := ca.CertifyValid(t, akPub, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) { a.AkCert = der })}
			},
			wantCheck: "ak-chain",
		},
		{
			name: "AK that chains to nothing",
			mk: func(t *testing.T) result {
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) { a.AkCert = nil })}
			},
			wantCheck: "ak-trust",
		},
		{
			name: "AK swapped after certification (ak_pub of another key)",
			mk: func(t *testing.T) result {
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) {
					certDER := a.AkCert
					proto.Reset(a)
					proto.Merge(a, swappedAtt)
					a.AkCert = certDER
				})}
			},
			wantCheck: "ak-pub",
		},
		{
			name: "certified key is not a restricted AK",
			mk: func(t *testing.T) result {
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) { proto.Reset(a); proto.Merge(a, looseAtt) })}
			},
			wantCheck: "ak-attributes",
		},
		{
			name: "tampered quote signature",
			mk: func(t *testing.T) result {
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) {
					sig := a.Quotes[sha256Quote(t, a)].RawSig
					sig[len(sig)-1] ^= 1
				})}
			},
			wantCheck: "quote",
		},
		{
			name: "tampered quoted PCR value",
			mk: func(t *testing.T) result {
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) {
					a.Quotes[sha256Quote(t, a)].Pcrs.Pcrs[4][0] ^= 1
				})}
			},
			wantCheck: "quote",
		},
		{
			name: "quote without the latch PCR",
			mk: func(t *testing.T) result {
				// Drop PCR 15 from the values: the quote digest no longer
				// matches either, but the library's selection check says so
				// first.
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) {
					delete(a.Quotes[sha256Quote(t, a)].Pcrs.Pcrs, 15)
				})}
			},
			wantCheck: "quote",
		},
		{
			name: "quote over PCRs 0-7 only (no latch)",
			mk: func(t *testing.T) result {
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) { a.Quotes[sha256Quote(t, a)] = narrowQuote })}
			},
			wantCheck: "pcr-selection",
		},
		{
			name: "AK certificate and EK endorsement at once",
			mk: func(t *testing.T) result {
				ev := proto.Clone(good).(*attestationv1.Evidence)
				ev.TpmEndorsement = &attestationv1.TPMEndorsement{EkCertificate: otherCA.Certificate().Raw}
				return result{ev: ev}
			},
			wantCheck: "ak-trust",
		},
		{
			name: "tampered event log",
			mk: func(t *testing.T) result {
				return result{ev: mutateAttestation(t, good, func(a *attestpb.Attestation) { a.EventLog = tamperEventLog(t, a.EventLog) })}
			},
			wantCheck: "eventlog",
		},
		{
			name: "truncated bytes",
			mk: func(t *testing.T) result {
				ev := proto.Clone(good).(*attestationv1.Evidence)
				ev.Report = &attestationv1.Evidence_Tpm{Tpm: good.GetTpm()[:len(good.GetTpm())/2]}
				return result{ev: ev}
			},
			wantErr: attestation.ErrMalformed,
		},
		{
			name: "garbage bytes",
			mk: func(t *testing.T) result {
				return result{ev: &attestationv1.Evidence{Variant: "tpm", Report: &attestationv1.Evidence_Tpm{Tpm: bytes.Repeat([]byte{0xff, 0x13, 0x00}, 100)}}}
			},
			wantErr: attestation.ErrMalformed,
		},
		{
			name: "oversized report",
			mk: func(t *testing.T) result {
				return result{ev: &attestationv1.Evidence{Variant: "tpm", Report: &attestationv1.Evidence_Tpm{Tpm: make([]byte, MaxEvidenceSize+1)}}}
			},
			wantErr: attestation.ErrMalformed,
		},
		{
			name: "wrong variant (SNP-variant evidence)",
			mk: func(t *testing.T) result {
				return result{ev: &attestationv1.Evidence{Variant: "sev-snp", Report: &attestationv1.Evidence_SevSnp{SevSnp: good.GetTpm()}}}
			},
			wantErr: attestation.ErrWrongVariant,
		},
		{
			name: "tpm label on an SNP report",
			mk: func(t *testing.T) result {
				return result{ev: &attestationv1.Evidence{Variant: "tpm", Report: &attestationv1.Evidence_SevSnp{SevSnp: good.GetTpm()}}}
			},
			wantErr: attestation.ErrWrongVariant,
		},
		{
			name:    "nil evidence",
			mk:      func(t *testing.T) result { return result{ev: nil} },
			wantErr: attestation.ErrMalformed,
		},
		{
			name:    "empty evidence",
			mk:      func(t *testing.T) result { return result{ev: &attestationv1.Evidence{}} },
			wantErr: attestation.ErrWrongVariant,
		},
		{
			name: "empty tpm report",
			mk: func(t *testing.T) result {
				return result{ev: &attestationv1.Evidence{Variant: "tpm", Report: &attestationv1.Evidence_Tpm{Tpm: []byte{}}}}
			},
			wantErr: attestation.ErrMalformed,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.mk(t)
			if r.userData == nil {
				r.userData = userData
			}
			val := v
			if r.pol != nil {
				val = newValidator(t, r.pol, ValidatorOptions{AKRoots: ca.Pool()})
			}
			claims, err := val.Validate(context.Background(), r.ev, r.userData)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				if claims != nil {
					t.Fatal("claims returned together with an error")
				}
				return
			}
			assertCheck(t, claims, err, tc.wantCheck)
		})
	}

	t.Run("expired AK cert is refused for its expiry", func(t *testing.T) {
		der := ca.CertifyValid(t, akPub, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
		_, err := v.Validate(context.Background(), mutateAttestation(t, good, func(a *attestpb.Attestation) { a.AkCert = der }), userData)
		var invalid x509.CertificateInvalidError
		if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
			t.Fatalf("error %v, want x509 Expired", err)
		}
	})
	t.Run("AK cert checked at ValidatorOptions.Now", func(t *testing.T) {
		future := newValidator(t, pol, ValidatorOptions{AKRoots: ca.Pool(), Now: func() time.Time { return time.Now().Add(72 * time.Hour) }})
		claims, err := future.Validate(context.Background(), good, userData)
		assertCheck(t, claims, err, "ak-chain")
	})
	t.Run("AK cert with only EKRoots configured", func(t *testing.T) {
		ekOnly := newValidator(t, pol, ValidatorOptions{EKRoots: ca.Pool()})
		claims, err := ekOnly.Validate(context.Background(), good, userData)
		assertCheck(t, claims, err, "ak-trust")
	})
}

// tamperEventLog flips one bit in the SHA-256 digest of the first event that
// extends a PCR.
func tamperEventLog(tb testing.TB, log []byte) []byte {
	tb.Helper()
	el, err := tcg.ParseEventLog(log, tcg.ParseOpts{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range el.Events(register.HashSHA256) {
		if e.Type == 0x03 || len(e.Digest) == 0 {
			continue
		}
		i := bytes.Index(log, e.Digest)
		if i < 0 {
			continue
		}
		out := bytes.Clone(log)
		out[i] ^= 1
		return out
	}
	tb.Fatal("no event digest found in the log")
	return nil
}

func TestSimulatorWarnModePCRMismatchPasses(t *testing.T) {
	sim := newSimulator(t, nil)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss := newAKCertIssuer(t, sim, ca, nil)
	bad := bytes.Repeat([]byte{0xcd}, 32)
	v := newValidator(t, &policy.TPM{PCRs: map[int]policy.Value{7: {Want: bad, Mode: policy.Warn}}}, ValidatorOptions{AKRoots: ca.Pool()})
	userData := userDataFor("warn")
	claims, err := v.Validate(context.Background(), mustIssue(t, iss, userData), userData)
	if err != nil {
		t.Fatalf("warn-mode mismatch refused: %v", err)
	}
	if len(claims.Warnings) != 1 {
		t.Fatalf("warnings %q, want one for pcr[7]", claims.Warnings)
	}
}

func TestOpenIssuerMissingDevice(t *testing.T) {
	if _, err := OpenIssuer(t.TempDir()+"/tpmrm0", IssuerOptions{}); err == nil {
		t.Fatal("OpenIssuer of a missing device succeeded")
	}
}

func TestIssuerRefusesBadInput(t *testing.T) {
	sim := newSimulator(t, nil)
	if _, err := NewIssuer(sim, IssuerOptions{}); err == nil {
		t.Error("NewIssuer in endorsement mode succeeded on a TPM without EK certificate")
	}
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	other := tpmtest.NewFakePlatformCA(t, "fake other")
	// A certificate for a key that is not this TPM's AK.
	if _, err := NewIssuer(sim, IssuerOptions{AKCertificate: ca.Certify(t, other.Certificate().PublicKey)}); err == nil {
		t.Error("NewIssuer accepted an AK certificate for another key")
	}
	iss := newAKCertIssuer(t, sim, ca, nil)
	for _, ud := range [][]byte{nil, make([]byte, attestation.MaxUserData+1)} {
		if _, err := iss.Issue(context.Background(), ud); err == nil {
			t.Errorf("Issue accepted %d bytes of userData", len(ud))
		}
	}
	if _, err := iss.Respond(context.Background(), &attestationv1.ActivationChallenge{CredentialBlob: []byte{0, 1, 1}, EncryptedSecret: []byte{0, 1, 1}}); err == nil {
		t.Error("Respond in AK-certificate mode succeeded")
	}
}

// TestSwtpmEndorsementRoundTrip issues on swtpm in endorsement mode: the EK
// certificate from TPM NV, signed by swtpm's local CA, and a real
// Challenge/Respond credential activation. Then one attack per case.
func TestSwtpmEndorsementRoundTrip(t *testing.T) {
	tpm := tpmtest.StartSwtpm(t)
	iss, err := NewIssuer(tpm.RW, IssuerOptions{EKIntermediates: tpm.EKIntermediates})
	if err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	t.Cleanup(func() { iss.Close() })
	v := newValidator(t, &policy.TPM{PCRs: map[int]policy.Value{0: enforce(make([]byte, 32))}}, ValidatorOptions{EKRoots: tpm.EKRoots})
	ctx := context.Background()

	activate := func(t *testing.T, ev *attestationv1.Evidence, userData []byte) []byte {
		t.Helper()
		ch, err := v.Challenge(ctx, ev, userData)
		if err != nil {
			t.Fatalf("Challenge: %v", err)
		}
		if ch == nil {
			t.Fatal("no challenge for endorsement-mode evidence")
		}
		secret, err := iss.Respond(ctx, ch)
		if err != nil {
			t.Fatalf("Respond: %v", err)
		}
		return secret
	}

	userData := userDataFor("ek session")
	ev := mustIssue(t, iss, userData)
	if len(ev.GetTpmEndorsement().GetEkCertificate()) == 0 {
		t.Fatal("evidence carries no EK certificate")
	}
	ev.TpmEndorsement.ActivatedSecret = activate(t, ev, userData)
	claims, err := v.Validate(ctx, ev, userData)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if _, ok := claims.Measurements["pcr[15]"]; !ok {
		t.Error("claims lack the latch pcr[15]")
	}

	// Evidence for another session, activated for that session.
	otherUD := userDataFor("other ek session")
	other := mustIssue(t, iss, otherUD)
	otherSecret := activate(t, other, otherUD)

	otherCA := tpmtest.NewFakePlatformCA(t, "fake untrusted EK CA")
	cases := []struct {
		name      string
		ev        func() *attestationv1.Evidence
		v         *Validator
		wantCheck string
	}{
		{
			name: "activation secret missing",
			ev: func() *attestationv1.Evidence {
				e := proto.Clone(ev).(*attestationv1.Evidence)
				e.TpmEndorsement.ActivatedSecret = nil
				return e
			},
			wantCheck: "activation",
		},
		{
			name: "activation secret wrong (answered for another challenge)",
			ev: func() *attestationv1.Evidence {
				e := proto.Clone(ev).(*attestationv1.Evidence)
				e.TpmEndorsement.ActivatedSecret = otherSecret
				return e
			},
			wantCheck: "activation",
		},
		{
			name: "AK swapped after activation",
			ev: func() *attestationv1.Evidence {
				rsaAK, err := client.AttestationKeyRSA(tpm.RW)
				if err != nil {
					t.Fatal(err)
				}
				defer rsaAK.Close()
				att, err := rsaAK.Attest(client.AttestOpts{Nonce: userData, TCGEventLog: []byte{}, SkipTeeAttestation: true})
				if err != nil {
					t.Fatal(err)
				}
				return mutateAttestation(t, ev, func(a *attestpb.Attestation) { proto.Reset(a); proto.Merge(a, att) })
			},
			wantCheck: "activation",
		},
		{
			name:      "EK cert from an untrusted CA",
			ev:        func() *attestationv1.Evidence { return ev },
			v:         newValidator(t, &policy.TPM{}, ValidatorOptions{EKRoots: otherCA.Pool()}),
			wantCheck: "ek-chain",
		},
		{
			name:      "EK evidence with only AKRoots configured",
			ev:        func() *attestationv1.Evidence { return ev },
			v:         newValidator(t, &policy.TPM{}, ValidatorOptions{AKRoots: otherCA.Pool()}),
			wantCheck: "ak-trust",
		},
		{
			name: "relay of another session's activated evidence",
			ev: func() *attestationv1.Evidence {
				e := proto.Clone(other).(*attestationv1.Evidence)
				e.TpmEndorsement.ActivatedSecret = otherSecret
				return e
			},
			wantCheck: "activation",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			val := v
			if tc.v != nil {
				val = tc.v
			}
			claims, err := val.Validate(ctx, tc.ev(), userData)
			assertCheck(t, claims, err, tc.wantCheck)
		})
	}
	t.Run("no credential for an untrusted EK", func(t *testing.T) {
		untrusted := newValidator(t, &policy.TPM{}, ValidatorOptions{EKRoots: otherCA.Pool()})
		ch, err := untrusted.Challenge(ctx, ev, userData)
		assertCheck(t, nil, err, "ek-chain")
		if ch != nil {
			t.Fatal("challenge returned for an untrusted EK")
		}
	})
	t.Run("the relayed evidence is valid for its own session", func(t *testing.T) {
		e := proto.Clone(other).(*attestationv1.Evidence)
		e.TpmEndorsement.ActivatedSecret = otherSecret
		if _, err := v.Validate(ctx, e, otherUD); err != nil {
			t.Fatalf("Validate: %v", err)
		}
	})
}

func TestReadEventLog(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/binary_bios_measurements"
	writeTestFile(t, path, realEventLog)
	got, err := ReadEventLog(path)
	if err != nil || !bytes.Equal(got, realEventLog) {
		t.Fatalf("ReadEventLog = %d bytes, %v; want the %d-byte log", len(got), err, len(realEventLog))
	}
	writeTestFile(t, path, make([]byte, MaxEventLogSize+1))
	if _, err := ReadEventLog(path); err == nil {
		t.Fatal("ReadEventLog accepted a log over MaxEventLogSize")
	}
	if _, err := ReadEventLog(dir + "/missing"); err == nil {
		t.Fatal("ReadEventLog of a missing file succeeded")
	}
}

func writeTestFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}
