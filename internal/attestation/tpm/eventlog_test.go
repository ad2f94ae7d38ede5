package tpm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"testing"

	attestpb "github.com/google/go-tpm-tools/proto/attest"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// rawEvent is one event of a crypto-agile TCG log, as bytes, with where its
// SHA-256 digest sits, so tests can drop or change single events.
type rawEvent struct {
	pcr       uint32
	typ       uint32
	raw       []byte
	sha256Off int // offset of the SHA-256 digest in raw; -1 if none
}

// splitLog splits a crypto-agile TCG event log into its header (the Spec ID
// event) and its events.
func splitLog(tb testing.TB, log []byte) (header []byte, events []rawEvent) {
	tb.Helper()
	if len(log) < 32 {
		tb.Fatal("log shorter than a header")
	}
	hdrLen := 32 + int(binary.LittleEndian.Uint32(log[28:32]))
	header, spec := log[:hdrLen], log[32:hdrLen]
	// TCG_EfiSpecIDEvent: signature[16], platformClass u32, 4 version
	// bytes, numberOfAlgorithms u32, then {algId u16, digestSize u16}.
	n := int(binary.LittleEndian.Uint32(spec[24:28]))
	sizes := map[uint16]int{}
	for i := range n {
		off := 28 + 4*i
		sizes[binary.LittleEndian.Uint16(spec[off:])] = int(binary.LittleEndian.Uint16(spec[off+2:]))
	}
	rest := log[hdrLen:]
	for len(rest) > 0 {
		e := rawEvent{pcr: binary.LittleEndian.Uint32(rest[0:]), typ: binary.LittleEndian.Uint32(rest[4:]), sha256Off: -1}
		count := int(binary.LittleEndian.Uint32(rest[8:]))
		off := 12
		for range count {
			alg := binary.LittleEndian.Uint16(rest[off:])
			if alg == 0x000b {
				e.sha256Off = off + 2
			}
			off += 2 + sizes[alg]
		}
		off += 4 + int(binary.LittleEndian.Uint32(rest[off:]))
		e.raw = rest[:off]
		events = append(events, e)
		rest = rest[off:]
	}
	return header, events
}

func joinLog(header []byte, events []rawEvent) []byte {
	out := bytes.Clone(header)
	for _, e := range events {
		out = append(out, e.raw...)
	}
	return out
}

// TestEventLogMustReplayToTheQuote sends genuine quotes (the simulator holds
// the real log's PCR values) with logs that do not explain them. Before the
// strict replay, go-tpm-tools' server.VerifyAttestation accepted the empty
// log, the header-only log and the logs with one PCR's events removed.
func TestEventLogMustReplayToTheQuote(t *testing.T) {
	sim := newSimulator(t, realEventLog)
	pcrs := tpmtest.PCRs(t, sim)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss := newAKCertIssuer(t, sim, ca, realEventLog)
	pol := &policy.TPM{PCRs: map[int]policy.Value{0: enforce(pcrs[0]), 4: enforce(pcrs[4]), 7: enforce(pcrs[7])}}
	v := newValidator(t, pol, ValidatorOptions{AKRoots: ca.Pool()})
	userData := userDataFor("event log")
	good := mustIssue(t, iss, userData)
	if _, err := v.Validate(context.Background(), good, userData); err != nil {
		t.Fatalf("genuine evidence refused: %v", err)
	}

	header, events := splitLog(t, realEventLog)
	if !bytes.Equal(joinLog(header, events), realEventLog) {
		t.Fatal("splitLog does not round-trip the real log")
	}
	without := func(pcr uint32) []byte {
		var kept []rawEvent
		for _, e := range events {
			if e.pcr != pcr {
				kept = append(kept, e)
			}
		}
		if len(kept) == len(events) {
			t.Fatalf("the real log has no events for pcr[%d]", pcr)
		}
		return joinLog(header, kept)
	}
	altered := func() []byte {
		out := make([]rawEvent, len(events))
		copy(out, events)
		for i, e := range out {
			if e.pcr == 4 && e.sha256Off >= 0 {
				raw := bytes.Clone(e.raw)
				raw[e.sha256Off] ^= 0x80
				out[i].raw = raw
				return joinLog(header, out)
			}
		}
		t.Fatal("no pcr[4] event with a SHA-256 digest")
		return nil
	}
	// An extra EV_IPL event in PCR 4, as a boot loader that ran and was
	// left out of the quote's story would add.
	extra := func() []byte {
		ev := binary.LittleEndian.AppendUint32(nil, 4)
		ev = binary.LittleEndian.AppendUint32(ev, 0x0d)
		ev = binary.LittleEndian.AppendUint32(ev, 1)
		ev = binary.LittleEndian.AppendUint16(ev, 0x000b)
		ev = append(ev, bytes.Repeat([]byte{0x42}, 32)...)
		ev = binary.LittleEndian.AppendUint32(ev, 4)
		ev = append(ev, "evil"...)
		return append(bytes.Clone(realEventLog), ev...)
	}
	otherBoot, err := os.ReadFile("../../measure/testdata/ovmf-uki-boot.eventlog")
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name string
		log  []byte
	}{
		{"empty log", []byte{}},
		{"header only", header},
		{"pcr[4] events removed (a policy PCR)", without(4)},
		{"pcr[1] events removed (a firmware PCR the policy does not pin)", without(1)},
		{"one pcr[4] event's digest altered", altered()},
		{"extra event appended", extra()},
		{"log of another boot", otherBoot},
		{"truncated in the middle of an event", realEventLog[:len(realEventLog)-7]},
		{"not a log", []byte("hello")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ev := mutateAttestation(t, good, func(a *attestpb.Attestation) { a.EventLog = tt.log })
			claims, err := v.Validate(context.Background(), ev, userData)
			assertCheck(t, claims, err, "eventlog")
			t.Log(err)
		})
	}
}

