package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
)

const policyShowUsage = `Usage:
  cloister policy show --policy FILE [-o text|json|yaml]

Print the policy's reference values as a list an operator can review: one
line per value, with its variant, register, mode and value. "enforce"
refuses a node whose value differs; "warn" lets it through and reports the
difference. A variant without a section is refused. The policy is checked
as the join service checks it: an invalid file is reported field by field.

Examples:
  cloister policy show --policy policy.yaml
  cloister policy show --policy policy.yaml -o json
`

type policyShowOptions struct {
	policy string
	output outputFormat
}

func policyShowCommand() *command {
	return &command{
		name:    "policy show",
		summary: "print the policy's reference values for review",
		usage:   policyShowUsage,
		setup: func(e *env, fs *flag.FlagSet) func(context.Context) error {
			var o policyShowOptions
			fs.StringVar(&o.policy, "policy", "", "policy `file` (YAML or JSON)")
			registerOutput(fs, &o.output)
			return func(context.Context) error { return runPolicyShow(e, o) }
		},
	}
}

// policyReport is policy show's output. Its json names are stable.
type policyReport struct {
	Name    string             `json:"name"`
	Version int                `json:"version"`
	Values  []policyValueEntry `json:"values"`
}

type policyValueEntry struct {
	Variant  string `json:"variant"`
	Register string `json:"register"`
	Mode     string `json:"mode"`
	Value    string `json:"value"`
}

func runPolicyShow(e *env, o policyShowOptions) error {
	if o.policy == "" {
		return usageErrorf("policy show", "--policy is required")
	}
	pol, err := readPolicy(o.policy)
	if err != nil {
		return err
	}
	if isBootstrapPolicy(pol) {
		warnf(e.stderr, "policy %q was read from a node on its first boot (trust on first use): compare every value with the values predicted from your image before trusting it", pol.Name)
	}
	r := newPolicyReport(pol)
	return printData(e.stdout, o.output, r, func(w io.Writer) { printPolicyText(w, r) })
}

func newPolicyReport(pol *policy.Policy) *policyReport {
	r := &policyReport{Name: pol.Name, Version: pol.Version, Values: []policyValueEntry{}}
	add := func(variant, register string, v policy.Value) {
		r.Values = append(r.Values, policyValueEntry{Variant: variant, Register: register, Mode: string(v.Mode), Value: hex.EncodeToString(v.Want)})
	}
	if pol.TPM != nil {
		for _, i := range slices.Sorted(maps.Keys(pol.TPM.PCRs)) {
			add("tpm", fmt.Sprintf("pcr[%d]", i), pol.TPM.PCRs[i])
		}
	}
	if s := pol.SNP; s != nil {
		add("sev-snp", "measurement", s.Measurement)
		t := s.MinimumTCB
		r.Values = append(r.Values, policyValueEntry{Variant: "sev-snp", Register: "minimumTCB", Mode: "minimum",
			Value: fmt.Sprintf("bootloader=%d tee=%d snp=%d microcode=%d", t.Bootloader, t.TEE, t.SNP, t.Microcode)})
		products := "any"
		if len(s.Products) > 0 {
			products = strings.Join(s.Products, ",")
		}
		r.Values = append(r.Values, policyValueEntry{Variant: "sev-snp", Register: "products", Mode: "allow", Value: products})
	}
	if t := pol.TDX; t != nil {
		add("tdx", "mrtd", t.MRTD)
		for _, i := range slices.Sorted(maps.Keys(t.RTMRs)) {
			add("tdx", fmt.Sprintf("rtmr[%d]", i), t.RTMRs[i])
		}
		if t.MinimumTEETCBSVN != nil {
			r.Values = append(r.Values, policyValueEntry{Variant: "tdx", Register: "minimumTeeTcbSvn", Mode: "minimum", Value: hex.EncodeToString(t.MinimumTEETCBSVN)})
		}
	}
	if pol.InsecureDev.Allowed() {
		r.Values = append(r.Values, policyValueEntry{Variant: "insecure-dev", Register: "-", Mode: "allow", Value: "ANY NODE: insecure-dev proves NOTHING"})
	}
	return r
}

