package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/latch"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

const verifyUsage = `Usage:
  cloister verify --node HOST:PORT --policy FILE [--cluster-dir DIR] [-o text|json|yaml]

Attest a node against the policy and print what its verified evidence says:
its variant, hardware ID, every measurement and the policy warnings (values
in warn mode that did not match). A failed check is shown with the expected
and the actual value, and exits 3.

With --cluster-dir, also check the node's cluster-ID latch: a node that
holds this cluster's secrets has extended pcr[15] (tpm) or rtmr[3] (tdx)
with the cluster ID. A latch at another value exits 4: the node does not
belong to this cluster (or has not received its secrets since it booted).
sev-snp has no latch register.

--node is the node's attested port (init or recovery); its plain status
port does not attest.

With -o json or -o yaml, the report is printed on stdout even when a check
fails ("verified": false, "failure": {...}); its fields are stable.

Examples:
  cloister verify --node 10.0.0.5:9100 --policy policy.yaml --tpm-ak-roots ak-ca.pem
  cloister verify --node 10.0.0.7:9100 --policy policy.yaml --tpm-ak-roots ak-ca.pem \
      --cluster-dir ./cloister-cluster -o json
`

type verifyOptions struct {
	node       nodeFlags
	trust      trustFlags
	clusterDir string
	output     outputFormat
}

func verifyCommand() *command {
	return &command{
		name:    "verify",
		summary: "attest a node, print its claims and check its cluster-ID latch",
		usage:   verifyUsage,
		setup: func(e *env, fs *flag.FlagSet) func(context.Context) error {
			var o verifyOptions
			o.node.register(fs, "its attested port", time.Minute)
			o.trust.register(fs)
			fs.StringVar(&o.clusterDir, "cluster-dir", "", "check the latch against this cluster's `directory` (from 'cloister init'); empty: no latch check")
			registerOutput(fs, &o.output)
			return func(ctx context.Context) error { return runVerify(ctx, e, o) }
		},
	}
}

// verifyReport is verify's output. Its json names are stable.
type verifyReport struct {
	Node         string              `json:"node"`
	Verified     bool                `json:"verified"`
	Failure      *failureReport      `json:"failure,omitempty"`
	Variant      string              `json:"variant,omitempty"`
	HardwareID   string              `json:"hardwareID,omitempty"`
	Measurements []measurementReport `json:"measurements,omitempty"`
	Warnings     []string            `json:"warnings,omitempty"`
	Latch        *latchReport        `json:"latch,omitempty"`
	Status       *statusReport       `json:"status,omitempty"`
}

type failureReport struct {
	Variant string `json:"variant,omitempty"`
	Check   string `json:"check,omitempty"`
	Want    string `json:"want,omitempty"`
	Got     string `json:"got,omitempty"`
	Message string `json:"message"`
}

type measurementReport struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type latchReport struct {
	Register  string `json:"register"`
	ClusterID string `json:"clusterID"`
	Want      string `json:"want"`
	Got       string `json:"got"`
	Match     bool   `json:"match"`
}

func runVerify(ctx context.Context, e *env, o verifyOptions) error {
	if err := o.node.check("verify"); err != nil {
		return err
	}
	_, validators, err := o.trust.load("verify", e)
	if err != nil {
		return err
	}
	var clusterID []byte
	if o.clusterDir != "" {
		secrets, err := clusterDir(o.clusterDir).secrets(ctx)
		if err != nil {
			return err
		}
		clusterID, err = secrets.ClusterID()
		secrets.Zero()
		if err != nil {
			return fail(exitLocal, fmt.Errorf("deriving the cluster ID: %w", err))
		}
	}

	ctx, cancel := context.WithTimeout(ctx, o.node.timeout)
	defer cancel()
	node, err := dialAttested(o.node.node, validators)
	if err != nil {
		return err
	}
	defer node.Close()
	claims, st, err := node.attest(ctx)
	if err != nil {
		if o.output != outputText {
			var ce *attestation.CheckError
			var ee *exitError
			if errors.As(err, &ee) && ee.code == exitRefused {
				f := &failureReport{Message: ee.err.Error()}
				if errors.As(err, &ce) {
					f = &failureReport{Variant: string(ce.Variant), Check: ce.Check, Want: ce.Want, Got: ce.Got, Message: ce.Error()}
				}
				if perr := printData(e.stdout, o.output, &verifyReport{Node: o.node.node, Failure: f}, nil); perr != nil {
					return perr
				}
			}
		}
		return err
	}

	r := claimsReport(o.node.node, claims, st)
	if clusterID != nil {
		r.Latch = checkLatch(claims, clusterID)
	}
	if err := printData(e.stdout, o.output, r, func(w io.Writer) { printVerifyText(w, r) }); err != nil {
		return err
	}
	if r.Latch != nil && !r.Latch.Match {
		if r.Latch.Register == "" {
			return failf(exitLatch, []string{"the join service accepts such nodes only with allowVariantsWithoutLatch"},
				"node %s attests with %s, which has no cluster-ID latch: its cluster membership cannot be checked", o.node.node, claims.Variant)
		}
		return failf(exitLatch, []string{
			"a node that booted and has not received its secrets yet shows the reset value",
			"a node latched to another cluster must be rebooted (and reinstalled) before it can join this one",
		}, "node %s is not latched to this cluster\n  check: %s\n  want:  %s\n  got:   %s", o.node.node, r.Latch.Register, r.Latch.Want, r.Latch.Got)
	}
	return nil
}

