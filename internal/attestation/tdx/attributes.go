package tdx

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
)

// TD_ATTRIBUTES bits (Intel TDX Module ABI), read as a little-endian uint64.
const (
	// tdAttrTUD is the "TD under debug" group, bits 0–7: DEBUG (bit 0),
	// the off-TD profiling bits and reserved bits of the group. Intel treats
	// a TD with any of them set as untrusted: the host can inspect or
	// influence it.
	tdAttrTUD = 0xff
	// tdAttrLASS (linear address space separation), tdAttrPKS (supervisor
	// protection keys) and tdAttrKL (key locker) only enable features that
	// restrict the guest itself: accepted either way.
	tdAttrLASS = 1 << 27
	tdAttrPKS  = 1 << 30
	tdAttrKL   = 1 << 31
	// tdAttrSEPTVEDisable keeps EPT violations on private memory from
	// raising #VE in the guest. Accepted either way: Linux guests refuse to
	// run with such #VEs enabled (they panic unless the attribute is set or
	// they can disable the #VEs themselves through TD_CTLS, which newer
	// kernels do, so a genuine TD may well have it clear), and the guest
	// kernel is what the policy's RTMRs measure.
	tdAttrSEPTVEDisable = 1 << 28
	// tdAttrMigratable and tdAttrPerfmon must be clear unless the policy
	// allows them (allowMigratable, allowPerfmon).
	tdAttrMigratable = 1 << 29
	tdAttrPerfmon    = 1 << 63
	// tdAttrKnown are the bits this package decides on; any other bit is
	// reserved (or newer than this code) and refused.
	tdAttrKnown = tdAttrTUD | tdAttrLASS | tdAttrSEPTVEDisable | tdAttrMigratable | tdAttrPKS | tdAttrKL | tdAttrPerfmon
)

// XFAM masks of the TDX module (as in go-tdx-guest's validate package): x87
// and SSE (bits 0, 1) must be set; bits outside xfamFixed0 must be clear.
const (
	xfamFixed1 = 0x00000003
	xfamFixed0 = 0x0006dbe7
)

// Check names of this file, in *attestation.CheckError.
const (
	checkDebug     = "debug"
	checkTDAttrs   = "td-attributes"
	checkXFAMValue = "xfam"
	checkSEAMAttrs = "seam-attributes"
)

// checkTDAttributes applies the policy's decisions to TD_ATTRIBUTES: the
// TUD group ("debug"), then reserved and policy-controlled bits
// ("td-attributes").
func checkTDAttributes(pol *policy.TDX, raw []byte) error {
	attrs := binary.LittleEndian.Uint64(raw)
	got := fmt.Sprintf("TD_ATTRIBUTES %#016x", attrs)
	if tud := attrs & tdAttrTUD; tud != 0 {
		return reject(checkDebug, "TD_ATTRIBUTES bits 0-7 (TUD group: DEBUG, off-TD debug and profiling) clear", fmt.Sprintf("%s (TUD bits %#02x)", got, tud), nil)
	}
	if reserved := attrs &^ tdAttrKnown; reserved != 0 {
		return reject(checkTDAttrs, "reserved TD_ATTRIBUTES bits clear", fmt.Sprintf("%s (reserved bits %#x)", got, reserved), nil)
	}
	var problems []string
	if attrs&tdAttrMigratable != 0 && !pol.AllowMigratable {
		problems = append(problems, "MIGRATABLE (bit 29) clear (or tdx.allowMigratable)")
	}
	if attrs&tdAttrPerfmon != 0 && !pol.AllowPerfmon {
		problems = append(problems, "PERFMON (bit 63) clear (or tdx.allowPerfmon)")
	}
	if len(problems) > 0 {
		return reject(checkTDAttrs, strings.Join(problems, "; "), got, nil)
	}
	return nil
}

// checkXFAM compares XFAM with the policy's pinned value, or, without one,
// with the TDX module's fixed masks.
func checkXFAM(pol *policy.TDX, raw []byte) (warning string, err error) {
	if pol.XFAM != nil {
		return pol.XFAM.Check(attestation.VariantTDX, checkXFAMValue, raw)
	}
	xfam := binary.LittleEndian.Uint64(raw)
	if xfam&xfamFixed1 != xfamFixed1 || xfam&^xfamFixed0 != 0 {
		return "", reject(checkXFAMValue, fmt.Sprintf("XFAM with bits %#x set and none outside %#x (or pin tdx.xfam)", xfamFixed1, xfamFixed0), fmt.Sprintf("XFAM %#016x", xfam), nil)
	}
	return "", nil
}

// checkHostSet checks MRCONFIGID, MROWNER and MROWNERCONFIG: values the host
// sets at TD creation and the TDX module does not measure. An unpinned one
// must be all zero, so no configuration rides along unchecked.
func checkHostSet(pol *policy.TDX, body *pb.TDQuoteBody) (warnings []string, err error) {
	for _, f := range []struct {
		name string
		want *policy.Value
		got  []byte
	}{
		{"mrconfigid", pol.MRConfigID, body.GetMrConfigId()},
		{"mrowner", pol.MROwner, body.GetMrOwner()},
		{"mrownerconfig", pol.MROwnerConfig, body.GetMrOwnerConfig()},
	} {
		if f.want != nil {
			warning, err := f.want.Check(attestation.VariantTDX, f.name, f.got)
			if err != nil {
				return nil, err
			}
			if warning != "" {
				warnings = append(warnings, warning)
			}
			continue
		}
		if !bytes.Equal(f.got, make([]byte, len(f.got))) {
			return nil, reject(f.name, "all zero (not pinned by the policy)", hex.EncodeToString(f.got), nil)
		}
	}
	return warnings, nil
}

// checkSEAMAttributes requires SEAMATTRIBUTES to be zero: a non-zero value
// is a TDX module in debug mode.
func checkSEAMAttributes(raw []byte) error {
	if !bytes.Equal(raw, make([]byte, len(raw))) {
		return reject(checkSEAMAttrs, "all zero (a production TDX module)", hex.EncodeToString(raw), nil)
	}
	return nil
}
