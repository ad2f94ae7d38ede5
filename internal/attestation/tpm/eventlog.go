package tpm

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"

	"github.com/cloister-dev/cloister/internal/attestation"
)

// checkEventLog is the "eventlog" check: it replays the TCG event log's
// SHA-256 digests from the reset values and requires the result to be the
// verified quote's value for every PCR the validator relies on (see
// replayedPCRs). It does not use go-tpm-tools' server.VerifyAttestation for
// this: that replay accepts an empty log, skips every PCR the log has no
// events for, and applies "workarounds" that edit the log until it replays,
// so it would claim a check it does not make.
func checkEventLog(d *decoded) error {
	quoted := d.quote.GetPcrs().GetPcrs()
	replayed, counts, err := replay(d.att.GetEventLog())
	if err != nil {
		return rejectLog("a TCG crypto-agile event log with SHA-256 digests", "a log that does not parse", err)
	}
	for _, i := range replayedPCRs(counts) {
		got, ok := quoted[uint32(i)]
		if !ok {
			return rejectLog(fmt.Sprintf("pcr[%d] quoted", i), fmt.Sprintf("%d events for an unquoted pcr[%d]", counts[i], i), nil)
		}
		if !bytes.Equal(replayed[i], got) {
			return rejectLog(
				fmt.Sprintf("pcr[%d] = %s (quoted), replayed from the log", i, attestation.Hex(got)),
				fmt.Sprintf("pcr[%d] = %s replayed from %d events", i, attestation.Hex(replayed[i]), counts[i]), nil)
		}
	}
	return nil
}

// firmwarePCRs are the PCRs that only firmware and boot loaders extend, each
// extension logged through the TCG2 protocol (PC Client PFP: 0–7 always
// carry at least a separator; 8, 9 and 14 hold boot loader, kernel stub and
// shim measurements). They must replay even when the policy does not pin
// them, so a log cannot silently omit their events. PCR 10 (IMA), 11–13
// (systemd, logged elsewhere) and 15 (the cluster-ID latch) are extended
// after boot without entries in this log, so they are replayed only when the
// log has events for them.
var firmwarePCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}

// replayedPCRs are the PCRs checked against the quote: the firmware PCRs
// and every PCR the log has events for. A policy PCR outside these (IMA's
// PCR 10, say, which the kernel extends at boot with no entry in this log)
// needs no replay: the PCR check compares it with the signed quote itself,
// and the log claims nothing about it.
func replayedPCRs(counts map[int]int) []int {
	set := make(map[int]bool)
	for _, i := range firmwarePCRs {
		set[i] = true
	}
	for i := range counts {
		set[i] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// replay parses a TCG PC Client event log (crypto-agile, SHA-256 bank) and
// returns the SHA-256 value each PCR 0–23 reaches, and how many events
// extended each PCR. An empty log extends nothing. Every event that extends
// a PCR must carry a SHA-256 digest and name a PCR in 0–23.
func replay(raw []byte) (map[int][]byte, map[int]int, error) {
	pcrs := make(map[int][]byte, 24)
	for i := range 24 {
		pcrs[i] = resetValue(i)
	}
	counts := make(map[int]int)
	if len(raw) == 0 {
		return pcrs, counts, nil
	}
	if len(raw) > MaxEventLogSize {
		return nil, nil, fmt.Errorf("event log is %d bytes, limit %d", len(raw), MaxEventLogSize)
	}
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
	if err != nil {
		return nil, nil, fmt.Errorf("parsing event log: %v", err)
	}
	if !slices.Contains(el.Algs, register.HashSHA256) {
		return nil, nil, fmt.Errorf("event log has no SHA-256 digests (algorithms %v)", el.Algs)
	}
	for n, e := range el.Events(register.HashSHA256) {
		if e.Index < 0 || e.Index > 23 {
			return nil, nil, fmt.Errorf("event %d extends pcr[%d], outside 0-23", n, e.Index)
		}
		if e.Type == tcg.NoAction {
			// EV_NO_ACTION extends nothing. The one that matters is
			// StartupLocality: it sets PCR 0's initial value to the
			// locality TPM2_Startup ran at, if it comes first.
			if e.Index == 0 && counts[0] == 0 && len(e.Data) == 17 && strings.HasPrefix(string(e.Data), "StartupLocality") {
				pcrs[0][sha256.Size-1] = e.Data[16]
			}
			continue
		}
		if len(e.Digest) != sha256.Size {
			return nil, nil, fmt.Errorf("event %d (pcr[%d], type %#x) has no SHA-256 digest", n, e.Index, uint32(e.Type))
		}
		if e.Type == tcg.EFIHCRTMEvent {
			// An H-CRTM event starts PCR 0 at 0…04 instead of extending
			// from zero; anywhere else it is not a boot the log describes.
			if e.Index != 0 || counts[0] != 0 {
				return nil, nil, fmt.Errorf("event %d: H-CRTM event that is not the first event of pcr[0]", n)
			}
			pcrs[0] = resetValue(0)
			pcrs[0][sha256.Size-1] = 4
		}
		h := sha256.New()
		h.Write(pcrs[e.Index])
		h.Write(e.Digest)
		pcrs[e.Index] = h.Sum(nil)
		counts[e.Index]++
	}
	return pcrs, counts, nil
}

// resetValue is a SHA-256 PCR's value after TPM2_Startup on a PC Client
// platform: all ones for the dynamic-RTM PCRs 17–22, zero otherwise.
func resetValue(i int) []byte {
	v := make([]byte, sha256.Size)
	if i >= 17 && i <= 22 {
		for j := range v {
			v[j] = 0xff
		}
	}
	return v
}

func rejectLog(want, got string, err error) error {
	return &attestation.CheckError{Variant: attestation.VariantTPM, Check: "eventlog", Want: want, Got: got, Err: err}
}
