package policy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/cloister-dev/cloister/internal/strictyaml"
)

// MaxDocumentSize bounds the document before it is parsed.
const MaxDocumentSize = 1 << 20

// file mirrors the document. Pointers mean "not set".
type file struct {
	Version     *int             `json:"version"`
	Name        string           `json:"name"`
	TPM         *tpmFile         `json:"tpm"`
	SNP         *snpFile         `json:"sev-snp"`
	TDX         *tdxFile         `json:"tdx"`
	InsecureDev *insecureDevFile `json:"insecure-dev"`
}

type valueFile struct {
	Value *string `json:"value"`
	Mode  string  `json:"mode"`
}

type tpmFile struct {
	PCRs map[string]valueFile `json:"pcrs"`
}

type snpFile struct {
	Measurement *valueFile  `json:"measurement"`
	MinimumTCB  *snpTCBFile `json:"minimumTCB"`
	Products    []string    `json:"products"`
}

type snpTCBFile struct {
	Bootloader *uint8 `json:"bootloader"`
	TEE        *uint8 `json:"tee"`
	SNP        *uint8 `json:"snp"`
	Microcode  *uint8 `json:"microcode"`
}

type tdxFile struct {
	MRTD             *valueFile           `json:"mrtd"`
	RTMRs            map[string]valueFile `json:"rtmrs"`
	MinimumTEETCBSVN *string              `json:"minimumTeeTcbSvn"`
	XFAM             *valueFile           `json:"xfam"`
	MRConfigID       *valueFile           `json:"mrConfigId"`
	MROwner          *valueFile           `json:"mrOwner"`
	MROwnerConfig    *valueFile           `json:"mrOwnerConfig"`
	AllowMigratable  bool                 `json:"allowMigratable"`
	AllowPerfmon     bool                 `json:"allowPerfmon"`
}

type insecureDevFile struct {
	// IUnderstandThisProvesNothing must be true: the insecure-dev variant is
	// impossible to enable by accident.
	IUnderstandThisProvesNothing bool `json:"iUnderstandThisProvesNothing"`
}

// Parse reads a policy document (YAML or JSON). Every problem is reported,
// each with the path of the offending field.
func Parse(doc []byte) (*Policy, error) {
	if len(doc) > MaxDocumentSize {
		return nil, fmt.Errorf("policy: document is %d bytes, limit %d", len(doc), MaxDocumentSize)
	}
	// strictyaml, not sigs.k8s.io/yaml: encoding/json alone would fill
	// "minimumTCB" from "MinimumTCB" and let 4 and "4" both name PCR 4,
	// the last spelling silently winning.
	var f file
	if err := strictyaml.Decode(doc, &f); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p := &parser{}
	pol := p.policy(&f)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return pol, nil
}

type parser struct{ errs []error }

func (p *parser) fail(path, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("policy: %s: %s", path, fmt.Sprintf(format, args...)))
}

func (p *parser) policy(f *file) *Policy {
	pol := &Policy{Name: f.Name}
	switch {
	case f.Version == nil:
		p.fail("version", "missing (this build reads version %d)", Version)
	case *f.Version != Version:
		p.fail("version", "want %d, got %d", Version, *f.Version)
	default:
		pol.Version = *f.Version
	}
	if f.TPM != nil {
		pol.TPM = &TPM{PCRs: p.indexedValues("tpm.pcrs", f.TPM.PCRs, 23, 32)}
		if len(pol.TPM.PCRs) == 0 {
			p.fail("tpm.pcrs", "no PCRs: a tpm section must pin at least one PCR")
		}
	}
	if f.SNP != nil {
		pol.SNP = p.snp(f.SNP)
	}
	if f.TDX != nil {
		pol.TDX = p.tdx(f.TDX)
	}
	if f.InsecureDev != nil {
		if !f.InsecureDev.IUnderstandThisProvesNothing {
			p.fail("insecure-dev.iUnderstandThisProvesNothing", "must be true to allow evidence that proves nothing")
		}
		pol.InsecureDev = &InsecureDev{consented: f.InsecureDev.IUnderstandThisProvesNothing}
	}
	if f.TPM == nil && f.SNP == nil && f.TDX == nil && f.InsecureDev == nil {
		p.fail("(document)", "no variant section: add tpm, sev-snp or tdx")
	}
	return pol
}

