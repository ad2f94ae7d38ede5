package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/latch"
)

const policyFromNodeUsage = `Usage:
  cloister policy from-node --node HOST:PORT --variant tpm|tdx [--pcrs LIST | --rtmrs LIST]
                            [--policy FILE] [flags]

Write a BOOTSTRAP policy from the values a running node reports: trust on
first use. The node's evidence is still checked for everything except its
measurements (its attestation key must chain to the configured roots, the
quote must be bound to this connection), but its measurements are accepted
whatever they are: nothing checks what that node runs. If it was already
tampered with, so is the policy.

The policy is labelled loudly: its name starts with "UNVERIFIED-first-boot",
its header comment says where the values came from, and every command that
uses it prints a warning. Before production, compare every value with the
values predicted from your image build, then rename it with
'cloister policy set --name'.

The cluster-ID latch (tpm pcr[15], tdx rtmr[3]) cannot be pinned: it
differs per cluster and 'cloister verify --cluster-dir' checks it.

The policy goes to --policy FILE (which must not exist yet) or to stdout.

Examples:
  cloister policy from-node --node 10.0.0.5:9100 --variant tpm --pcrs 0-7,9 \
      --tpm-ak-roots ak-ca.pem --policy bootstrap-policy.yaml
  cloister policy from-node --node 10.0.0.5:9100 --variant tdx --rtmrs 0-2
`

type fromNodeOptions struct {
	node    nodeFlags
	anchors anchorFlags
	variant string
	pcrs    string
	rtmrs   string
	out     string
	name    string
}

func policyFromNodeCommand() *command {
	return &command{
		name:    "policy from-node",
		summary: "write an UNVERIFIED bootstrap policy from a node's current values",
		usage:   policyFromNodeUsage,
		setup: func(e *env, fs *flag.FlagSet) func(context.Context) error {
			var o fromNodeOptions
			o.node.register(fs, "its attested port", time.Minute)
			o.anchors.register(fs)
			fs.StringVar(&o.variant, "variant", "tpm", "the node's attestation `variant`: tpm or tdx")
			fs.StringVar(&o.pcrs, "pcrs", "0-9", "tpm PCRs to pin, a `list` like 0-7,9")
			fs.StringVar(&o.rtmrs, "rtmrs", "0-2", "tdx RTMRs to pin (besides MRTD), a `list` like 0-2")
			fs.StringVar(&o.out, "policy", "", "write the policy to this new `file` (default: stdout)")
			fs.StringVar(&o.name, "name", "", "policy `name` after the "+bootstrapNamePrefix+"- prefix (default: the node and the time)")
			return func(ctx context.Context) error { return runPolicyFromNode(ctx, e, o) }
		},
	}
}

