package main

// The REAL cloister CLI, built from this checkout and run as a process,
// against node A's REAL init server: attested TLS on loopback, the TPM
// simulator attesting A with an AK certificate from a FAKE platform CA, A's
// REAL LUKS2 header on a file image, its REAL latch (PCR 15) and the REAL
// join service (jointest, FAKE Kubernetes API) that A's provisioning starts.
// kubeadm is a FAKE (no cluster on the host). The CLI is checked only
// through what an operator sees: its exit code, stdout (-o json where it
// has one) and stderr, and what it leaves in the cluster directory.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cloister-dev/cloister/bootstrapper/internal/initserver"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
	"github.com/cloister-dev/cloister/cli/clitest"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/latch"
	initv1 "github.com/cloister-dev/cloister/proto/init/v1"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// The CLI's -o json documents, with the field names it documents as stable.
type (
	cliFailure struct {
		Variant string `json:"variant"`
		Check   string `json:"check"`
		Want    string `json:"want"`
		Got     string `json:"got"`
		Message string `json:"message"`
	}
	cliMeasurement struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	cliLatchReport struct {
		Register  string `json:"register"`
		ClusterID string `json:"clusterID"`
		Want      string `json:"want"`
		Got       string `json:"got"`
		Match     bool   `json:"match"`
	}
	cliStatus struct {
		Component string `json:"component"`
		Phase     string `json:"phase"`
		Attempts  uint32 `json:"attempts"`
		Since     string `json:"since"`
		LastError string `json:"lastError"`
		DiskUUID  string `json:"diskUUID"`
	}
	cliVerify struct {
		Node         string           `json:"node"`
		Verified     bool             `json:"verified"`
		Failure      *cliFailure      `json:"failure"`
		Variant      string           `json:"variant"`
		HardwareID   string           `json:"hardwareID"`
		Measurements []cliMeasurement `json:"measurements"`
		Warnings     []string         `json:"warnings"`
		Latch        *cliLatchReport  `json:"latch"`
		Status       *cliStatus       `json:"status"`
	}
)

func (v *cliVerify) measurement(name string) string {
	for _, m := range v.Measurements {
		if m.Name == name {
			return m.Value
		}
	}
	return ""
}

func writeTestFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func caPEM(ca *tpmtest.FakePlatformCA) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw})
}

