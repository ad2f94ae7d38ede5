package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/snp"
)

// defaultClusterDir holds a cluster's secrets and kubeconfig, relative to
// the working directory.
const defaultClusterDir = "cloister-cluster"

// fileList is a repeatable flag of file names.
type fileList []string

func (l *fileList) String() string { return strings.Join(*l, ",") }
func (l *fileList) Set(s string) error {
	if s == "" {
		return errors.New("empty file name")
	}
	*l = append(*l, s)
	return nil
}

// outputFormat is the -o flag: text (for people), json or yaml (for
// programs; their fields are stable).
type outputFormat string

const (
	outputText outputFormat = "text"
	outputJSON outputFormat = "json"
	outputYAML outputFormat = "yaml"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Set(s string) error {
	switch f := outputFormat(s); f {
	case outputText, outputJSON, outputYAML:
		*o = f
		return nil
	}
	return fmt.Errorf("want text, json or yaml, got %q", s)
}

func registerOutput(fs *flag.FlagSet, o *outputFormat) {
	*o = outputText
	fs.Var(o, "o", "output `format`: text, json or yaml")
	fs.Var(o, "output", "output `format`: text, json or yaml (same as -o)")
}

// nodeFlags say which node to talk to and how long to wait for it.
type nodeFlags struct {
	node    string
	timeout time.Duration
}

func (n *nodeFlags) register(fs *flag.FlagSet, port string, timeout time.Duration) {
	fs.StringVar(&n.node, "node", "", "the node's `HOST:PORT` ("+port+")")
	fs.DurationVar(&n.timeout, "timeout", timeout, "give up after this `duration`")
}

func (n *nodeFlags) check(cmd string) error {
	if n.node == "" {
		return usageErrorf(cmd, "--node is required")
	}
	if n.timeout <= 0 {
		return usageErrorf(cmd, "--timeout must be positive, got %v", n.timeout)
	}
	return nil
}

// trustFlags are the policy and the trust anchors that verify a node.
type trustFlags struct {
	policy string
	anchorFlags
}

func (t *trustFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.policy, "policy", "", "reference values the node must match (YAML or JSON `file`)")
	t.anchorFlags.register(fs)
}

// anchorFlags are the trust anchors of the attestation variants.
type anchorFlags struct {
	tpmEKRoots       fileList
	tpmAKRoots       fileList
	tdxRoots         fileList
	snpCertCache     string
	allowInsecureDev bool
}

func (t *anchorFlags) register(fs *flag.FlagSet) {
	fs.Var(&t.tpmEKRoots, "tpm-ek-roots", "PEM `file` of TPM manufacturer CAs for EK certificates (repeatable; no default)")
	fs.Var(&t.tpmAKRoots, "tpm-ak-roots", "PEM `file` of platform CAs for TPM AK certificates (repeatable; no default)")
	fs.Var(&t.tdxRoots, "tdx-roots", "PEM `file` replacing Intel's SGX root CA (repeatable; default: Intel's root, built in)")
	fs.StringVar(&t.snpCertCache, "snp-cert-cache", "", "`directory` of cached VCEKs for sev-snp evidence without one (read only, never fetched; AMD's roots are built in)")
	fs.BoolVar(&t.allowInsecureDev, "allow-insecure-dev", false, "accept the insecure-dev variant if the policy allows it: evidence that proves NOTHING, for local development only")
}

// load reads the policy and builds the validators it allows from the
// anchors. Its errors are local problems (exit 6) with hints.
func (t *trustFlags) load(cmd string, e *env) (*policy.Policy, attestation.Validators, error) {
	if t.policy == "" {
		return nil, nil, usageErrorf(cmd, "--policy is required")
	}
	pol, err := readPolicy(t.policy)
	if err != nil {
		return nil, nil, err
	}
	if isBootstrapPolicy(pol) {
		warnf(e.stderr, "policy %q was read from a node on its first boot (trust on first use): nothing checked what that node ran", pol.Name)
	}
	v, err := t.validators(pol, e)
	if err != nil {
		return nil, nil, err
	}
	return pol, v, nil
}

func readPolicy(path string) (*policy.Policy, error) {
	b, err := readLimited(path, policy.MaxDocumentSize)
	if err != nil {
		return nil, fail(exitLocal, fmt.Errorf("reading policy: %w", err))
	}
	pol, err := policy.Parse(b)
	if err != nil {
		return nil, fail(exitLocal, fmt.Errorf("policy %s is invalid:\n%w", path, err), "fix the fields named above, or edit them with 'cloister policy set'")
	}
	return pol, nil
}

func (t *anchorFlags) validators(pol *policy.Policy, e *env) (attestation.Validators, error) {
	var a platform.Anchors
	var err error
	if a.TPMEKRoots, err = platform.LoadCertPool(t.tpmEKRoots); err != nil {
		return nil, fail(exitLocal, fmt.Errorf("--tpm-ek-roots: %w", err))
	}
	if a.TPMAKRoots, err = platform.LoadCertPool(t.tpmAKRoots); err != nil {
		return nil, fail(exitLocal, fmt.Errorf("--tpm-ak-roots: %w", err))
	}
	if a.TDXRoots, err = platform.LoadCertPool(t.tdxRoots); err != nil {
		return nil, fail(exitLocal, fmt.Errorf("--tdx-roots: %w", err))
	}
	if t.snpCertCache != "" {
		cache, err := snp.NewCertCache(t.snpCertCache, snp.CertCacheOptions{})
		if err != nil {
			return nil, fail(exitLocal, fmt.Errorf("--snp-cert-cache: %w", err))
		}
		a.SNPCertGetter = cache
	}
	if t.allowInsecureDev {
		a.AllowInsecureDev = true
		if pol.InsecureDev.Allowed() {
			warnf(e.stderr, "INSECURE: --allow-insecure-dev with a policy that allows insecure-dev: a node that proves NOTHING will be trusted")
		}
	}
	v, err := platform.Validators(pol, a)
	if err != nil {
		var hints []string
		switch {
		case pol.TPM != nil && a.TPMEKRoots == nil && a.TPMAKRoots == nil:
			hints = append(hints, "the policy allows tpm: pass --tpm-ak-roots (cloud AK certificates) or --tpm-ek-roots (TPM manufacturer CAs)")
		case pol.InsecureDev != nil && !a.AllowInsecureDev:
			hints = append(hints, "remove insecure-dev from the policy; for local development only, pass --allow-insecure-dev")
		}
		return nil, fail(exitLocal, fmt.Errorf("building validators from the policy: %w", err), hints...)
	}
	return v, nil
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