// TestEventLogResetValuesNeedNoEvents: PCRs still at their reset value are
// explained by an empty log, and the cluster-ID latch (PCR 15) is not
// expected in the firmware's log.
func TestEventLogResetValuesNeedNoEvents(t *testing.T) {
	sim := newSimulator(t, nil)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss := newAKCertIssuer(t, sim, ca, nil)
	pcrs := tpmtest.PCRs(t, sim)
	v := newValidator(t, &policy.TPM{PCRs: map[int]policy.Value{0: enforce(pcrs[0]), 15: enforce(pcrs[15])}}, ValidatorOptions{AKRoots: ca.Pool()})
	userData := userDataFor("reset")
	if _, err := v.Validate(context.Background(), mustIssue(t, iss, userData), userData); err != nil {
		t.Fatalf("fresh TPM with an empty log refused: %v", err)
	}
}

func TestReplayStartupLocality(t *testing.T) {
	// A header-only log plus a StartupLocality EV_NO_ACTION for locality 3
	// and one event: PCR 0 starts at 0…03.
	header, _ := splitLog(t, realEventLog)
	log := bytes.Clone(header)
	loc := binary.LittleEndian.AppendUint32(nil, 0)
	loc = binary.LittleEndian.AppendUint32(loc, 0x03)
	loc = binary.LittleEndian.AppendUint32(loc, 1)
	loc = binary.LittleEndian.AppendUint16(loc, 0x000b)
	loc = append(loc, make([]byte, 32)...)
	loc = binary.LittleEndian.AppendUint32(loc, 17)
	loc = append(loc, "StartupLocality\x00\x03"...)
	log = append(log, loc...)
	pcrs, counts, err := replay(log)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 32)
	want[31] = 3
	if !bytes.Equal(pcrs[0], want) || counts[0] != 0 {
		t.Errorf("pcr[0] = %x after %d events, want %x", pcrs[0], counts[0], want)
	}
	if !bytes.Equal(pcrs[17], bytes.Repeat([]byte{0xff}, 32)) {
		t.Errorf("pcr[17] reset value = %x, want all ones", pcrs[17])
	}
}

// TestHandMadeEventLogReplays: tpmtest.EventLog, extended into the
// simulator, is accepted, and the same log without its last event is not.
func TestHandMadeEventLogReplays(t *testing.T) {
	log := tpmtest.EventLog(tpmtest.Event{PCR: 4, Data: []byte("a kernel")}, tpmtest.Event{PCR: 9, Data: []byte("an initrd")})
	sim := newSimulator(t, log)
	pcrs := tpmtest.PCRs(t, sim)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss := newAKCertIssuer(t, sim, ca, log)
	v := newValidator(t, &policy.TPM{PCRs: map[int]policy.Value{4: enforce(pcrs[4])}}, ValidatorOptions{AKRoots: ca.Pool()})
	userData := userDataFor("hand-made")
	ev := mustIssue(t, iss, userData)
	if _, err := v.Validate(context.Background(), ev, userData); err != nil {
		t.Fatalf("hand-made log refused: %v", err)
	}
	short := tpmtest.EventLog(tpmtest.Event{PCR: 4, Data: []byte("a kernel")})
	claims, err := v.Validate(context.Background(), mutateAttestation(t, ev, func(a *attestpb.Attestation) { a.EventLog = short }), userData)
	assertCheck(t, claims, err, "eventlog")
}

// TestPolicyPCRExtendedOutsideTheLog: IMA extends PCR 10 at boot with no
// entry in the firmware's log (seen on the node image's Debian kernel). A
// policy may pin it: the PCR check compares it with the signed quote, and
// the log, which claims nothing about PCR 10, needs not explain it.
func TestPolicyPCRExtendedOutsideTheLog(t *testing.T) {
	firmwareLog := tpmtest.EventLog(tpmtest.Event{PCR: 4, Data: []byte("a kernel")})
	sim := newSimulator(t, firmwareLog)
	// The kernel's own measurement, extended but not in the log the node sends.
	tpmtest.ExtendEventLog(t, sim, tpmtest.EventLog(tpmtest.Event{PCR: 10, Data: []byte("boot_aggregate")}))
	pcrs := tpmtest.PCRs(t, sim)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss := newAKCertIssuer(t, sim, ca, firmwareLog)
	userData := userDataFor("ima")
	ev := mustIssue(t, iss, userData)

	pinned := newValidator(t, &policy.TPM{PCRs: map[int]policy.Value{4: enforce(pcrs[4]), 10: enforce(pcrs[10])}}, ValidatorOptions{AKRoots: ca.Pool()})
	if _, err := pinned.Validate(context.Background(), ev, userData); err != nil {
		t.Fatalf("pcr[10] pinned to its quoted value, extended outside the log: %v", err)
	}
	other := newValidator(t, &policy.TPM{PCRs: map[int]policy.Value{4: enforce(pcrs[4]), 10: enforce(make([]byte, 32))}}, ValidatorOptions{AKRoots: ca.Pool()})
	_, err := other.Validate(context.Background(), ev, userData)
	var ce *attestation.CheckError
	if !errors.As(err, &ce) || ce.Check != "pcr[10]" {
		t.Fatalf("pcr[10] pinned to another value: want the pcr[10] check, got %v", err)
	}
}
