package tpm

import (
	"context"
	_ "embed"
	"errors"
	"io"
	"testing"

	attestpb "github.com/google/go-tpm-tools/proto/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// realEventLog was captured on a GCE Ubuntu 24.04 SEV-SNP VM (see
// testdata/README.md).
//
//go:embed testdata/eventlog-ubuntu-2404-amd-sevsnp.bin
var realEventLog []byte

// newSimulator returns the in-process TPM simulator (one per process: tests
// that use it never run in parallel), with the SHA-256 digests of eventLog
// extended into its PCRs, as firmware would have done.
func newSimulator(tb testing.TB, eventLog []byte) io.ReadWriteCloser {
	tb.Helper()
	sim := tpmtest.Simulator(tb)
	if len(eventLog) > 0 {
		tpmtest.ExtendEventLog(tb, sim, eventLog)
	}
	return sim
}

// newAKCertIssuer returns an issuer in AK-certificate mode on rw, its AK
// certified by ca.
func newAKCertIssuer(tb testing.TB, rw io.ReadWriter, ca *tpmtest.FakePlatformCA, eventLog []byte) *Issuer {
	tb.Helper()
	iss, err := NewIssuer(rw, IssuerOptions{AKCertificate: ca.CertifyAK(tb, rw), EventLog: eventLog})
	if err != nil {
		tb.Fatalf("NewIssuer: %v", err)
	}
	tb.Cleanup(func() { iss.Close() })
	return iss
}

// userDataFor is what attested TLS binds: a hash of a label, the role and the
// session's exporter (here just a session name).
func userDataFor(session string) []byte {
	b := make([]byte, 32)
	copy(b, "session:"+session)
	return b
}

func mustIssue(tb testing.TB, iss *Issuer, userData []byte) *attestationv1.Evidence {
	tb.Helper()
	ev, err := iss.Issue(context.Background(), userData)
	if err != nil {
		tb.Fatalf("Issue: %v", err)
	}
	return ev
}

// mutateAttestation returns a copy of ev whose go-tpm-tools Attestation was
// changed by f.
func mutateAttestation(tb testing.TB, ev *attestationv1.Evidence, f func(*attestpb.Attestation)) *attestationv1.Evidence {
	tb.Helper()
	att := &attestpb.Attestation{}
	if err := proto.Unmarshal(ev.GetTpm(), att); err != nil {
		tb.Fatal(err)
	}
	f(att)
	raw, err := proto.Marshal(att)
	if err != nil {
		tb.Fatal(err)
	}
	out := proto.Clone(ev).(*attestationv1.Evidence)
	out.Report = &attestationv1.Evidence_Tpm{Tpm: raw}
	return out
}

// sha256Quote returns the index of the SHA-256 quote in att.
func sha256Quote(tb testing.TB, att *attestpb.Attestation) int {
	tb.Helper()
	for i, q := range att.GetQuotes() {
		if tpm2.Algorithm(q.GetPcrs().GetHash()) == tpm2.AlgSHA256 {
			return i
		}
	}
	tb.Fatal("no SHA-256 quote")
	return -1
}

// assertCheck fails unless err is a *attestation.CheckError for check.
func assertCheck(tb testing.TB, claims *attestation.Claims, err error, check string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("accepted, want rejection by check %q", check)
	}
	if claims != nil {
		tb.Errorf("claims returned together with error %v", err)
	}
	var ce *attestation.CheckError
	if !errors.As(err, &ce) {
		tb.Fatalf("error is not a *attestation.CheckError: %v", err)
	}
	if ce.Check != check {
		tb.Fatalf("failed check %q, want %q (%v)", ce.Check, check, err)
	}
}