// snpProducts are the SEV-SNP product lines the snp validator decodes.
var snpProducts = map[string]bool{"Milan": true, "Genoa": true}

func (p *parser) snp(f *snpFile) *SNP {
	s := &SNP{}
	if f.Measurement == nil {
		p.fail("sev-snp.measurement", "missing")
	} else {
		s.Measurement = p.value("sev-snp.measurement", *f.Measurement, 48)
	}
	if f.MinimumTCB == nil {
		p.fail("sev-snp.minimumTCB", "missing: set bootloader, tee, snp and microcode")
	} else {
		t := f.MinimumTCB
		for _, c := range []struct {
			name string
			v    *uint8
			dst  *uint8
		}{{"bootloader", t.Bootloader, &s.MinimumTCB.Bootloader}, {"tee", t.TEE, &s.MinimumTCB.TEE}, {"snp", t.SNP, &s.MinimumTCB.SNP}, {"microcode", t.Microcode, &s.MinimumTCB.Microcode}} {
			if c.v == nil {
				p.fail("sev-snp.minimumTCB."+c.name, "missing")
				continue
			}
			*c.dst = *c.v
		}
	}
	for i, prod := range f.Products {
		if !snpProducts[prod] {
			p.fail(fmt.Sprintf("sev-snp.products[%d]", i), "unknown or unsupported product %q (supported: Milan, Genoa)", prod)
		}
	}
	s.Products = f.Products
	return s
}

func (p *parser) tdx(f *tdxFile) *TDX {
	t := &TDX{}
	if f.MRTD == nil {
		p.fail("tdx.mrtd", "missing")
	} else {
		t.MRTD = p.value("tdx.mrtd", *f.MRTD, 48)
	}
	t.RTMRs = p.indexedValues("tdx.rtmrs", f.RTMRs, 3, 48)
	if f.MinimumTEETCBSVN != nil {
		t.MinimumTEETCBSVN = p.hex("tdx.minimumTeeTcbSvn", *f.MinimumTEETCBSVN, 16)
	}
	optional := func(path string, f *valueFile, size int) *Value {
		if f == nil {
			return nil
		}
		v := p.value(path, *f, size)
		return &v
	}
	t.XFAM = optional("tdx.xfam", f.XFAM, 8)
	t.MRConfigID = optional("tdx.mrConfigId", f.MRConfigID, 48)
	t.MROwner = optional("tdx.mrOwner", f.MROwner, 48)
	t.MROwnerConfig = optional("tdx.mrOwnerConfig", f.MROwnerConfig, 48)
	t.AllowMigratable, t.AllowPerfmon = f.AllowMigratable, f.AllowPerfmon
	return t
}

// indexedValues parses a map from register index to value; indexes must be
// decimal in 0..maxIndex.
func (p *parser) indexedValues(path string, in map[string]valueFile, maxIndex, size int) map[int]Value {
	out := make(map[int]Value, len(in))
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i > maxIndex || strconv.Itoa(i) != k {
			p.fail(fmt.Sprintf("%s[%s]", path, k), "index must be a decimal number 0..%d", maxIndex)
			continue
		}
		out[i] = p.value(fmt.Sprintf("%s[%d]", path, i), in[k], size)
	}
	return out
}

func (p *parser) value(path string, f valueFile, size int) Value {
	v := Value{Mode: Enforce}
	switch Mode(f.Mode) {
	case "", Enforce:
	case Warn:
		v.Mode = Warn
	default:
		p.fail(path+".mode", "want %q or %q, got %q", Enforce, Warn, f.Mode)
	}
	if f.Value == nil {
		p.fail(path+".value", "missing")
		return v
	}
	v.Want = p.hex(path+".value", *f.Value, size)
	return v
}

func (p *parser) hex(path, s string, size int) []byte {
	if len(s) != 2*size {
		p.fail(path, "want %d hex characters, got %d", 2*size, len(s))
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		p.fail(path, "not hex: %v", err)
		return nil
	}
	return b
}
