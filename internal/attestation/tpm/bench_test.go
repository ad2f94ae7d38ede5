package tpm

import (
	"context"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// BenchmarkValidate validates simulator evidence in AK-certificate mode with
// a real event log (chain, quote, event log replay, one policy PCR).
func BenchmarkValidate(b *testing.B) {
	sim := newSimulator(b, realEventLog)
	pcrs := tpmtest.PCRs(b, sim)
	ca := tpmtest.NewFakePlatformCA(b, "fake platform CA")
	iss := newAKCertIssuer(b, sim, ca, realEventLog)
	v := newValidator(b, &policy.TPM{PCRs: map[int]policy.Value{4: enforce(pcrs[4])}}, ValidatorOptions{AKRoots: ca.Pool()})
	userData := userDataFor("bench")
	ev := mustIssue(b, iss, userData)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(ctx, ev, userData); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssue quotes all PCR banks on the in-process simulator.
func BenchmarkIssue(b *testing.B) {
	sim := newSimulator(b, nil)
	ca := tpmtest.NewFakePlatformCA(b, "fake platform CA")
	iss := newAKCertIssuer(b, sim, ca, realEventLog)
	userData := userDataFor("bench")
	ctx := context.Background()
	for b.Loop() {
		if _, err := iss.Issue(ctx, userData); err != nil {
			b.Fatal(err)
		}
	}
}
