package tpmtest

import (
	"io"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// Simulator returns the in-process TPM simulator (go-tpm-tools, Microsoft's
// reference TPM), freshly manufactured, with all PCRs at their reset value.
// There is one simulator per process: tests that use it must not run in
// parallel. tb.Cleanup closes it.
func Simulator(tb TB) io.ReadWriteCloser {
	tb.Helper()
	sim, err := simulator.Get()
	if err != nil {
		tb.Fatalf("starting TPM simulator: %v", err)
	}
	tb.Cleanup(func() {
		if err := sim.Close(); err != nil {
			tb.Errorf("closing TPM simulator: %v", err)
		}
	})
	return sim
}

// ExtendEventLog extends the SHA-256 digests of a TCG event log into rw's
// PCRs, as firmware would have done, so that quotes replay against the log.
func ExtendEventLog(tb TB, rw io.ReadWriter, eventLog []byte) {
	tb.Helper()
	el, err := tcg.ParseEventLog(eventLog, tcg.ParseOpts{})
	if err != nil {
		tb.Fatalf("parsing test event log: %v", err)
	}
	for _, e := range el.Events(register.HashSHA256) {
		if e.Type == 0x03 || len(e.Digest) == 0 { // EV_NO_ACTION extends nothing
			continue
		}
		if err := tpm2.PCRExtend(rw, tpmutil.Handle(e.Index), tpm2.AlgSHA256, e.Digest, ""); err != nil {
			tb.Fatalf("extending pcr[%d]: %v", e.Index, err)
		}
	}
}

// PCRs reads PCRs 0–23 of rw's SHA-256 bank, keyed by index: the reference
// values to write a policy with.
func PCRs(tb TB, rw io.ReadWriter) map[int][]byte {
	tb.Helper()
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256}
	for i := range 24 {
		sel.PCRs = append(sel.PCRs, i)
	}
	pcrs, err := client.ReadPCRs(rw, sel)
	if err != nil {
		tb.Fatalf("reading PCRs: %v", err)
	}
	out := make(map[int][]byte, len(pcrs.GetPcrs()))
	for i, v := range pcrs.GetPcrs() {
		out[int(i)] = v
	}
	if len(out) != 24 {
		tb.Fatalf("read %d SHA-256 PCRs, want 24", len(out))
	}
	return out
}
