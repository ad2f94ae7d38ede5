package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/latch"
)

const wrongPCR = "abababababababababababababababababababababababababababababababab"

// TestVerify attests a REAL tpm node (simulator, real attested TLS) with
// policies that pass, warn and refuse, and checks the claims printed, the
// failed check shown with want/got, and the exit codes.
func TestVerify(t *testing.T) {
	node := startTPMNode(t, nodeServices{})
	pcrs := node.pcrs(t)
	good := writeTPMPolicy(t, "good", map[int]pcrPolicy{0: {value: pcrs[0]}, 4: {value: pcrs[4]}})

	t.Run("claims as text", func(t *testing.T) {
		r := runCLI(t, append([]string{"verify"}, node.trustArgs(good)...)...)
		r.wantCode(t, exitOK)
		for _, want := range []string{"attestation  verified", "variant      tpm", "pcr[0]", "pcr[15]", "pcr[23]", "status       bootstrapper starting"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
			}
		}
		if strings.Index(r.stdout, "pcr[2] ") > strings.Index(r.stdout, "pcr[10]") {
			t.Errorf("measurements not in numeric order:\n%s", r.stdout)
		}
	})

	t.Run("claims as json", func(t *testing.T) {
		r := runCLI(t, append([]string{"verify", "-o", "json"}, node.trustArgs(good)...)...)
		r.wantCode(t, exitOK)
		var rep verifyReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
		}
		if !rep.Verified || rep.Variant != "tpm" || len(rep.HardwareID) != 64 || rep.Failure != nil {
			t.Fatalf("report = %+v", rep)
		}
		if len(rep.Measurements) != 24 || rep.Measurements[4].Name != "pcr[4]" || rep.Measurements[4].Value != pcrs[4] {
			t.Fatalf("measurements = %+v, want 24 with pcr[4] = %s", rep.Measurements, pcrs[4])
		}
	})

	t.Run("claims as yaml", func(t *testing.T) {
		r := runCLI(t, append([]string{"verify", "-o", "yaml"}, node.trustArgs(good)...)...)
		r.wantCode(t, exitOK)
		if !strings.Contains(r.stdout, "verified: true\n") || !strings.Contains(r.stdout, "variant: tpm\n") {
			t.Fatalf("yaml report:\n%s", r.stdout)
		}
	})

	t.Run("warn mode mismatch passes with a warning", func(t *testing.T) {
		pol := writeTPMPolicy(t, "warn", map[int]pcrPolicy{0: {value: pcrs[0]}, 7: {value: wrongPCR, warn: true}})
		r := runCLI(t, append([]string{"verify"}, node.trustArgs(pol)...)...)
		r.wantCode(t, exitOK)
		if !strings.Contains(r.stdout, "policy warnings:\n  tpm: pcr[7]: want "+wrongPCR+", got "+pcrs[7]) {
			t.Fatalf("no warning for pcr[7]:\n%s", r)
		}
	})
}