func runPolicyFromNode(ctx context.Context, e *env, o fromNodeOptions) error {
	const cmd = "policy from-node"
	if err := o.node.check(cmd); err != nil {
		return err
	}
	// The bootstrap policy accepts any value of the chosen registers: each
	// is pinned to zeros in warn mode, so that a mismatch is only a warning.
	var probe policy.Policy
	probe.Version = policy.Version
	var regs []int
	var err error
	switch attestation.Variant(o.variant) {
	case attestation.VariantTPM:
		if regs, err = parseIndexList(o.pcrs, 23, latch.PCR, "pcr"); err != nil {
			return usageErrorf(cmd, "--pcrs: %v", err)
		}
		probe.TPM = &policy.TPM{PCRs: map[int]policy.Value{}}
		for _, i := range regs {
			probe.TPM.PCRs[i] = policy.Value{Want: make([]byte, 32), Mode: policy.Warn}
		}
	case attestation.VariantTDX:
		if regs, err = parseIndexList(o.rtmrs, 3, latch.RTMR, "rtmr"); err != nil {
			return usageErrorf(cmd, "--rtmrs: %v", err)
		}
		probe.TDX = &policy.TDX{MRTD: policy.Value{Want: make([]byte, 48), Mode: policy.Warn}, RTMRs: map[int]policy.Value{}}
		for _, i := range regs {
			probe.TDX.RTMRs[i] = policy.Value{Want: make([]byte, 48), Mode: policy.Warn}
		}
	default:
		return failf(exitUsage, []string{"for sev-snp, set the measurement with 'cloister policy set --snp-measurement' and write minimumTCB by hand"},
			"--variant %q: from-node supports tpm and tdx", o.variant)
	}
	if o.out != "" {
		if _, err := os.Lstat(o.out); err == nil {
			return failf(exitLocal, []string{"update an existing policy with 'cloister policy set'"}, "%s exists; refusing to overwrite it with a bootstrap policy", o.out)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fail(exitLocal, err)
		}
	}
	validators, err := o.anchors.validators(&probe, e)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, o.node.timeout)
	defer cancel()
	node, err := dialAttested(o.node.node, validators)
	if err != nil {
		return err
	}
	defer node.Close()
	claims, _, err := node.attest(ctx)
	if err != nil {
		return err
	}

	now := e.now().UTC()
	name := o.name
	if name == "" {
		host := o.node.node
		if i := strings.LastIndex(host, ":"); i >= 0 {
			host = host[:i]
		}
		name = fmt.Sprintf("%s-%s", sanitizeName(host), now.Format("20060102T150405Z"))
	}
	name = bootstrapNamePrefix + "-" + sanitizeName(name)
	doc, err := bootstrapPolicy(name, o.node.node, now, claims, regs)
	if err != nil {
		return err
	}
	if _, err := policy.Parse(doc); err != nil {
		return fmt.Errorf("internal error: the bootstrap policy does not parse: %w", err)
	}
	warnf(e.stderr, "this policy TRUSTS what node %s runs now (trust on first use); nothing verified its measurements", o.node.node)
	if o.out == "" {
		_, err := e.stdout.Write(doc)
		return err
	}
	f, err := os.OpenFile(o.out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fail(exitLocal, fmt.Errorf("writing %s: %w", o.out, err))
	}
	_, werr := f.Write(doc)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return fail(exitLocal, fmt.Errorf("writing %s: %w", o.out, err))
	}
	fmt.Fprintf(e.stderr, "bootstrap policy %q written to %s; review it with 'cloister policy show --policy %s'\n", name, o.out, o.out)
	return nil
}

// bootstrapPolicy writes the policy document with its warning header.
func bootstrapPolicy(name, node string, now time.Time, c *attestation.Claims, regs []int) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `# UNVERIFIED BOOTSTRAP POLICY: trust on first use.
# These values were READ from node %s at %s
# (%s, hardware ID %s). Its attestation key chained to the configured
# roots, but nothing checked WHAT it runs: if it was tampered with, so is
# this policy. Compare every value with the values predicted from your
# image build before production, then rename the policy.
version: %d
name: %q
`, sanitizeName(node), now.Format(time.RFC3339), c.Variant, hex.EncodeToString(c.HardwareID), policy.Version, name)
	value := func(claim string) (string, error) {
		v, ok := c.Measurements[claim]
		if !ok || len(v) == 0 {
			return "", failf(exitNodeRefused, nil, "the node's verified evidence has no %s", claim)
		}
		return hex.EncodeToString(v), nil
	}
	switch c.Variant {
	case attestation.VariantTPM:
		b.WriteString("tpm:\n  pcrs:\n")
		for _, i := range regs {
			v, err := value(fmt.Sprintf("pcr[%d]", i))
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "    %q: {value: %q}\n", strconv.Itoa(i), v)
		}
	case attestation.VariantTDX:
		v, err := value("mrtd")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "tdx:\n  mrtd: {value: %q}\n  rtmrs:\n", v)
		for _, i := range regs {
			v, err := value(fmt.Sprintf("rtmr[%d]", i))
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "    %q: {value: %q}\n", strconv.Itoa(i), v)
		}
	default:
		return nil, failf(exitRefused, nil, "the node attested with %s, not the requested variant", c.Variant)
	}
	return b.Bytes(), nil
}

// parseIndexList reads "0-7,9" into sorted, distinct indexes in 0..max,
// refusing the latch register.
func parseIndexList(s string, max, latchIndex int, what string) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("%q is not an index or a range", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("%q is not a range", part)
			}
		}
		if a < 0 || b > max {
			return nil, fmt.Errorf("%q: indexes go from 0 to %d", part, max)
		}
		for i := a; i <= b; i++ {
			if i == latchIndex {
				return nil, fmt.Errorf("%s[%d] is the cluster-ID latch: it differs per cluster and cannot be pinned ('cloister verify --cluster-dir' checks it)", what, i)
			}
			if !seen[i] {
				seen[i] = true
				out = append(out, i)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// sanitizeName keeps letters, digits, '.', '-' and '_' of a name.
func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '-'
	}, s)
}
