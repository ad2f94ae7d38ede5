package setup

// Keyed-disk flows with every real component the host has: the TPM
// simulator attesting the node, the REAL join service (jointest, with a FAKE
// Kubernetes API), attested TLS over loopback, LUKS2 headers on file images,
// and the real PCR 15 latch. Only device-mapper, mkfs and mount are faked.
// The simulator is one per process, so these tests never run in parallel.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/disk-mapper/internal/recovery"
	"github.com/cloister-dev/cloister/disk-mapper/internal/rejoin"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	"github.com/cloister-dev/cloister/internal/keys"
	clusterlatch "github.com/cloister-dev/cloister/internal/latch"
	"github.com/cloister-dev/cloister/internal/retry"
	cloisterstatus "github.com/cloister-dev/cloister/internal/status"
	"github.com/cloister-dev/cloister/joinservice/jointest"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
	recoveryv1 "github.com/cloister-dev/cloister/proto/recovery/v1"
)

// node is a test node: the simulator, its issuer, and the trust anchors and
// policy under which others verify it.
type node struct {
	sim        io.ReadWriteCloser
	issuer     *tpm.Issuer
	ca         *tpmtest.FakePlatformCA
	goodPolicy []byte // pins PCRs 0 and 7 at the simulator's values
}

func newNode(t *testing.T) *node {
	t.Helper()
	sim := tpmtest.Simulator(t)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	iss, err := tpm.NewIssuer(sim, tpm.IssuerOptions{AKCertificate: ca.CertifyAK(t, sim)})
	if err != nil {
		t.Fatalf("tpm.NewIssuer: %v", err)
	}
	t.Cleanup(func() { iss.Close() })
	pcrs := tpmtest.PCRs(t, sim)
	return &node{sim: sim, issuer: iss, ca: ca, goodPolicy: tpmPolicy(map[int][]byte{0: pcrs[0], 7: pcrs[7]})}
}

func tpmPolicy(pcrs map[int][]byte) []byte {
	var b strings.Builder
	b.WriteString("version: 1\nname: disk-mapper-test\ntpm:\n  pcrs:\n")
	for i, v := range pcrs {
		fmt.Fprintf(&b, "    %q: {value: %q}\n", fmt.Sprint(i), hex.EncodeToString(v))
	}
	return []byte(b.String())
}

// validators builds the validators of a policy that verify this node.
func (n *node) validators(p *policy.Policy) (attestation.Validators, error) {
	return platform.Validators(p, platform.Anchors{TPMAKRoots: n.ca.Pool()})
}

