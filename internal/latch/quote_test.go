package latch

import (
	"context"
	"errors"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// TestTPMLatchSeenByValidator latches the simulator, quotes it with package
// tpm's Issuer (AK certified by a FAKE platform CA) and checks that a
// policy expecting ExpectedTPM of the cluster ID accepts the quote, and that
// one expecting another cluster, or the reset value, refuses it at pcr[15].
func TestTPMLatchSeenByValidator(t *testing.T) {
	ctx := context.Background()
	sim := tpmtest.Simulator(t)
	id := clusterID(0x42)
	if err := NewTPM(sim).Extend(ctx, id); err != nil {
		t.Fatal(err)
	}
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss, err := tpm.NewIssuer(sim, tpm.IssuerOptions{AKCertificate: ca.CertifyAK(t, sim)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	userData := []byte("latch test session")
	ev, err := iss.Issue(ctx, userData)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		want      []byte
		wantCheck string
	}{
		{name: "latched to this cluster", want: ExpectedTPM(id)},
		{name: "latched to another cluster", want: ExpectedTPM(clusterID(0x43)), wantCheck: "pcr[15]"},
		{name: "join requires the reset value", want: make([]byte, 32), wantCheck: "pcr[15]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pol := &policy.TPM{PCRs: map[int]policy.Value{PCR: {Want: tc.want, Mode: policy.Enforce}}}
			v, err := tpm.NewValidator(pol, tpm.ValidatorOptions{AKRoots: ca.Pool()})
			if err != nil {
				t.Fatal(err)
			}
			claims, err := v.Validate(ctx, ev, userData)
			if tc.wantCheck == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ce *attestation.CheckError
			if !errors.As(err, &ce) || ce.Check != tc.wantCheck || claims != nil {
				t.Fatalf("Validate = %v, %v; want rejection by %q", claims, err, tc.wantCheck)
			}
		})
	}
}

// TestTPMLatchOnSwtpm runs the latch on swtpm, a TPM out of process.
func TestTPMLatchOnSwtpm(t *testing.T) {
	ctx := context.Background()
	l := NewTPM(tpmtest.StartSwtpm(t).RW)
	if err := l.CheckReset(ctx); err != nil {
		t.Fatalf("CheckReset on a fresh swtpm: %v", err)
	}
	id := clusterID(0x99)
	if err := l.Extend(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := l.CheckReset(ctx); !errors.Is(err, ErrNotReset) {
		t.Fatalf("CheckReset after Extend: %v, want ErrNotReset", err)
	}
	v, err := l.Value(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := ExpectedTPM(id); string(v) != string(want) {
		t.Fatalf("pcr[15] = %x, want %x", v, want)
	}
}
