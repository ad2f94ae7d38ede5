package tpm

import (
	"bytes"
	"context"
	"testing"

	attestpb "github.com/google/go-tpm-tools/proto/attest"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// FuzzValidate feeds arbitrary tpm reports to Validate: it must never panic
// and never return Claims together with an error. Seeds are a valid report
// from the simulator (AK-certificate mode, real event log) and mutations of
// it.
func FuzzValidate(f *testing.F) {
	sim := newSimulator(f, realEventLog)
	ca := tpmtest.NewFakePlatformCA(f, "fake platform CA")
	iss := newAKCertIssuer(f, sim, ca, realEventLog)
	userData := userDataFor("fuzz")
	good := mustIssue(f, iss, userData)
	v := newValidator(f, &policy.TPM{}, ValidatorOptions{AKRoots: ca.Pool(), EKRoots: ca.Pool()})
	if _, err := v.Validate(context.Background(), good, userData); err != nil {
		f.Fatalf("seed evidence does not validate: %v", err)
	}

	seeds := [][]byte{good.GetTpm()}
	raw := good.GetTpm()
	seeds = append(seeds, raw[:len(raw)/2], raw[:len(raw)-1], bytes.Repeat([]byte{0xff}, 64))
	for _, mutate := range []func(*attestpb.Attestation){
		func(a *attestpb.Attestation) { a.AkCert = nil },
		func(a *attestpb.Attestation) { a.EventLog = a.EventLog[:len(a.EventLog)/3] },
		func(a *attestpb.Attestation) { a.Quotes = a.Quotes[:1] },
		func(a *attestpb.Attestation) { a.AkPub = append(a.AkPub, 0) },
		func(a *attestpb.Attestation) { a.IntermediateCerts = [][]byte{a.AkCert} },
		// The strict event-log replay and the AK certificate's policies.
		func(a *attestpb.Attestation) { a.EventLog = nil },
		func(a *attestpb.Attestation) {
			a.EventLog = a.EventLog[:32+(int(a.EventLog[28])|int(a.EventLog[29])<<8)]
		},
		func(a *attestpb.Attestation) { a.AkCert = ca.Certify(f, tpmtest.AKPublicKey(f, sim)) },
	} {
		seeds = append(seeds, mutateAttestation(f, good, mutate).GetTpm())
	}
	if len(seeds) == 0 {
		f.Fatal("no seeds")
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	ekCert := ca.Certificate().Raw

	f.Fuzz(func(t *testing.T, report []byte, withEndorsement bool) {
		ev := &attestationv1.Evidence{Variant: "tpm", Report: &attestationv1.Evidence_Tpm{Tpm: report}}
		if withEndorsement {
			ev.TpmEndorsement = &attestationv1.TPMEndorsement{EkCertificate: ekCert, ActivatedSecret: report[:min(len(report), 32)]}
		}
		claims, err := v.Validate(context.Background(), ev, userData)
		if err != nil && claims != nil {
			t.Fatalf("claims returned together with error %v", err)
		}
		// Challenge may refuse anything; it must only not panic.
		_, _ = v.Challenge(context.Background(), proto.Clone(ev).(*attestationv1.Evidence), userData)
	})
}
