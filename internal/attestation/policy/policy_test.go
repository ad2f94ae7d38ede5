package policy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation"
)

func TestParseFullDocument(t *testing.T) {
	doc, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(doc)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if p.Version != 1 || p.Name != "example-2026-11" {
		t.Errorf("version/name = %d/%q", p.Version, p.Name)
	}
	if got := p.TPM.PCRs[7].Mode; got != Warn {
		t.Errorf("tpm pcr 7 mode = %q, want warn", got)
	}
	if got := p.TPM.PCRs[4].Mode; got != Enforce {
		t.Errorf("tpm pcr 4 mode = %q, want enforce (the default)", got)
	}
	if want := bytes.Repeat([]byte{0xcd}, 32); !bytes.Equal(p.TPM.PCRs[4].Want, want) {
		t.Errorf("tpm pcr 4 = %x", p.TPM.PCRs[4].Want)
	}
	if p.SNP.MinimumTCB != (SNPTCB{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115}) {
		t.Errorf("snp tcb = %+v", p.SNP.MinimumTCB)
	}
	if len(p.TDX.RTMRs) != 2 || p.TDX.RTMRs[2].Mode != Warn || len(p.TDX.MinimumTEETCBSVN) != 16 {
		t.Errorf("tdx = %+v", p.TDX)
	}
	if p.TDX.XFAM == nil || len(p.TDX.XFAM.Want) != 8 || p.TDX.MRConfigID == nil || p.TDX.MROwner.Mode != Warn || p.TDX.MROwnerConfig != nil {
		t.Errorf("tdx host-set values = xfam %v, mrConfigId %v, mrOwner %v, mrOwnerConfig %v", p.TDX.XFAM, p.TDX.MRConfigID, p.TDX.MROwner, p.TDX.MROwnerConfig)
	}
	if p.TDX.AllowMigratable || !p.TDX.AllowPerfmon {
		t.Errorf("tdx attribute decisions = %+v", p.TDX)
	}
	if p.InsecureDev != nil {
		t.Error("insecure-dev allowed without being asked for")
	}
}

