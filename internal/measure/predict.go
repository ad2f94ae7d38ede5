package measure

import (
	"crypto/sha256"
	"fmt"
	"sort"
)

// Event types of the TCG PC Client specification that the predicted boot
// measures.
const (
	evSeparator                  = 0x4
	evEventTag                   = 0x6
	evIPL                        = 0xd
	evEFIAction                  = 0x80000007
	evEFIBootServicesApplication = 0x80000003
	callingEFIApplicationAction  = "Calling EFI Application from Boot Option"
)

// Event is one predicted measurement: what is extended into which PCR.
type Event struct {
	PCR int
	// Type is the TCG event type (EV_*).
	Type uint32
	// Digest is the SHA-256 digest extended into the PCR.
	Digest [32]byte
	// Description says what was measured, for people.
	Description string
}

// UKISections are systemd-stub's sections in the order it measures them
// into PCR 11 (systemd v252, src/boot/efi/stub.c: unified_sections, without
// .pcrsig, which is not measured).
var UKISections = []string{".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"}

// PredictedPCRs are the PCRs Predict computes; every other PCR is outside
// its model.
var PredictedPCRs = []int{4, 9, 11, 12, 13}

// Predict returns the events a boot of the unified kernel image uki
// extends into PCRs 4, 9, 11 (and none into 12 and 13), in order:
//
//   - PCR 4, by the firmware: the "Calling EFI Application from Boot Option"
//     action, the separator that closes the pre-boot phase, the image's
//     Authenticode hash, then the kernel's (.linux): systemd-stub v252
//     starts the kernel with LoadImage, which the firmware measures too.
//   - PCR 11, by systemd-stub: for each present section of UKISections, its
//     name with the terminating NUL, then its content.
//   - PCR 9, by the kernel's EFI stub (Linux 6.1): the load options
//     systemd-stub gives it (the .cmdline section as UTF-16 with its NUL),
//     then the initrd it receives from systemd-stub.
//
// It fails when uki is not a PE image or lacks .linux or .cmdline.
func Predict(uki []byte) ([]Event, error) {
	f, err := parsePE(uki)
	if err != nil {
		return nil, fmt.Errorf("reading unified kernel image: %w", err)
	}
	pe, err := PEHash(uki)
	if err != nil {
		return nil, fmt.Errorf("hashing unified kernel image: %w", err)
	}
	events := []Event{
		{PCR: 4, Type: evEFIAction, Digest: sha256.Sum256([]byte(callingEFIApplicationAction)), Description: callingEFIApplicationAction},
		{PCR: 4, Type: evSeparator, Digest: sha256.Sum256([]byte{0, 0, 0, 0}), Description: "separator"},
		{PCR: 4, Type: evEFIBootServicesApplication, Digest: pe, Description: "unified kernel image (Authenticode)"},
	}
	var linux, cmdline, initrd []byte
	for _, name := range UKISections {
		data, ok, err := f.section(uki, name)
		if err != nil {
			return nil, err
		}
		if !ok || len(data) == 0 {
			if name == ".linux" || name == ".cmdline" {
				return nil, fmt.Errorf("unified kernel image has no %s section", name)
			}
			continue
		}
		events = append(events,
			Event{PCR: 11, Type: evIPL, Digest: sha256.Sum256(append([]byte(name), 0)), Description: "section name " + name},
			Event{PCR: 11, Type: evIPL, Digest: sha256.Sum256(data), Description: "section " + name})
		switch name {
		case ".linux":
			linux = data
		case ".cmdline":
			cmdline = data
		case ".initrd":
			initrd = data
		}
	}
	kernel, err := PEHash(linux)
	if err != nil {
		return nil, fmt.Errorf("hashing the .linux section: %w", err)
	}
	events = append(events, Event{PCR: 4, Type: evEFIBootServicesApplication, Digest: kernel, Description: "kernel, .linux (Authenticode)"})
	opts, err := loadOptions(cmdline)
	if err != nil {
		return nil, err
	}
	events = append(events, Event{PCR: 9, Type: evEventTag, Digest: sha256.Sum256(opts), Description: "LOADED_IMAGE::LoadOptions (.cmdline as UTF-16)"})
	if initrd != nil {
		events = append(events, Event{PCR: 9, Type: evEventTag, Digest: sha256.Sum256(initrd), Description: "Linux initrd"})
	}
	// The events of one PCR keep their order; PCRs are independent.
	sort.SliceStable(events, func(i, j int) bool { return events[i].PCR < events[j].PCR })
	return events, nil
}

// loadOptions is the kernel command line as systemd-stub v252 passes it to
// the kernel in LoadOptions: the .cmdline section up to its first NUL,
// control characters turned into spaces and trailing white space removed
// (mangle_stub_cmdline), as UTF-16LE with a terminating NUL. Only ASCII is
// accepted: the stub decodes UTF-8, which this prediction does not model.
func loadOptions(section []byte) ([]byte, error) {
	if i := indexByte(section, 0); i >= 0 {
		section = section[:i]
	}
	s := make([]byte, 0, len(section))
	for _, c := range section {
		if c >= 0x80 {
			return nil, fmt.Errorf("kernel command line: byte %#x is not ASCII", c)
		}
		if c < 0x20 || c == 0x7f {
			c = ' '
		}
		s = append(s, c)
	}
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	out := make([]byte, 0, 2*len(s)+2)
	for _, c := range s {
		out = append(out, c, 0)
	}
	return append(out, 0, 0), nil
}

// Section returns the content of a section of a PE image as loaded (what
// systemd-stub measures), and false when there is none.
func Section(img []byte, name string) ([]byte, bool, error) {
	f, err := parsePE(img)
	if err != nil {
		return nil, false, err
	}
	return f.section(img, name)
}

// Replay extends the events' digests into zeroed SHA-256 PCRs, in order,
// and returns the value of every PCR in pcrs.
func Replay(events []Event, pcrs []int) map[int][32]byte {
	out := make(map[int][32]byte, len(pcrs))
	for _, p := range pcrs {
		out[p] = [32]byte{}
	}
	for _, e := range events {
		if _, ok := out[e.PCR]; !ok {
			continue
		}
		out[e.PCR] = Extend(out[e.PCR], e.Digest)
	}
	return out
}

// Extend is TPM2_PCR_Extend for SHA-256: SHA-256(pcr ‖ digest).
func Extend(pcr, digest [32]byte) [32]byte {
	return sha256.Sum256(append(pcr[:], digest[:]...))
}

// SortedPCRs returns the keys of m in order.
func SortedPCRs[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}