// TestVerifyRefused checks that a node failing the policy exits 3 and shows
// the failed check with the expected and the actual value, one attack or
// misconfiguration per case.
func TestVerifyRefused(t *testing.T) {
	node := startTPMNode(t, nodeServices{})
	pcrs := node.pcrs(t)
	other := startOtherCA(t)

	tests := []struct {
		name      string
		policy    map[int]pcrPolicy
		akRoots   string
		wantCheck string
		wantWant  string
		wantGot   string
	}{
		{name: "node runs other firmware (pcr[4] differs)", policy: map[int]pcrPolicy{0: {value: pcrs[0]}, 4: {value: wrongPCR}}, wantCheck: "pcr[4]", wantWant: wrongPCR, wantGot: pcrs[4]},
		{name: "node not latched yet but policy pins pcr[15]", policy: map[int]pcrPolicy{15: {value: hex.EncodeToString(latch.ExpectedTPM(make([]byte, 32)))}}, wantCheck: "pcr[15]", wantGot: pcrs[15]},
		{name: "AK certified by another CA", policy: map[int]pcrPolicy{0: {value: pcrs[0]}}, akRoots: other, wantCheck: "ak-chain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pol := writeTPMPolicy(t, "refuse", tc.policy)
			args := node.trustArgs(pol)
			if tc.akRoots != "" {
				args = []string{"--node", node.addr, "--policy", pol, "--tpm-ak-roots", tc.akRoots}
			}
			r := runCLI(t, append([]string{"verify"}, args...)...)
			r.wantCode(t, exitRefused)
			if r.stdout != "" {
				t.Errorf("text mode printed claims of a refused node:\n%s", r.stdout)
			}
			if !strings.Contains(r.stderr, "check:   "+tc.wantCheck+"\n") {
				t.Errorf("stderr does not name check %q:\n%s", tc.wantCheck, r.stderr)
			}
			if tc.wantWant != "" && !strings.Contains(r.stderr, "want:    "+tc.wantWant+"\n") {
				t.Errorf("stderr lacks want %s:\n%s", tc.wantWant, r.stderr)
			}
			if tc.wantGot != "" && !strings.Contains(r.stderr, "got:     "+tc.wantGot+"\n") {
				t.Errorf("stderr lacks got %s:\n%s", tc.wantGot, r.stderr)
			}
			if !strings.Contains(r.stderr, "\nhint: ") {
				t.Errorf("no hint:\n%s", r.stderr)
			}

			// The same failure as JSON on stdout, for scripts.
			r = runCLI(t, append([]string{"verify", "-o", "json"}, args...)...)
			r.wantCode(t, exitRefused)
			var rep verifyReport
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, r)
			}
			if rep.Verified || rep.Failure == nil || rep.Failure.Check != tc.wantCheck || rep.Measurements != nil {
				t.Fatalf("report = %+v, failure %+v; want a failure at %q and no claims", rep, rep.Failure, tc.wantCheck)
			}
			if tc.wantGot != "" && (rep.Failure.Got != tc.wantGot || rep.Failure.Variant != "tpm") {
				t.Fatalf("failure = %+v, want got %s", rep.Failure, tc.wantGot)
			}
		})
	}
}

