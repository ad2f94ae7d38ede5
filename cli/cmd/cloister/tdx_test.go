package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
	"github.com/cloister-dev/cloister/internal/latch"
)

// TestVerifyTDXLatch checks the latch of the tdx variant (rtmr[3]) with a
// REAL tdx validator and quotes from a FAKE Intel-shaped chain.
func TestVerifyTDXLatch(t *testing.T) {
	dir, secrets := newClusterDir(t)
	otherDir, _ := newClusterDir(t)
	clusterID, err := secrets.ClusterID()
	if err != nil {
		t.Fatal(err)
	}
	var body tdxtest.Body
	for i := range body.MRTD {
		body.MRTD[i] = 0x5c
	}
	copy(body.RTMRs[3][:], latch.ExpectedTDX(clusterID))
	node := startTDXNode(t, body, nodeServices{})
	pol := filepath.Join(t.TempDir(), "tdx.yaml")
	doc := fmt.Sprintf("version: 1\nname: tdx\ntdx:\n  mrtd: {value: %q}\n", hex.EncodeToString(body.MRTD[:]))
	if err := os.WriteFile(pol, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, append([]string{"verify", "--cluster-dir", dir, "-o", "json"}, node.trustArgs(pol)...)...)
	r.wantCode(t, exitOK)
	var rep verifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Variant != "tdx" || rep.Latch == nil || !rep.Latch.Match || rep.Latch.Register != "rtmr[3]" {
		t.Fatalf("report = %+v, latch %+v", rep, rep.Latch)
	}

	r = runCLI(t, append([]string{"verify", "--cluster-dir", otherDir}, node.trustArgs(pol)...)...)
	r.wantCode(t, exitLatch)
	if !strings.Contains(r.stderr, "check: rtmr[3]") || !strings.Contains(r.stderr, "got:   "+hex.EncodeToString(body.RTMRs[3][:])) {
		t.Fatalf("stderr:\n%s", r.stderr)
	}

	t.Run("from-node reads mrtd and rtmrs", func(t *testing.T) {
		r := runCLI(t, "policy", "from-node", "--node", node.addr, "--variant", "tdx", "--rtmrs", "0-2", "--tdx-roots", node.caFile)
		r.wantCode(t, exitOK)
		p, err := policy.Parse([]byte(r.stdout))
		if err != nil {
			t.Fatalf("%v\n%s", err, r.stdout)
		}
		if hex.EncodeToString(p.TDX.MRTD.Want) != hex.EncodeToString(body.MRTD[:]) || len(p.TDX.RTMRs) != 3 {
			t.Fatalf("bootstrap policy:\n%s", r.stdout)
		}
	})
}