// TestParseTDXDefaultsAreStrict: a tdx section that says nothing about the
// host-set values and the optional attributes gets the strict choices.
func TestParseTDXDefaultsAreStrict(t *testing.T) {
	p, err := Parse([]byte(`version: 1
tdx: {mrtd: {value: "` + strings.Repeat("ab", 48) + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.TDX.XFAM != nil || p.TDX.MRConfigID != nil || p.TDX.MROwner != nil || p.TDX.MROwnerConfig != nil || p.TDX.AllowMigratable || p.TDX.AllowPerfmon {
		t.Errorf("defaults = %+v", p.TDX)
	}
}

func TestParseInsecureDevNeedsExplicitConsent(t *testing.T) {
	doc, err := os.ReadFile("testdata/insecure-dev.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(doc)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if p.InsecureDev == nil || !strings.Contains(p.String(), "INSECURE-DEV") {
		t.Errorf("insecure-dev section not parsed or not loud in String(): %s", p)
	}
	if _, err := Parse([]byte(`{"version": 1, "insecure-dev": {}}`)); err == nil {
		t.Error("insecure-dev accepted without iUnderstandThisProvesNothing")
	}
}

// TestParseRejects names one malformed document per case and the field path
// the error must name.
func TestParseRejects(t *testing.T) {
	h48 := strings.Repeat("ab", 48)
	tcb := `minimumTCB: {bootloader: 1, tee: 1, snp: 1, microcode: 1}`
	tests := []struct {
		name     string
		doc      string
		wantPath string
	}{
		{"empty document", ``, "version"},
		{"missing version", `tpm: {pcrs: {"4": {value: "` + strings.Repeat("00", 32) + `"}}}`, "version"},
		{"future version", `version: 2` + "\n" + `tpm: {pcrs: {"4": {value: "` + strings.Repeat("00", 32) + `"}}}`, "version: want 1, got 2"},
		{"no variant section", `version: 1`, "no variant section"},
		{"unknown top-level field", `version: 1` + "\n" + `tmp: {}`, `unknown field "tmp"`},
		{"unknown nested field", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, mrtdd: x}`, `unknown field "mrtdd"`},
		{"pcr value one hex digit short", `version: 1` + "\n" + `tpm: {pcrs: {"4": {value: "` + strings.Repeat("00", 31) + `0"}}}`, "tpm.pcrs[4].value: want 64 hex characters, got 63"},
		{"pcr value not hex", `version: 1` + "\n" + `tpm: {pcrs: {"4": {value: "` + strings.Repeat("zz", 32) + `"}}}`, "tpm.pcrs[4].value: not hex"},
		{"pcr index out of range", `version: 1` + "\n" + `tpm: {pcrs: {"24": {value: "` + strings.Repeat("00", 32) + `"}}}`, "tpm.pcrs[24]"},
		{"pcr index not canonical", `version: 1` + "\n" + `tpm: {pcrs: {"04": {value: "` + strings.Repeat("00", 32) + `"}}}`, "tpm.pcrs[04]"},
		{"pcr without value", `version: 1` + "\n" + `tpm: {pcrs: {"4": {mode: warn}}}`, "tpm.pcrs[4].value: missing"},
		{"unknown mode", `version: 1` + "\n" + `tpm: {pcrs: {"4": {value: "` + strings.Repeat("00", 32) + `", mode: audit}}}`, "tpm.pcrs[4].mode"},
		{"tpm section without pcrs", `version: 1` + "\n" + `tpm: {}`, "tpm.pcrs: no PCRs"},
		{"snp without measurement", `version: 1` + "\n" + `sev-snp: {` + tcb + `}`, "sev-snp.measurement: missing"},
		{"snp without minimum tcb", `version: 1` + "\n" + `sev-snp: {measurement: {value: "` + h48 + `"}}`, "sev-snp.minimumTCB: missing"},
		{"snp tcb component missing", `version: 1` + "\n" + `sev-snp: {measurement: {value: "` + h48 + `"}, minimumTCB: {bootloader: 1, tee: 1, snp: 1}}`, "sev-snp.minimumTCB.microcode"},
		{"snp tcb component overflows", `version: 1` + "\n" + `sev-snp: {measurement: {value: "` + h48 + `"}, minimumTCB: {bootloader: 256, tee: 1, snp: 1, microcode: 1}}`, "bootloader"},
		{"snp unknown product", `version: 1` + "\n" + `sev-snp: {measurement: {value: "` + h48 + `"}, ` + tcb + `, products: [Naples]}`, "sev-snp.products[0]"},
		{"tdx rtmr index out of range", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, rtmrs: {"4": {value: "` + h48 + `"}}}`, "tdx.rtmrs[4]"},
		{"tdx rtmr one hex digit short", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, rtmrs: {"2": {value: "` + h48[1:] + `"}}}`, "tdx.rtmrs[2].value: want 96 hex characters, got 95"},
		{"tdx tcb svn wrong size", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, minimumTeeTcbSvn: "00"}`, "tdx.minimumTeeTcbSvn"},
		{"tdx xfam wrong size", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, xfam: {value: "e71a06"}}`, "tdx.xfam.value: want 16 hex characters, got 6"},
		{"tdx mrConfigId wrong size", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, mrConfigId: {value: "00"}}`, "tdx.mrConfigId.value: want 96 hex characters"},
		{"tdx mrOwner without value", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, mrOwner: {mode: warn}}`, "tdx.mrOwner.value: missing"},
		{"tdx mrOwnerConfig not hex", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, mrOwnerConfig: {value: "` + strings.Repeat("zz", 48) + `"}}`, "tdx.mrOwnerConfig.value: not hex"},
		{"tdx allowMigratable not a bool", `version: 1` + "\n" + `tdx: {mrtd: {value: "` + h48 + `"}, allowMigratable: "yes please"}`, "allowMigratable"},
		{"not yaml at all", "\x00\x01{[", "policy"},
		{"oversized document", strings.Repeat("#", MaxDocumentSize+1), "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse accepted it: %v", p)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with an error")
			}
			// The field path is the contract of this package's errors: an
			// operator must see which line of the document to fix.
			if !strings.Contains(err.Error(), tt.wantPath) {
				t.Errorf("error %q does not name %q", err, tt.wantPath)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	doc := `version: 1
tpm: {pcrs: {"4": {value: "00"}, "5": {value: "11", mode: sometimes}}}`
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"tpm.pcrs[4].value", "tpm.pcrs[5].value", "tpm.pcrs[5].mode"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

func TestValueCheck(t *testing.T) {
	want := []byte{1, 2, 3}
	enforce := Value{Want: want, Mode: Enforce}
	if w, err := enforce.Check(attestation.VariantTPM, "pcr[4]", []byte{1, 2, 3}); w != "" || err != nil {
		t.Errorf("match: warning %q, err %v", w, err)
	}
	_, err := enforce.Check(attestation.VariantTPM, "pcr[4]", []byte{9})
	var ce *attestation.CheckError
	if !errors.As(err, &ce) || ce.Check != "pcr[4]" || ce.Want != "010203" || ce.Got != "09" {
		t.Errorf("enforce mismatch: %v", err)
	}
	warn := Value{Want: want, Mode: Warn}
	w, err := warn.Check(attestation.VariantTPM, "pcr[7]", nil)
	if err != nil || !strings.Contains(w, "pcr[7]") || !strings.Contains(w, "(none)") {
		t.Errorf("warn mismatch: warning %q, err %v", w, err)
	}
}

func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds in testdata/ (%v)", err)
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := Parse(doc)
		if (p == nil) == (err == nil) {
			t.Fatalf("Parse returned policy %v and error %v", p, err)
		}
		if err != nil {
			return
		}
		// An accepted policy has only well-formed values.
		check := func(where string, v Value, size int) {
			if len(v.Want) != size || (v.Mode != Enforce && v.Mode != Warn) {
				t.Fatalf("%s: accepted malformed value %+v", where, v)
			}
		}
		if p.TPM != nil {
			for i, v := range p.TPM.PCRs {
				check("pcr", v, 32)
				if i < 0 || i > 23 {
					t.Fatalf("pcr index %d", i)
				}
			}
		}
		if p.SNP != nil {
			check("measurement", p.SNP.Measurement, 48)
		}
		if p.TDX != nil {
			check("mrtd", p.TDX.MRTD, 48)
			for i, v := range p.TDX.RTMRs {
				check("rtmr", v, 48)
				if i < 0 || i > 3 {
					t.Fatalf("rtmr index %d", i)
				}
			}
		}
	})
}