// TestVerifyLatch checks the cluster-ID latch against a cluster directory:
// at its reset value, extended with this cluster's ID, with another's.
func TestVerifyLatch(t *testing.T) {
	ctx := context.Background()
	node := startTPMNode(t, nodeServices{})
	pol := writeTPMPolicy(t, "latch", map[int]pcrPolicy{0: {value: node.pcrs(t)[0]}})
	dir, secrets := newClusterDir(t)
	otherDir, _ := newClusterDir(t)
	clusterID, err := secrets.ClusterID()
	if err != nil {
		t.Fatal(err)
	}
	verify := func(dir string, extra ...string) cliResult {
		return runCLI(t, append(append([]string{"verify", "--cluster-dir", dir}, node.trustArgs(pol)...), extra...)...)
	}

	// A fresh node: the latch is at its reset value.
	r := verify(dir)
	r.wantCode(t, exitLatch)
	if !strings.Contains(r.stderr, "not latched to this cluster") || !strings.Contains(r.stderr, "got:   "+strings.Repeat("00", 32)) {
		t.Fatalf("reset latch not reported:\n%s", r)
	}

	if err := latch.NewTPM(node.sim).Extend(ctx, clusterID); err != nil {
		t.Fatal(err)
	}
	r = verify(dir, "-o", "json")
	r.wantCode(t, exitOK)
	var rep verifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(latch.ExpectedTPM(clusterID))
	if rep.Latch == nil || !rep.Latch.Match || rep.Latch.Register != "pcr[15]" || rep.Latch.Got != want || rep.Latch.ClusterID != hex.EncodeToString(clusterID) {
		t.Fatalf("latch = %+v, want a match at pcr[15] = %s", rep.Latch, want)
	}
	r = verify(dir)
	r.wantCode(t, exitOK)
	if !strings.Contains(r.stdout, "latch        ok: pcr[15] holds cluster ID "+hex.EncodeToString(clusterID)) {
		t.Fatalf("text report:\n%s", r)
	}

	// Another cluster's directory: the node is not latched to it.
	r = verify(otherDir, "-o", "json")
	r.wantCode(t, exitLatch)
	rep = verifyReport{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Latch == nil || rep.Latch.Match || rep.Latch.Got != want || rep.Latch.Want == want {
		t.Fatalf("latch = %+v, want a mismatch", rep.Latch)
	}
	if !strings.Contains(r.stderr, "want:  "+rep.Latch.Want) || !strings.Contains(r.stderr, "got:   "+want) {
		t.Fatalf("mismatch not shown with want/got:\n%s", r)
	}
}

// TestVerifyConnectionFailures checks the exit codes of nodes that cannot
// be verified for reasons other than the policy.
func TestVerifyConnectionFailures(t *testing.T) {
	t.Run("nothing listens", func(t *testing.T) {
		pol := writeTPMPolicy(t, "any", map[int]pcrPolicy{0: {value: wrongPCR}})
		ca := startOtherCA(t)
		r := runCLI(t, "verify", "--node", closedAddr(t), "--policy", pol, "--tpm-ak-roots", ca)
		r.wantCode(t, exitUnavailable)
		if !strings.Contains(r.stderr, "unreachable") || !strings.Contains(r.stderr, "hint: ") {
			t.Fatalf("stderr:\n%s", r.stderr)
		}
	})
	t.Run("FAKE join-service-like node refuses the unattested CLI", func(t *testing.T) {
		node := startTPMNode(t, nodeServices{requireAttestedClient: true})
		pol := writeTPMPolicy(t, "any", map[int]pcrPolicy{0: {value: node.pcrs(t)[0]}})
		r := runCLI(t, append([]string{"verify"}, node.trustArgs(pol)...)...)
		r.wantCode(t, exitNodeRefused)
		if !strings.Contains(r.stderr, "refused this unattested client") {
			t.Fatalf("stderr:\n%s", r.stderr)
		}
	})
}

// TestExplainHandshake checks the mapping of handshake errors to exit codes
// by error type, not text.
func TestExplainHandshake(t *testing.T) {
	check := &attestation.CheckError{Variant: attestation.VariantTPM, Check: "pcr[4]", Want: "aa", Got: "bb"}
	tests := []struct {
		name     string
		err      error
		wantCode int
	}{
		{name: "failed check", err: errors.Join(errors.New("atls: verifying server"), check), wantCode: exitRefused},
		{name: "wrong variant", err: attestation.ErrWrongVariant, wantCode: exitRefused},
		{name: "garbage evidence", err: attestation.ErrMalformed, wantCode: exitRefused},
		{name: "node sent no evidence", err: atls.ErrUnattestedPeer, wantCode: exitRefused},
		{name: "node refused the CLI", err: &atls.RefusedError{Peer: "server", UntrustedReason: "\x1b[31mno"}, wantCode: exitNodeRefused},
		{name: "connection reset", err: errors.New("read: connection reset by peer"), wantCode: exitUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := explainHandshake("node:1", tc.err)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != tc.wantCode {
				t.Fatalf("explainHandshake = %v, want exit %d", err, tc.wantCode)
			}
			if strings.ContainsRune(err.Error(), '\x1b') {
				t.Fatalf("untrusted escape sequence in %q", err)
			}
			var ce *attestation.CheckError
			if tc.name == "failed check" && (!errors.As(err, &ce) || ce.Check != "pcr[4]") {
				t.Fatalf("the CheckError is lost: %v", err)
			}
		})
	}
}

// TestVerifyTimeoutAndInterrupt checks a node that accepts connections but
// never answers (exit 2 after --timeout) and an interrupted run (exit 130).
func TestVerifyTimeoutAndInterrupt(t *testing.T) {
	pol := writeTPMPolicy(t, "any", map[int]pcrPolicy{0: {value: wrongPCR}})
	ca := startOtherCA(t)
	silent := silentListener(t)

	r := runCLI(t, "verify", "--node", silent, "--policy", pol, "--tpm-ak-roots", ca, "--timeout", "300ms")
	r.wantCode(t, exitUnavailable)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr strings.Builder
	if code := run(ctx, []string{"verify", "--node", silent, "--policy", pol, "--tpm-ak-roots", ca}, &stdout, &stderr); code != exitInterrupted {
		t.Fatalf("exit %d, want %d: %s", code, exitInterrupted, stderr.String())
	}
}
