package measure

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"fmt"
	"testing"
)

// realEventLog is the TCG event log of a real boot: Debian's OVMF
// (OVMF_CODE_4M.fd, no Secure Boot) under QEMU with swtpm, booting a
// unified kernel image make image built (systemd-stub 252, Linux 6.1) from
// an ESP; read from the node's attestation. Its image-dependent digests
// belong to that build; the structure and the fixed digests do not change.
//
//go:embed testdata/ovmf-uki-boot.eventlog
var realEventLog []byte

type logEvent struct {
	pcr    int
	typ    uint32
	digest [32]byte
	data   []byte
}

// parseEventLog reads a crypto-agile TCG2 event log (the SHA-256 digests).
// It is test code: the product verifies event logs with go-tpm-tools.
func parseEventLog(b []byte) ([]logEvent, error) {
	r := bytes.NewReader(b)
	read := func(v any) error { return binary.Read(r, binary.LittleEndian, v) }
	// The first event is the SHA-1-format Spec ID event.
	var hdr struct {
		PCR, Type uint32
		Digest    [20]byte
		Size      uint32
	}
	if err := read(&hdr); err != nil {
		return nil, err
	}
	if _, err := r.Seek(int64(hdr.Size), 1); err != nil {
		return nil, err
	}
	var out []logEvent
	for r.Len() > 0 {
		var e struct{ PCR, Type, Count uint32 }
		if err := read(&e); err != nil {
			return nil, err
		}
		ev := logEvent{pcr: int(e.PCR), typ: e.Type}
		for range e.Count {
			var alg uint16
			if err := read(&alg); err != nil {
				return nil, err
			}
			size := map[uint16]int{0x4: 20, 0xb: 32, 0xc: 48, 0xd: 64}[alg]
			if size == 0 {
				return nil, fmt.Errorf("unknown digest algorithm %#x", alg)
			}
			d := make([]byte, size)
			if _, err := r.Read(d); err != nil {
				return nil, err
			}
			if alg == 0xb {
				copy(ev.digest[:], d)
			}
		}
		var size uint32
		if err := read(&size); err != nil {
			return nil, err
		}
		if int(size) > r.Len() {
			return nil, fmt.Errorf("event of %d bytes past the end", size)
		}
		ev.data = make([]byte, size)
		if _, err := r.Read(ev.data); err != nil && size > 0 {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// TestPredictionMatchesARealBootsEventLog compares the predicted events of
// a unified kernel image with the events a real boot of one logged into
// PCRs 4, 9, 11, 12 and 13: the same events, of the same types, in the same
// order, and the same digests wherever they do not depend on the image.
func TestPredictionMatchesARealBootsEventLog(t *testing.T) {
	logged, err := parseEventLog(realEventLog)
	if err != nil {
		t.Fatalf("parsing the real event log: %v", err)
	}
	uki := buildUKI(t, [][2]string{{".osrel", "ID=test\n"}, {".cmdline", "x\x00"}, {".linux", string(minimalPE())}, {".initrd", "initrd"}})
	predicted, err := Predict(uki)
	if err != nil {
		t.Fatal(err)
	}
	var real []logEvent
	for _, e := range logged {
		for _, p := range PredictedPCRs {
			if e.pcr == p {
				real = append(real, e)
			}
		}
	}
	// The log lists events in time order; the prediction per PCR.
	var sorted []logEvent
	for _, p := range PredictedPCRs {
		for _, e := range real {
			if e.pcr == p {
				sorted = append(sorted, e)
			}
		}
	}
	if len(sorted) != len(predicted) {
		t.Fatalf("real boot logged %d events into PCRs %v, prediction has %d", len(sorted), PredictedPCRs, len(predicted))
	}
	fixed := map[[32]byte]bool{
		sha256.Sum256([]byte(callingEFIApplicationAction)): true,
		sha256.Sum256([]byte{0, 0, 0, 0}):                  true,
	}
	for _, name := range UKISections {
		fixed[sha256.Sum256(append([]byte(name), 0))] = true
	}
	for i, p := range predicted {
		r := sorted[i]
		if r.pcr != p.PCR || r.typ != p.Type {
			t.Errorf("event %d: real pcr %d type %#x, predicted pcr %d type %#x (%s)", i, r.pcr, r.typ, p.PCR, p.Type, p.Description)
			continue
		}
		if fixed[p.Digest] && r.digest != p.Digest {
			t.Errorf("event %d (%s): real digest %x, predicted %x", i, p.Description, r.digest, p.Digest)
		}
	}
	// The kernel's EFI stub tags its two PCR 9 events.
	for i, tag := range []uint32{0x8f3b22ed, 0x8f3b22ec} {
		e := sorted[4+i]
		if e.pcr != 9 || len(e.data) < 4 || binary.LittleEndian.Uint32(e.data) != tag {
			t.Errorf("PCR 9 event %d: want tag %#x, got %x", i, tag, e.data)
		}
	}
}

func FuzzPredict(f *testing.F) {
	f.Add(minimalPE())
	f.Add(withCertTable(minimalPE()))
	f.Add(realEventLog)
	f.Fuzz(func(t *testing.T, img []byte) {
		d, err := PEHash(img)
		if err != nil && d != ([32]byte{}) {
			t.Fatal("hash returned with an error")
		}
		events, err := Predict(img)
		if err != nil && events != nil {
			t.Fatal("events returned with an error")
		}
		for _, name := range UKISections {
			data, ok, err := Section(img, name)
			if err != nil && (data != nil || ok) {
				t.Fatal("section returned with an error")
			}
		}
	})
}
