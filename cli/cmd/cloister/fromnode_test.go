package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// TestPolicyFromNode reads a bootstrap policy from a REAL simulator node
// (whose PCR 4 was extended like a boot would), checks that it pins the
// node's values under a loud label, and that the node then verifies
// against it, with a warning.
func TestPolicyFromNode(t *testing.T) {
	node := startTPMNode(t, nodeServices{eventLog: tpmtest.EventLog(tpmtest.Event{PCR: 4, Data: []byte("a kernel")})})
	pcrs := node.pcrs(t)
	out := filepath.Join(t.TempDir(), "bootstrap.yaml")

	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, rand: nil, now: func() time.Time { return time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC) }}
	code := runEnv(t.Context(), e, []string{"policy", "from-node", "--node", node.addr, "--tpm-ak-roots", node.caFile, "--pcrs", "0-7,9", "--policy", out})
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, e.stderr)
	}
	if !strings.Contains(e.stderr.(*bytes.Buffer).String(), "TRUSTS what node") {
		t.Errorf("no warning on stderr: %s", e.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "# UNVERIFIED BOOTSTRAP POLICY") {
		t.Errorf("no warning header:\n%s", b)
	}
	pol, err := policy.Parse(b)
	if err != nil {
		t.Fatalf("bootstrap policy does not parse: %v\n%s", err, b)
	}
	if pol.Name != "UNVERIFIED-first-boot-127.0.0.1-20261127T060000Z" {
		t.Errorf("name = %q", pol.Name)
	}
	if len(pol.TPM.PCRs) != 9 {
		t.Errorf("pinned %d PCRs, want 9 (0-7, 9)", len(pol.TPM.PCRs))
	}
	for i, v := range pol.TPM.PCRs {
		if got := pcrs[i]; v.Mode != policy.Enforce || got != strings.ToLower(hexOf(v.Want)) {
			t.Errorf("pcr[%d] = %x (%s), node has %s", i, v.Want, v.Mode, got)
		}
	}

	r := runCLI(t, append([]string{"verify"}, node.trustArgs(out)...)...)
	r.wantCode(t, exitOK)
	if !strings.Contains(r.stderr, "first boot (trust on first use)") {
		t.Errorf("verify with a bootstrap policy gives no warning:\n%s", r.stderr)
	}
	r = runCLI(t, "policy", "show", "--policy", out)
	r.wantCode(t, exitOK)
	if !strings.Contains(r.stderr, "first boot") {
		t.Errorf("policy show gives no warning:\n%s", r.stderr)
	}

	t.Run("existing file is not overwritten", func(t *testing.T) {
		r := runCLI(t, "policy", "from-node", "--node", node.addr, "--tpm-ak-roots", node.caFile, "--policy", out)
		r.wantCode(t, exitLocal)
		after, _ := os.ReadFile(out)
		if !bytes.Equal(after, b) {
			t.Error("the file changed")
		}
	})
	t.Run("to stdout", func(t *testing.T) {
		r := runCLI(t, "policy", "from-node", "--node", node.addr, "--tpm-ak-roots", node.caFile, "--pcrs", "4")
		r.wantCode(t, exitOK)
		if !strings.Contains(r.stdout, `"4": {value: "`+pcrs[4]+`"}`) {
			t.Errorf("stdout:\n%s", r.stdout)
		}
	})
	t.Run("AK of an untrusted CA is still refused", func(t *testing.T) {
		r := runCLI(t, "policy", "from-node", "--node", node.addr, "--tpm-ak-roots", startOtherCA(t))
		r.wantCode(t, exitRefused)
		if !strings.Contains(r.stderr, "check:   ak-chain") {
			t.Errorf("stderr:\n%s", r.stderr)
		}
	})
}