func claimsReport(node string, c *attestation.Claims, st *statusv1.GetResponse) *verifyReport {
	r := &verifyReport{
		Node:       node,
		Verified:   true,
		Variant:    string(c.Variant),
		HardwareID: hex.EncodeToString(c.HardwareID),
		Warnings:   slices.Clone(c.Warnings),
	}
	names := make([]string, 0, len(c.Measurements))
	for n := range c.Measurements {
		names = append(names, n)
	}
	slices.SortFunc(names, compareMeasurementNames)
	for _, n := range names {
		r.Measurements = append(r.Measurements, measurementReport{Name: n, Value: hex.EncodeToString(c.Measurements[n])})
	}
	if st != nil {
		r.Status = newStatusReport(st)
	}
	return r
}

// compareMeasurementNames orders "pcr[2]" before "pcr[10]".
func compareMeasurementNames(a, b string) int {
	pa, ia := splitIndex(a)
	pb, ib := splitIndex(b)
	if c := strings.Compare(pa, pb); c != 0 {
		return c
	}
	return ia - ib
}

func splitIndex(name string) (string, int) {
	prefix, rest, ok := strings.Cut(name, "[")
	if !ok {
		return name, -1
	}
	i, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
	if err != nil {
		return name, -1
	}
	return prefix, i
}

// latchRegister names the claim that holds a variant's latch, "" when the
// variant has none.
func latchRegister(v attestation.Variant) (string, func([]byte) []byte) {
	switch v {
	case attestation.VariantTPM:
		return fmt.Sprintf("pcr[%d]", latch.PCR), latch.ExpectedTPM
	case attestation.VariantTDX:
		return fmt.Sprintf("rtmr[%d]", latch.RTMR), latch.ExpectedTDX
	}
	return "", nil
}

func checkLatch(c *attestation.Claims, clusterID []byte) *latchReport {
	reg, expected := latchRegister(c.Variant)
	r := &latchReport{Register: reg, ClusterID: hex.EncodeToString(clusterID)}
	if reg == "" {
		return r
	}
	want := expected(clusterID)
	got := c.Measurements[reg]
	r.Want = hex.EncodeToString(want)
	r.Got = attestation.Hex(got)
	r.Match = bytes.Equal(want, got)
	return r
}

func printVerifyText(w io.Writer, r *verifyReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "node\t%s\n", r.Node)
	fmt.Fprintf(tw, "attestation\tverified\n")
	fmt.Fprintf(tw, "variant\t%s\n", r.Variant)
	fmt.Fprintf(tw, "hardware ID\t%s\n", r.HardwareID)
	if r.Status != nil {
		fmt.Fprintf(tw, "status\t%s %s\n", r.Status.Component, r.Status.Phase)
	}
	if r.Latch != nil {
		switch {
		case r.Latch.Register == "":
			fmt.Fprintf(tw, "latch\tnone: %s has no latch register\n", r.Variant)
		case r.Latch.Match:
			fmt.Fprintf(tw, "latch\tok: %s holds cluster ID %s\n", r.Latch.Register, r.Latch.ClusterID)
		default:
			fmt.Fprintf(tw, "latch\tMISMATCH: %s does not hold cluster ID %s\n", r.Latch.Register, r.Latch.ClusterID)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "measurements:")
	for _, m := range r.Measurements {
		note := ""
		if r.Latch != nil && m.Name == r.Latch.Register {
			note = "  (latch)"
		}
		fmt.Fprintf(tw, "  %s\t%s%s\n", m.Name, m.Value, note)
	}
	tw.Flush()
	if len(r.Warnings) > 0 {
		fmt.Fprintln(w, "policy warnings:")
		for _, warning := range r.Warnings {
			fmt.Fprintf(w, "  %s\n", warning)
		}
	}
}
