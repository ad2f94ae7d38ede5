package tpmtest

import (
	"crypto/sha256"
	"encoding/binary"
)

// Event is one measurement of a hand-made event log: data measured into
// PCR, as an EV_IPL event whose SHA-256 digest is that of Data.
type Event struct {
	PCR  int
	Data []byte
}

// EventLog returns a TCG PC Client crypto-agile event log with a SHA-256
// bank and the given events, as firmware and boot loaders would have
// written it. Extend it into a TPM with ExtendEventLog and pass the same
// bytes to the issuer, so the quote and the log agree; package tpm's
// validator replays it strictly.
func EventLog(events ...Event) []byte {
	// TCG_EfiSpecIDEvent: signature, platformClass, spec version 2.0,
	// errata, uintnSize 2, one algorithm (SHA-256, 32 bytes), no vendor info.
	spec := append([]byte("Spec ID Event03\x00"), 0, 0, 0, 0, 0, 2, 0, 2)
	spec = binary.LittleEndian.AppendUint32(spec, 1)
	spec = binary.LittleEndian.AppendUint16(spec, 0x000b)
	spec = binary.LittleEndian.AppendUint16(spec, sha256.Size)
	spec = append(spec, 0)
	// The header is a TCG_PCClientPCREvent (SHA-1 format): PCR 0,
	// EV_NO_ACTION, a zero SHA-1 digest.
	log := binary.LittleEndian.AppendUint32(nil, 0)
	log = binary.LittleEndian.AppendUint32(log, 0x03)
	log = append(log, make([]byte, 20)...)
	log = binary.LittleEndian.AppendUint32(log, uint32(len(spec)))
	log = append(log, spec...)
	for _, e := range events {
		digest := sha256.Sum256(e.Data)
		log = binary.LittleEndian.AppendUint32(log, uint32(e.PCR))
		log = binary.LittleEndian.AppendUint32(log, 0x0d) // EV_IPL
		log = binary.LittleEndian.AppendUint32(log, 1)
		log = binary.LittleEndian.AppendUint16(log, 0x000b)
		log = append(log, digest[:]...)
		log = binary.LittleEndian.AppendUint32(log, uint32(len(e.Data)))
		log = append(log, e.Data...)
	}
	return log
}