func readSecrets(t *testing.T, path string) *keys.ClusterSecrets {
	t.Helper()
	s, err := keys.FileProvider{Path: path}.ClusterSecrets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sameSecrets(a, b *keys.ClusterSecrets) bool {
	return bytes.Equal(a.MasterSecret, b.MasterSecret) && bytes.Equal(a.MasterSalt, b.MasterSalt) &&
		bytes.Equal(a.MeasurementSecret, b.MeasurementSecret) && bytes.Equal(a.MeasurementSalt, b.MeasurementSalt)
}

// serveGRPC serves g on a loopback port until the test ends.
func serveGRPC(t *testing.T, g *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func TestRealCLIAgainstInitServerWithFakeKubeadm(t *testing.T) {
	cli := clitest.Build(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	files := t.TempDir()

	// Node A: the TPM simulator, AK certificate from a FAKE platform CA.
	simA := tpmtest.Simulator(t)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	issuerA, err := tpm.NewIssuer(simA, tpm.IssuerOptions{AKCertificate: ca.CertifyAK(t, simA)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { issuerA.Close() })
	pcrsA := tpmtest.PCRs(t, simA)
	policyA := tpmPolicy("node-a", map[int][]byte{0: pcrsA[0], 7: pcrsA[7]})
	wrongPCR0 := bytes.Repeat([]byte{0xcd}, 32)
	otherCA := tpmtest.NewFakePlatformCA(t, "another fake platform CA")
	var (
		goodPolicy  = writeTestFile(t, files, "policy.yaml", policyA)
		wrongPolicy = writeTestFile(t, files, "wrong-pcr0.yaml", tpmPolicy("node-a", map[int][]byte{0: wrongPCR0, 7: pcrsA[7]}))
		caFile      = writeTestFile(t, files, "ak-ca.pem", caPEM(ca))
		otherCAFile = writeTestFile(t, files, "other-ak-ca.pem", caPEM(otherCA))
		initSecret  = writeTestFile(t, files, "init-secret.txt", []byte("correct horse battery staple\n"))
		wrongSecret = writeTestFile(t, files, "wrong-init-secret.txt", []byte("incorrect horse\n"))
	)
	secretHash := sha256.Sum256([]byte("correct horse battery staple"))

	a := newDiskNode(t)
	starter := &joinServiceStarter{t: t, stateA: a.stateDir, issuer: issuerA, policy: policyA,
		build: func(p *policy.Policy) (attestation.Validators, error) {
			return platform.Validators(p, platform.Anchors{TPMAKRoots: ca.Pool()})
		}}
	initDone := make(chan error, 1)
	srv, err := initserver.New(a.lock, a.store, a.uuid, "cp-1", a.runFunc(latch.NewTPM(simA), starter, log), log,
		initserver.Options{InitSecretHash: secretHash[:], OnDone: func(err error) { initDone <- err }})
	if err != nil {
		t.Fatal(err)
	}
	nodeCreds, err := atls.NewCredentials(atls.Config{Issuer: issuerA, AcceptUnattestedPeer: true, HandshakeTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// As the bootstrapper's run wires them: init and status on the attested
	// port, status alone on the plain one.
	attested := grpc.NewServer(grpc.Creds(nodeCreds), grpc.MaxRecvMsgSize(4<<10))
	initv1.RegisterInitServiceServer(attested, srv)
	statusv1.RegisterStatusServiceServer(attested, a.tracker)
	plain := grpc.NewServer(grpc.Creds(insecure.NewCredentials()), grpc.MaxRecvMsgSize(1<<10))
	statusv1.RegisterStatusServiceServer(plain, a.tracker)
	addrA, statusA := serveGRPC(t, attested), serveGRPC(t, plain)
	a.tracker.SetDiskUUID(a.uuid)
	a.tracker.SetPhase("waiting-for-init-or-join")

	trust := []string{"--policy", goodPolicy, "--tpm-ak-roots", caFile}
	stillFresh := func(t *testing.T) {
		t.Helper()
		if st := a.store.State(); st.Phase != nodestate.Fresh || a.lock.Holder() != "" || len(a.kubeadm.calls) != 0 {
			t.Fatalf("node A left its fresh state: %+v, lock %q, kubeadm %v", st, a.lock.Holder(), a.kubeadm.calls)
		}
	}

	t.Run("status on the plain port shows A waiting", func(t *testing.T) {
		r := clitest.Run(t, cli, "status", "--node", statusA, "-o", "json")
		var st cliStatus
		clitest.DecodeJSON(t, r, &st)
		if r.Code != clitest.ExitOK || st.Component != "bootstrapper" || st.Phase != "waiting-for-init-or-join" || st.DiskUUID != a.uuid {
			t.Fatalf("status %+v, want bootstrapper waiting-for-init-or-join on disk %s\n%v", st, a.uuid, r)
		}
	})

	t.Run("verify under the policy pinning A's PCRs", func(t *testing.T) {
		r := clitest.Run(t, cli, append([]string{"verify", "--node", addrA, "-o", "json"}, trust...)...)
		var v cliVerify
		clitest.DecodeJSON(t, r, &v)
		if r.Code != clitest.ExitOK || !v.Verified || v.Variant != string(attestation.VariantTPM) || v.HardwareID == "" {
			t.Fatalf("verify: %+v\n%v", v, r)
		}
		for _, i := range []int{0, 7} {
			name := fmt.Sprintf("pcr[%d]", i)
			if got := v.measurement(name); got != hex.EncodeToString(pcrsA[i]) {
				t.Errorf("%s = %q, want A's %x", name, got, pcrsA[i])
			}
		}
		if v.Status == nil || v.Status.Phase != "waiting-for-init-or-join" {
			t.Errorf("status over the attested port: %+v", v.Status)
		}
		// The text form names the variant and the measurements too.
		r = clitest.Run(t, cli, append([]string{"verify", "--node", addrA}, trust...)...)
		if r.Code != clitest.ExitOK || !strings.Contains(r.Stdout, "verified") || !strings.Contains(r.Stdout, "tpm") ||
			!strings.Contains(r.Stdout, "pcr[0]") || !strings.Contains(r.Stdout, hex.EncodeToString(pcrsA[0])) {
			t.Fatalf("verify (text) does not show the variant and pcr[0]:\n%v", r)
		}
	})

	t.Run("verify refuses", func(t *testing.T) {
		tests := []struct {
			name      string
			trust     []string
			wantCheck string
			want, got string // hex, checked when set
		}{
			{name: "pcr[0] pinned to another value", trust: []string{"--policy", wrongPolicy, "--tpm-ak-roots", caFile},
				wantCheck: "pcr[0]", want: hex.EncodeToString(wrongPCR0), got: hex.EncodeToString(pcrsA[0])},
			{name: "AK certificate from an untrusted platform CA", trust: []string{"--policy", goodPolicy, "--tpm-ak-roots", otherCAFile},
				wantCheck: "ak-chain"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := clitest.Run(t, cli, append([]string{"verify", "--node", addrA, "-o", "json"}, tt.trust...)...)
				var v cliVerify
				clitest.DecodeJSON(t, r, &v)
				if r.Code != clitest.ExitRefused || v.Verified || v.Failure == nil || v.Failure.Check != tt.wantCheck {
					t.Fatalf("want exit %d with check %s, got %+v (failure %+v)\n%v", clitest.ExitRefused, tt.wantCheck, v, v.Failure, r)
				}
				if tt.want != "" && (v.Failure.Want != tt.want || v.Failure.Got != tt.got) {
					t.Fatalf("failure %+v, want want=%s got=%s", v.Failure, tt.want, tt.got)
				}
				// The text form shows the check with want and got on stderr.
				r = clitest.Run(t, cli, append([]string{"verify", "--node", addrA}, tt.trust...)...)
				if r.Code != clitest.ExitRefused || !strings.Contains(r.Stderr, "check:   "+tt.wantCheck) {
					t.Fatalf("want exit %d naming check %s on stderr\n%v", clitest.ExitRefused, tt.wantCheck, r)
				}
				if tt.want != "" && (!strings.Contains(r.Stderr, "want:    "+tt.want) || !strings.Contains(r.Stderr, "got:     "+tt.got)) {
					t.Fatalf("stderr does not show want %s and got %s\n%v", tt.want, tt.got, r)
				}
				t.Logf("stderr:\n%s", r.Stderr)
				stillFresh(t)
			})
		}
	})

	t.Run("init refused before A is initialized", func(t *testing.T) {
		tests := []struct {
			name        string
			args        []string
			wantCode    int
			wantSecrets bool // the CLI saved secrets before the node refused
		}{
			{name: "policy A fails: nothing generated, nothing sent",
				args:     []string{"--policy", wrongPolicy, "--tpm-ak-roots", caFile, "--init-secret-file", initSecret},
				wantCode: clitest.ExitRefused},
			{name: "wrong init secret: A refuses the secrets",
				args:     append([]string{"--init-secret-file", wrongSecret}, trust...),
				wantCode: clitest.ExitNodeRefused, wantSecrets: true},
			{name: "no init secret: A refuses the secrets",
				args:     trust,
				wantCode: clitest.ExitNodeRefused, wantSecrets: true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "cluster")
				r := clitest.Run(t, cli, append([]string{"init", "--node", addrA, "--cluster-dir", dir, "--timeout", "60s"}, tt.args...)...)
				if r.Code != tt.wantCode || r.Stdout != "" {
					t.Fatalf("want exit %d and no cluster ID\n%v", tt.wantCode, r)
				}
				_, err := os.Stat(filepath.Join(dir, clitest.SecretsFile))
				if tt.wantSecrets != (err == nil) || (err != nil && !errors.Is(err, fs.ErrNotExist)) {
					t.Fatalf("secrets file: %v, want present=%v", err, tt.wantSecrets)
				}
				stillFresh(t)
			})
		}
	})

	clusterDir := filepath.Join(t.TempDir(), "cluster")
	var clusterID []byte
	if !t.Run("init makes A the first control plane", func(t *testing.T) {
		r := clitest.Run(t, cli, append([]string{"init", "--node", addrA, "--cluster-dir", clusterDir, "--init-secret-file", initSecret,
			"--name", "demo", "--timeout", "60s"}, trust...)...)
		if r.Code != clitest.ExitOK {
			t.Fatalf("init failed\n%v", r)
		}
		select {
		case err := <-initDone:
			if err != nil {
				t.Fatalf("A's provisioning: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("A's init path did not end")
		}

		// The cluster directory: 0700, secrets 0600 and equal to A's.
		secretsPath := filepath.Join(clusterDir, clitest.SecretsFile)
		for path, want := range map[string]fs.FileMode{clusterDir: 0o700, secretsPath: 0o600} {
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != want {
				t.Fatalf("%s: %v, mode %v, want %04o", path, err, fi.Mode(), want)
			}
		}
		local := readSecrets(t, secretsPath)
		onA := readSecrets(t, filepath.Join(a.stateDir, provision.ClusterSecretsFile))
		if !sameSecrets(local, onA) {
			t.Fatal("the cluster directory's secrets differ from those A wrote on its state disk")
		}
		var err error
		if clusterID, err = keys.ClusterID(local.MeasurementSecret, local.MeasurementSalt); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(r.Stdout); got != hex.EncodeToString(clusterID) {
			t.Fatalf("printed cluster ID %q, want %x", got, clusterID)
		}
		kubeconfig, err := os.ReadFile(filepath.Join(clusterDir, "kubeconfig"))
		adminConf, _ := os.ReadFile(filepath.Join(a.etcDir, "admin.conf"))
		if err != nil || len(kubeconfig) == 0 || !bytes.Equal(kubeconfig, adminConf) {
			t.Fatalf("kubeconfig %q (%v), want A's admin.conf %q", kubeconfig, err, adminConf)
		}

		// A's post-init state, as the flow test checks it.
		if st := a.store.State(); st.Phase != nodestate.Joined || a.lock.Holder() != nodestate.PathInit {
			t.Fatalf("A's state %+v, lock %q", st, a.lock.Holder())
		}
		if v, err := latch.NewTPM(simA).Value(context.Background()); err != nil || !bytes.Equal(v, latch.ExpectedTPM(clusterID)) {
			t.Fatalf("A's latch %x (%v), want %x", v, err, latch.ExpectedTPM(clusterID))
		}
		aKey, _ := local.DiskKey(a.uuid, keys.FirstGeneration)
		if _, err := a.dev.CheckKey(aKey); err != nil {
			t.Fatalf("A's disk does not open with the key the cluster directory derives: %v", err)
		}
		if _, err := a.dev.CheckKey(a.oneTime); !errors.Is(err, cryptsetup.ErrKeyRejected) {
			t.Fatalf("A's one-time passphrase still opens its disk: %v", err)
		}
		if len(a.kubeadm.calls) != 1 || a.kubeadm.calls[0] != "init" || starter.service == nil {
			t.Fatalf("kubeadm calls %v, join service started %v", a.kubeadm.calls, starter.service != nil)
		}
	}) {
		return
	}

	// A second init's cluster directory: secrets A never accepted.
	otherDir := filepath.Join(t.TempDir(), "cluster")
	t.Run("second init is refused", func(t *testing.T) {
		onA, _ := os.ReadFile(filepath.Join(a.stateDir, provision.ClusterSecretsFile))
		r := clitest.Run(t, cli, append([]string{"init", "--node", addrA, "--cluster-dir", otherDir, "--init-secret-file", initSecret, "--timeout", "60s"}, trust...)...)
		if r.Code != clitest.ExitNodeRefused || r.Stdout != "" || !strings.Contains(r.Stderr, "node refused") || !strings.Contains(r.Stderr, "init path") {
			t.Fatalf("want exit %d saying A took the init path already\n%v", clitest.ExitNodeRefused, r)
		}
		t.Logf("stderr:\n%s", r.Stderr)
		// The same directory again is refused locally, before A is contacted.
		r = clitest.Run(t, cli, append([]string{"init", "--node", addrA, "--cluster-dir", clusterDir, "--init-secret-file", initSecret}, trust...)...)
		if r.Code != clitest.ExitLocal || !strings.Contains(r.Stderr, "already holds") {
			t.Fatalf("want exit %d refusing to overwrite the cluster directory\n%v", clitest.ExitLocal, r)
		}
		after, _ := os.ReadFile(filepath.Join(a.stateDir, provision.ClusterSecretsFile))
		if !bytes.Equal(onA, after) || len(a.kubeadm.calls) != 1 || a.store.State().Phase != nodestate.Joined {
			t.Fatalf("a refused init changed A: secrets changed %v, kubeadm %v, state %+v", !bytes.Equal(onA, after), a.kubeadm.calls, a.store.State())
		}
	})

	t.Run("verify --cluster-dir finds A latched to the cluster", func(t *testing.T) {
		r := clitest.Run(t, cli, append([]string{"verify", "--node", addrA, "--cluster-dir", clusterDir, "-o", "json"}, trust...)...)
		var v cliVerify
		clitest.DecodeJSON(t, r, &v)
		l := v.Latch
		if r.Code != clitest.ExitOK || l == nil || !l.Match || l.Register != "pcr[15]" || l.ClusterID != hex.EncodeToString(clusterID) ||
			l.Got != hex.EncodeToString(latch.ExpectedTPM(clusterID)) || v.measurement("pcr[15]") != l.Got {
			t.Fatalf("latch %+v, want pcr[15] at cluster ID %x\n%v", l, clusterID, r)
		}
	})

	t.Run("verify --cluster-dir of another cluster exits 4", func(t *testing.T) {
		r := clitest.Run(t, cli, append([]string{"verify", "--node", addrA, "--cluster-dir", otherDir, "-o", "json"}, trust...)...)
		var v cliVerify
		clitest.DecodeJSON(t, r, &v)
		if r.Code != clitest.ExitLatch || v.Latch == nil || v.Latch.Match || v.Latch.Got != hex.EncodeToString(latch.ExpectedTPM(clusterID)) {
			t.Fatalf("want exit %d with a latch mismatch, got %+v\n%v", clitest.ExitLatch, v.Latch, r)
		}
	})

	t.Run("status on the plain port shows A joined", func(t *testing.T) {
		r := clitest.Run(t, cli, "status", "--node", statusA)
		if r.Code != clitest.ExitOK || !strings.Contains(r.Stdout, "bootstrapper") || !strings.Contains(r.Stdout, string(nodestate.Joined)) {
			t.Fatalf("status does not show A %s\n%v", nodestate.Joined, r)
		}
		r = clitest.Run(t, cli, "status", "--node", statusA, "-o", "json")
		var st cliStatus
		clitest.DecodeJSON(t, r, &st)
		if st.Phase != string(nodestate.Joined) {
			t.Fatalf("status phase %q, want %q", st.Phase, nodestate.Joined)
		}
	})
}