func printPolicyText(w io.Writer, r *policyReport) {
	fmt.Fprintf(w, "policy %q (version %d)\n", r.Name, r.Version)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIANT\tREGISTER\tMODE\tVALUE")
	for _, v := range r.Values {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Variant, v.Register, v.Mode, v.Value)
	}
	tw.Flush()
}

const policySetUsage = `Usage:
  cloister policy set --policy FILE [--tpm-pcr N=HEX[:warn]]... [--tdx-mrtd HEX[:warn]]
                      [--tdx-rtmr N=HEX[:warn]]... [--snp-measurement HEX[:warn]] [flags]

Set reference values in a policy file, in place. A value without ":warn"
is enforced. The edited document is checked as the join service checks it
before anything is written; an invalid result is refused and the problems
are named field by field, and the file stays as it was. The file is
replaced atomically (a crash leaves the old or the new file), keeping its
mode, its comments and its format (a JSON file stays JSON, without
comments). A missing file is created (starting from "version: 1").

Examples:
  cloister policy set --policy policy.yaml --tpm-pcr 4=3d45…e1 --tpm-pcr 7=9a01…77:warn
  cloister policy set --policy policy.yaml --tdx-mrtd 5c2e…aa --tdx-rtmr 2=11fe…09
  cloister policy set --policy policy.yaml --remove-tpm-pcr 9 --name prod-2026-12
`

func policySetCommand() *command {
	return &command{
		name:    "policy set",
		summary: "set reference values in a policy file (checked, atomic)",
		usage:   policySetUsage,
		setup: func(e *env, fs *flag.FlagSet) func(context.Context) error {
			var o policyEdit
			fs.StringVar(&o.path, "policy", "", "policy `file` to edit (YAML or JSON)")
			fs.StringVar(&o.name, "name", "", "rename the policy (its `name` shows in audit logs)")
			fs.Var(&indexedValueList{list: &o.tpmPCRs}, "tpm-pcr", "`N=HEX[:warn]`: set tpm PCR N to HEX (64 hex characters), in warn mode with :warn (repeatable)")
			fs.Var(&indexedValueList{list: &o.tdxRTMRs}, "tdx-rtmr", "`N=HEX[:warn]`: set tdx RTMR N (0-3) to HEX (96 hex characters), in warn mode with :warn (repeatable)")
			fs.Var(&plainValue{v: &o.tdxMRTD}, "tdx-mrtd", "`HEX[:warn]`: set the tdx MRTD (96 hex characters)")
			fs.Var(&plainValue{v: &o.snpMeasurement}, "snp-measurement", "`HEX[:warn]`: set the sev-snp launch measurement (96 hex characters)")
			fs.Var(&indexList{list: &o.removeTPMPCRs}, "remove-tpm-pcr", "remove tpm PCR `N` from the policy (repeatable)")
			fs.Var(&indexList{list: &o.removeTDXRTMRs}, "remove-tdx-rtmr", "remove tdx RTMR `N` from the policy (repeatable)")
			return func(context.Context) error { return runPolicySet(e, &o) }
		},
	}
}

func runPolicySet(e *env, o *policyEdit) error {
	if o.path == "" {
		return usageErrorf("policy set", "--policy is required")
	}
	if o.empty() {
		return usageErrorf("policy set", "nothing to set: give at least one of --tpm-pcr, --tdx-mrtd, --tdx-rtmr, --snp-measurement, --remove-tpm-pcr, --remove-tdx-rtmr, --name")
	}
	changes, err := o.apply()
	if err != nil {
		return err
	}
	for _, c := range changes {
		fmt.Fprintf(e.stderr, "%s\n", c)
	}
	fmt.Fprintf(e.stderr, "policy %s updated\n", o.path)
	return nil
}

// bootstrapNamePrefix starts the name of every policy that 'policy
// from-node' writes, so that it stays recognizable wherever it is used.
const bootstrapNamePrefix = "UNVERIFIED-first-boot"

func isBootstrapPolicy(pol *policy.Policy) bool {
	return strings.HasPrefix(pol.Name, bootstrapNamePrefix)
}