func (n *node) mustValidators(t *testing.T, doc []byte) attestation.Validators {
	t.Helper()
	p, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	v, err := n.validators(p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// startJoinService runs the real join service verifying the node under
// nodePolicy. It attests itself with insecure-dev: the one simulator of the
// process belongs to the node.
func (n *node) startJoinService(t *testing.T, nodePolicy []byte) *jointest.Service {
	t.Helper()
	return jointest.Start(t, jointest.Options{Issuer: insecuredev.NewIssuer(), Build: n.validators, Policy: nodePolicy})
}

// joinServiceCreds are the node's credentials towards join services: it
// attests with the TPM and accepts the (insecure-dev) test join service.
func (n *node) joinServiceCreds(t *testing.T) credentials.TransportCredentials {
	t.Helper()
	p, err := policy.Parse([]byte(`{"version": 1, "name": "test-join-service", "insecure-dev": {"iUnderstandThisProvesNothing": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := platform.Validators(p, platform.Anchors{AllowInsecureDev: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := atls.NewCredentials(atls.Config{Issuer: n.issuer, Verifier: v, HandshakeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// keyedRun is a keyed flow racing the real rejoin client and recovery server.
type keyedRun struct {
	*testFlow
	img, uuid    string
	recoveryAddr string
	done         chan struct{}
	res          *Result
	err          error
}

func (n *node) startKeyedRun(t *testing.T, svc *jointest.Service, endpoint string) *keyedRun {
	t.Helper()
	img, uuid := keyedImageFor(t, func(uuid string) []byte {
		k, err := svc.Secrets.DiskKey(uuid, keys.FirstGeneration)
		if err != nil {
			t.Fatal(err)
		}
		return k
	})
	st := cloisterstatus.New("disk-mapper", cloisterstatus.Options{})
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewJSONHandler(&lockedWriter{w: logs}, nil))
	backoff := retry.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2}
	rj, err := rejoin.New([]string{endpoint}, n.joinServiceCreds(t), st, log, rejoin.Options{Backoff: &backoff, AttemptTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	recCreds, err := atls.NewCredentials(atls.Config{Issuer: n.issuer, AcceptUnattestedPeer: true, HandshakeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := recovery.New(lis, recCreds, st, log)
	tf := newTestFlowWith(t, clusterlatch.NewTPM(n.sim), st, logs, map[string]KeySource{"rejoin": rj, "recovery": rec}, nil)
	tf.writeSalt(t, svc.Secrets.MeasurementSalt)
	kr := &keyedRun{testFlow: tf, img: img, uuid: uuid, recoveryAddr: lis.Addr().String(), done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	go func() {
		defer close(kr.done)
		kr.res, kr.err = tf.flow.Run(ctx, img)
	}()
	t.Cleanup(func() { cancel(); <-kr.done })
	return kr
}

func (kr *keyedRun) wait(t *testing.T) *Result {
	t.Helper()
	select {
	case <-kr.done:
	case <-time.After(60 * time.Second):
		t.Fatal("flow did not end")
	}
	if kr.err != nil {
		t.Fatalf("Run: %v", kr.err)
	}
	return kr.res
}

// waitStatus polls the status until cond holds.
func (kr *keyedRun) waitStatus(t *testing.T, what string, cond func(phase, lastErr string) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		s := kr.status.Snapshot()
		if cond(s.GetPhase(), s.GetLastError()) {
			return
		}
		select {
		case <-kr.done:
			t.Fatalf("flow ended (%v) while waiting for %s", kr.err, what)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("status never showed %s; last: %v", what, kr.status.Snapshot())
}

// cliRecover is the operator's CLI: it verifies the node's TPM evidence
// under policyDoc (and does not attest itself), then sends a key.
func (n *node) cliRecover(t *testing.T, addr string, policyDoc []byte, key, secret []byte) (*recoveryv1.RecoverResponse, error) {
	t.Helper()
	creds, err := atls.NewCredentials(atls.Config{Verifier: n.mustValidators(t, policyDoc), HandshakeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return recoveryv1.NewRecoveryServiceClient(conn).Recover(ctx, &recoveryv1.RecoverRequest{DiskKey: key, MeasurementSecret: secret})
}

// checkLatched asserts PCR 15 holds the cluster's ID, read through the
// latch and directly from the simulator.
func (n *node) checkLatched(t *testing.T, svc *jointest.Service, res *Result) {
	t.Helper()
	want, err := keys.ClusterID(svc.Secrets.MeasurementSecret, svc.Secrets.MeasurementSalt)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.ClusterID, want) {
		t.Errorf("cluster ID %x, want %x", res.ClusterID, want)
	}
	got, err := clusterlatch.NewTPM(n.sim).Value(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, clusterlatch.ExpectedTPM(want)) || !bytes.Equal(tpmtest.PCRs(t, n.sim)[clusterlatch.PCR], got) {
		t.Errorf("pcr[15] = %x, want %x", got, clusterlatch.ExpectedTPM(want))
	}
}

func TestKeyedDiskRejoinWinsWhenJoinServiceUp(t *testing.T) {
	n := newNode(t)
	svc := n.startJoinService(t, n.goodPolicy)
	kr := n.startKeyedRun(t, svc, svc.Addr)
	res := kr.wait(t)
	if res.KeySource != "rejoin" || res.DiskUUID != kr.uuid {
		t.Errorf("result %+v, want the rejoin key for disk %s", res, kr.uuid)
	}
	wantKey, _ := svc.Secrets.DiskKey(kr.uuid, keys.FirstGeneration)
	if !bytes.Equal(kr.mapper.key, wantKey) {
		t.Error("the disk was activated with another key than the derived one")
	}
	n.checkLatched(t, svc, res)
	if s := kr.status.Snapshot(); s.GetPhase() != PhaseReady || s.GetDiskUuid() != kr.uuid {
		t.Errorf("status %v, want ready with the disk UUID", s)
	}
	for _, secret := range [][]byte{wantKey, svc.Secrets.MeasurementSecret} {
		if bytes.Contains(kr.logs.Bytes(), secret) || strings.Contains(kr.logs.String(), hex.EncodeToString(secret)) {
			t.Error("key material in the node's logs")
		}
	}
	// The recovery server stopped with the flow.
	if _, err := net.DialTimeout("tcp", kr.recoveryAddr, time.Second); err == nil {
		t.Error("the recovery server still listens after the disk was opened")
	}
}

func TestKeyedDiskRecoveryWinsWhenJoinServiceDown(t *testing.T) {
	n := newNode(t)
	svc := n.startJoinService(t, n.goodPolicy)
	svc.Stop()
	kr := n.startKeyedRun(t, svc, svc.Addr)
	kr.waitStatus(t, "a failed rejoin attempt", func(phase, lastErr string) bool { return phase == PhaseWaiting && lastErr != "" })

	// A wrong key: refused, and the node keeps waiting.
	_, err := n.cliRecover(t, kr.recoveryAddr, n.goodPolicy, newKey(t), svc.Secrets.MeasurementSecret)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "key does not open disk "+kr.uuid) {
		t.Fatalf("Recover(wrong key) = %v; want PermissionDenied naming the disk", err)
	}
	// The node keeps waiting. (Its status line is not checked for the
	// refusal: the rejoin loop, retrying against the stopped join service,
	// overwrites last_error at any moment.)
	if s := kr.status.Snapshot(); s.GetPhase() != PhaseWaiting {
		t.Fatalf("after a wrong key the phase is %q, want %q", s.GetPhase(), PhaseWaiting)
	}

	// The right key, as the CLI derives it.
	key, _ := svc.Secrets.DiskKey(kr.uuid, keys.FirstGeneration)
	resp, err := n.cliRecover(t, kr.recoveryAddr, n.goodPolicy, key, svc.Secrets.MeasurementSecret)
	if err != nil || resp.GetDiskUuid() != kr.uuid {
		t.Fatalf("Recover(right key) = %v, %v; want disk %s", resp, err, kr.uuid)
	}
	res := kr.wait(t)
	if res.KeySource != "recovery" {
		t.Errorf("key source %q, want recovery", res.KeySource)
	}
	n.checkLatched(t, svc, res)

	// The latch blocks a second join in this boot, at the running service.
	svc.Restart()
	_, err = n.issueJoinTicket(t, svc.Addr, kr.uuid)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "latch") {
		t.Fatalf("IssueJoinTicket after the latch = %v; want PermissionDenied naming the latch", err)
	}
	t.Logf("second join refused: %v", err)
}

func TestKeyedDiskEvidenceFailingPolicyGetsNothing(t *testing.T) {
	n := newNode(t)
	pinned := bytes.Repeat([]byte{0xcd}, 32)
	svc := n.startJoinService(t, tpmPolicy(map[int][]byte{4: pinned}))
	kr := n.startKeyedRun(t, svc, svc.Addr)
	kr.waitStatus(t, "the policy refusal naming pcr[4]", func(phase, lastErr string) bool {
		return phase == PhaseWaiting && strings.Contains(lastErr, "pcr[4]")
	})
	t.Logf("status while refused: %q", kr.status.Snapshot().GetLastError())
	if strings.Contains(svc.Logs(), `"decision":"released"`) {
		t.Fatal("the join service released a ticket to evidence that fails its policy")
	}
	// Recovery still works; the operator's CLI uses the cluster's real
	// reference values.
	key, _ := svc.Secrets.DiskKey(kr.uuid, keys.FirstGeneration)
	if _, err := n.cliRecover(t, kr.recoveryAddr, n.goodPolicy, key, svc.Secrets.MeasurementSecret); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	res := kr.wait(t)
	if res.KeySource != "recovery" {
		t.Errorf("key source %q, want recovery", res.KeySource)
	}
	if strings.Contains(svc.Logs(), `"decision":"released"`) {
		t.Error("the join service released a ticket to evidence that fails its policy")
	}
	n.checkLatched(t, svc, res)
}

func TestRecoveryRefusesMalformedRequests(t *testing.T) {
	n := newNode(t)
	svc := n.startJoinService(t, n.goodPolicy)
	svc.Stop()
	kr := n.startKeyedRun(t, svc, svc.Addr)
	key, _ := svc.Secrets.DiskKey(kr.uuid, keys.FirstGeneration)
	tests := []struct {
		name        string
		key, secret []byte
		wantField   string
	}{
		{name: "short disk key", key: key[:16], secret: svc.Secrets.MeasurementSecret, wantField: "disk_key"},
		{name: "right key with a trailing byte", key: append(bytes.Clone(key), 0), secret: svc.Secrets.MeasurementSecret, wantField: "disk_key"},
		{name: "no measurement secret", key: key, wantField: "measurement_secret"},
		{name: "oversized measurement secret", key: key, secret: make([]byte, 33), wantField: "measurement_secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := n.cliRecover(t, kr.recoveryAddr, n.goodPolicy, tt.key, tt.secret)
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tt.wantField+":") {
				t.Fatalf("Recover = %v; want InvalidArgument naming %s", err, tt.wantField)
			}
		})
	}
	select {
	case <-kr.done:
		t.Fatalf("the flow ended after malformed requests: %v", kr.err)
	default:
	}
	// A request over the size limit never reaches the handler.
	if _, err := n.cliRecover(t, kr.recoveryAddr, n.goodPolicy, make([]byte, 4096), nil); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized request = %v; want ResourceExhausted", err)
	}
}

// issueJoinTicket asks for a join ticket as the node, with a valid request.
func (n *node) issueJoinTicket(t *testing.T, addr, diskUUID string) (*joinv1.IssueJoinTicketResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(n.joinServiceCreds(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return joinv1.NewJoinServiceClient(conn).IssueJoinTicket(ctx, &joinv1.IssueJoinTicketRequest{
		DiskUuid: diskUUID, KubeletCsr: kubeletCSR(t, "node-1"), Role: joinv1.Role_ROLE_WORKER, NodeName: "node-1",
	})
}

func kubeletCSR(t *testing.T, node string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
	}, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// lockedWriter serializes writes from the flow's goroutines; slog's JSON
// handler already does, this guards the buffer against concurrent reads.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
