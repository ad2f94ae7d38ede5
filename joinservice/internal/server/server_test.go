package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/joinservice/internal/metrics"
	"github.com/cloister-dev/cloister/joinservice/jointest"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// The tests run the join service as main wires it: real gRPC on 127.0.0.1,
// mutual attested TLS, real TDX quote verification by go-tdx-guest. What is
// fake: the Intel chain (tdxtest) and the Kubernetes API (kubetest).

const testDiskUUID = "0f4a2c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"

var (
	nodeMRTD    = [48]byte{0x11, 0x22, 0x33}
	serviceMRTD = [48]byte{0x44, 0x55, 0x66}
)

// nodeBody is a fresh node: RTMR 3, the cluster-ID latch, is at reset.
func nodeBody() tdxtest.Body { return tdxtest.Body{MRTD: nodeMRTD} }

func tdxPolicy(mrtd [48]byte) string {
	return "version: 1\nname: test\ntdx:\n  mrtd: {value: \"" + hex.EncodeToString(mrtd[:]) + "\"}\n"
}

type testEnv struct {
	*jointest.Service
	chain *tdxtest.Chain
}

func newTestEnv(tb testing.TB) *testEnv {
	tb.Helper()
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	issuer, err := tdx.NewIssuer(chain.QuoteProvider(tdxtest.Body{MRTD: serviceMRTD}), tdx.IssuerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	svc := jointest.Start(tb, jointest.Options{
		Issuer: issuer,
		Build: func(p *policy.Policy) (attestation.Validators, error) {
			return platform.Validators(p, platform.Anchors{TDXRoots: chain.Pool()})
		},
		Policy: []byte(tdxPolicy(nodeMRTD)),
	})
	return &testEnv{Service: svc, chain: chain}
}

// nodeIssuer attests like a node with the given TD body.
func (e *testEnv) nodeIssuer(tb testing.TB, body tdxtest.Body) attestation.Issuer {
	tb.Helper()
	i, err := tdx.NewIssuer(e.chain.QuoteProvider(body), tdx.IssuerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return i
}

// dial connects as a node that verifies the join service's own quote.
func (e *testEnv) dial(tb testing.TB, issuer attestation.Issuer) joinv1.JoinServiceClient {
	tb.Helper()
	pol, err := policy.Parse([]byte(tdxPolicy(serviceMRTD)))
	if err != nil {
		tb.Fatal(err)
	}
	vs, err := platform.Validators(pol, platform.Anchors{TDXRoots: e.chain.Pool()})
	if err != nil {
		tb.Fatal(err)
	}
	creds, err := atls.NewCredentials(atls.Config{Issuer: issuer, Verifier: vs, HandshakeTimeout: 10 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+e.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return joinv1.NewJoinServiceClient(conn)
}

func kubeletCSR(tb testing.TB, cn string, orgs ...string) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: orgs}}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func joinRequest(tb testing.TB, node string) *joinv1.IssueJoinTicketRequest {
	return &joinv1.IssueJoinTicketRequest{
		DiskUuid:   testDiskUUID,
		KubeletCsr: kubeletCSR(tb, "system:node:"+node, "system:nodes"),
		Role:       joinv1.Role_ROLE_WORKER,
		NodeName:   node,
	}
}

func TestJoinAndRejoinReleaseTheDerivedKey(t *testing.T) {
	env := newTestEnv(t)
	client := env.dial(t, env.nodeIssuer(t, nodeBody()))
	ctx := context.Background()

	resp, err := client.IssueJoinTicket(ctx, joinRequest(t, "worker-1"))
	if err != nil {
		t.Fatalf("IssueJoinTicket: %v", err)
	}
	want, err := keys.DiskKey(env.Secrets.MasterSecret, env.Secrets.MasterSalt, testDiskUUID, keys.FirstGeneration)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.GetDiskKey(), want) {
		t.Error("disk key is not the derivation from the master secret")
	}
	if !bytes.Equal(resp.GetMeasurementSecret(), env.Secrets.MeasurementSecret) || !bytes.Equal(resp.GetMeasurementSalt(), env.Secrets.MeasurementSalt) {
		t.Error("measurement secret or salt differ from the cluster's")
	}
	if resp.GetControlPlane() != nil {
		t.Error("a worker received control-plane material")
	}
	if resp.GetApiServerEndpoint() != "10.0.0.1:6443" || resp.GetKubernetesVersion() != "v1.37.2" {
		t.Errorf("discovery: %s %s", resp.GetApiServerEndpoint(), resp.GetKubernetesVersion())
	}
	// Token: per node, stored as a bootstrap token Secret, short-lived.
	id, _, ok := strings.Cut(resp.GetBootstrapToken(), ".")
	if !ok {
		t.Fatalf("token %q is not id.secret", "REDACTED")
	}
	secret, err := env.Cluster.Client.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-"+id, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("token secret: %v", err)
	}
	if secret.Type != "bootstrap.kubernetes.io/token" {
		t.Errorf("token secret type %q", secret.Type)
	}
	if exp := time.Unix(resp.GetBootstrapTokenExpiry(), 0); exp.Sub(env.Now()) > 16*time.Minute || exp.Before(env.Now()) {
		t.Errorf("token expiry %v is not about 15 minutes from now", exp)
	}
	// CA pins: the fake cluster CA's public key.
	if len(resp.GetDiscoveryTokenCaCertHashes()) != 1 {
		t.Fatalf("CA hashes %v", resp.GetDiscoveryTokenCaCertHashes())
	}
	// Kubelet certificate: for this node, signed by the cluster CA.
	block, _ := pem.Decode(resp.GetKubeletCertificate())
	if block == nil {
		t.Fatal("no kubelet certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "system:node:worker-1" || cert.CheckSignatureFrom(env.Cluster.CA) != nil {
		t.Errorf("kubelet certificate %q not issued by the cluster CA", cert.Subject)
	}

	// One ticket per attested connection: the same connection is refused a
	// second one; a new connection (a new attestation) gets it.
	if _, err := client.IssueRejoinTicket(ctx, &joinv1.IssueRejoinTicketRequest{DiskUuid: testDiskUUID}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "session") {
		t.Errorf("second ticket on one connection: %v, want PermissionDenied naming the session", err)
	}
	rejoin, err := env.dial(t, env.nodeIssuer(t, nodeBody())).IssueRejoinTicket(ctx, &joinv1.IssueRejoinTicketRequest{DiskUuid: testDiskUUID})
	if err != nil {
		t.Fatalf("IssueRejoinTicket: %v", err)
	}
	if !bytes.Equal(rejoin.GetDiskKey(), resp.GetDiskKey()) || !bytes.Equal(rejoin.GetMeasurementSecret(), env.Secrets.MeasurementSecret) {
		t.Error("rejoin gave another key than the join for the same disk")
	}
	if got := counter(t, env.Metrics, "cloister_joinservice_tickets_total", map[string]string{"kind": "join"}); got != 1 {
		t.Errorf("join tickets counted %v, want 1", got)
	}
	if got := counter(t, env.Metrics, "cloister_joinservice_tickets_total", map[string]string{"kind": "rejoin"}); got != 1 {
		t.Errorf("rejoin tickets counted %v, want 1", got)
	}
	audit := auditLines(t, env.Logs())
	// Three decisions: the join, the refused second ticket on its connection,
	// the rejoin.
	if len(audit) != 3 || audit[1]["decision"] != "refused" || audit[2]["decision"] != "released" || audit[0]["decision"] != "released" || audit[0]["node"] != "worker-1" || audit[0]["disk_uuid"] != testDiskUUID ||
		audit[0]["variant"] != "tdx" || audit[0]["policy"] != "test/v1" || audit[0]["token_id"] != id {
		t.Errorf("audit lines: %v", audit)
	}
}

// relayingIssuer signs genuine evidence, but for userData of another TLS
// session: what a relay between two sessions looks like to the verifier.
type relayingIssuer struct{ attestation.Issuer }

func (r relayingIssuer) Issue(ctx context.Context, _ []byte) (*attestationv1.Evidence, error) {
	other := make([]byte, 32)
	if _, err := rand.Read(other); err != nil {
		return nil, err
	}
	return r.Issuer.Issue(ctx, other)
}

func TestJoinRefusals(t *testing.T) {
	env := newTestEnv(t)
	latched := nodeBody()
	latched.RTMRs[3] = [48]byte{0xc1, 0x05}
	if _, err := env.Cluster.Client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "registered-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wrongImage := nodeBody()
	wrongImage.MRTD = [48]byte{0xee}

	tests := []struct {
		name      string
		issuer    attestation.Issuer
		req       func(t *testing.T) *joinv1.IssueJoinTicketRequest
		wantCode  codes.Code
		wantCheck string // named in the status message and counted as the reason
		stage     string
	}{
		{
			name: "image not in policy (wrong MRTD)", issuer: env.nodeIssuer(t, wrongImage),
			wantCode: codes.Unavailable, wantCheck: "mrtd", stage: "attestation",
		},
		{
			name: "evidence relayed from another TLS session", issuer: relayingIssuer{env.nodeIssuer(t, nodeBody())},
			wantCode: codes.Unavailable, wantCheck: "binding", stage: "attestation",
		},
		{
			name: "latch already extended (second join in one boot)", issuer: env.nodeIssuer(t, latched),
			wantCode: codes.PermissionDenied, wantCheck: "latch", stage: "request",
		},
		{
			name: "CSR for system:masters", req: func(t *testing.T) *joinv1.IssueJoinTicketRequest {
				r := joinRequest(t, "worker-1")
				r.KubeletCsr = kubeletCSR(t, "system:node:worker-1", "system:masters")
				return r
			},
			wantCode: codes.PermissionDenied, wantCheck: "csr-organization", stage: "request",
		},
		{
			name: "CSR for another node", req: func(t *testing.T) *joinv1.IssueJoinTicketRequest {
				r := joinRequest(t, "worker-1")
				r.KubeletCsr = kubeletCSR(t, "system:node:worker-2", "system:nodes")
				return r
			},
			wantCode: codes.PermissionDenied, wantCheck: "csr-common-name", stage: "request",
		},
		{
			name: "name of a registered node (identity takeover)", req: func(t *testing.T) *joinv1.IssueJoinTicketRequest {
				return joinRequest(t, "registered-1")
			},
			wantCode: codes.PermissionDenied, wantCheck: "node-name", stage: "request",
		},
		{
			name: "malformed disk UUID", req: func(t *testing.T) *joinv1.IssueJoinTicketRequest {
				r := joinRequest(t, "worker-1")
				r.DiskUuid = "../../etc/passwd"
				return r
			},
			wantCode: codes.InvalidArgument, wantCheck: "disk-uuid", stage: "request",
		},
		{
			name: "node name not DNS-1123", req: func(t *testing.T) *joinv1.IssueJoinTicketRequest {
				r := joinRequest(t, "Worker_1")
				return r
			},
			wantCode: codes.InvalidArgument, wantCheck: "csr-node-name", stage: "request",
		},
		{
			name: "control-plane role while disabled", req: func(t *testing.T) *joinv1.IssueJoinTicketRequest {
				r := joinRequest(t, "worker-1")
				r.Role = joinv1.Role_ROLE_CONTROL_PLANE
				return r
			},
			wantCode: codes.PermissionDenied, wantCheck: "role", stage: "request",
		},
		{
			name: "unspecified role", req: func(t *testing.T) *joinv1.IssueJoinTicketRequest {
				r := joinRequest(t, "worker-1")
				r.Role = joinv1.Role_ROLE_UNSPECIFIED
				return r
			},
			wantCode: codes.InvalidArgument, wantCheck: "role", stage: "request",
		},
		{
			name: "oversized request", req: func(t *testing.T) *joinv1.IssueJoinTicketRequest {
				r := joinRequest(t, "worker-1")
				r.KubeletCsr = bytes.Repeat([]byte("A"), 100<<10)
				return r
			},
			wantCode: codes.ResourceExhausted, wantCheck: "request-size", stage: "request",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issuer := tt.issuer
			if issuer == nil {
				issuer = env.nodeIssuer(t, nodeBody())
			}
			req := joinRequest(t, "worker-1")
			if tt.req != nil {
				req = tt.req(t)
			}
			var before float64
			if tt.wantCheck != "" {
				before = counter(t, env.Metrics, "cloister_joinservice_rejections_total", map[string]string{"stage": tt.stage, "reason": tt.wantCheck})
			}
			resp, err := env.dial(t, issuer).IssueJoinTicket(context.Background(), req)
			if err == nil {
				t.Fatalf("ticket released: disk key of %d bytes", len(resp.GetDiskKey()))
			}
			st := status.Convert(err)
			if st.Code() != tt.wantCode {
				t.Errorf("code %v, want %v (%s)", st.Code(), tt.wantCode, st.Message())
			}
			if tt.wantCheck == "" {
				return
			}
			if !strings.Contains(st.Message(), tt.wantCheck) {
				t.Errorf("status %q does not name the failed check %q", st.Message(), tt.wantCheck)
			}
			after := counter(t, env.Metrics, "cloister_joinservice_rejections_total", map[string]string{"stage": tt.stage, "reason": tt.wantCheck})
			if after != before+1 {
				t.Errorf("rejections{stage=%s,reason=%s} went %v → %v, want +1", tt.stage, tt.wantCheck, before, after)
			}
			// An attestation refusal happens in the handshake, before any
			// handler: the verifier writes the audit line, naming the check.
			if tt.stage == "attestation" && !auditRefusal(env.Logs(), tt.wantCheck) {
				t.Errorf("no audit line \"attestation refused\" with reason %q in the logs:\n%s", tt.wantCheck, env.Logs())
			}
		})
	}
	tokens, err := env.Cluster.Client.CoreV1().Secrets("kube-system").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens.Items) != 0 {
		t.Errorf("refused requests left %d bootstrap tokens behind", len(tokens.Items))
	}
}

// auditRefusal reports whether logs hold an "attestation refused" audit
// line with reason check.
func auditRefusal(logs, check string) bool {
	for _, l := range strings.Split(logs, "\n") {
		var e struct {
			Msg    string `json:"msg"`
			Audit  bool   `json:"audit"`
			Reason string `json:"reason"`
			Error  string `json:"error"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Msg == "attestation refused" && e.Audit && e.Reason == check && strings.Contains(e.Error, check) {
			return true
		}
	}
	return false
}

func TestRejoinRefusesMalformedUUIDAndLatchedNode(t *testing.T) {
	env := newTestEnv(t)
	latched := nodeBody()
	latched.RTMRs[3] = [48]byte{1}
	for name, tt := range map[string]struct {
		body tdxtest.Body
		uuid string
		code codes.Code
	}{
		"uppercase uuid": {nodeBody(), strings.ToUpper(testDiskUUID), codes.InvalidArgument},
		"latched node":   {latched, testDiskUUID, codes.PermissionDenied},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := env.dial(t, env.nodeIssuer(t, tt.body)).IssueRejoinTicket(context.Background(), &joinv1.IssueRejoinTicketRequest{DiskUuid: tt.uuid})
			if status.Code(err) != tt.code {
				t.Errorf("got %v, want %v", err, tt.code)
			}
		})
	}
}

// TestNoSecretInLogs runs a full join and rejoin and searches every log line
// for the key material, raw and encoded.
func TestNoSecretInLogs(t *testing.T) {
	env := newTestEnv(t)
	client := env.dial(t, env.nodeIssuer(t, nodeBody()))
	resp, err := client.IssueJoinTicket(context.Background(), joinRequest(t, "worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.dial(t, env.nodeIssuer(t, nodeBody())).IssueRejoinTicket(context.Background(), &joinv1.IssueRejoinTicketRequest{DiskUuid: testDiskUUID}); err != nil {
		t.Fatal(err)
	}
	_, tokenSecret, _ := strings.Cut(resp.GetBootstrapToken(), ".")
	logs := env.Logs()
	if !strings.Contains(logs, "released") {
		t.Fatal("no audit lines captured; the test would prove nothing")
	}
	secrets := map[string][]byte{
		"disk key":           resp.GetDiskKey(),
		"master secret":      env.Secrets.MasterSecret,
		"measurement secret": env.Secrets.MeasurementSecret,
		"token secret":       []byte(tokenSecret),
	}
	for name, s := range secrets {
		for enc, form := range map[string]string{
			"raw": string(s), "hex": hex.EncodeToString(s), "HEX": strings.ToUpper(hex.EncodeToString(s)),
			"base64": base64.StdEncoding.EncodeToString(s), "base64url": base64.RawURLEncoding.EncodeToString(s),
		} {
			if strings.Contains(logs, form) {
				t.Errorf("%s appears in the logs (%s)", name, enc)
			}
		}
	}
}

// TestRestartLosesNothing stops the join service while a node waits and
// starts a new one: the node's retry gets the same key, and the tokens of
// the first attempt expire and are deleted.
func TestRestartLosesNothing(t *testing.T) {
	env := newTestEnv(t)
	client := env.dial(t, env.nodeIssuer(t, nodeBody()))
	first, err := client.IssueJoinTicket(context.Background(), joinRequest(t, "worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	env.Stop()
	_, err = client.IssueJoinTicket(context.Background(), joinRequest(t, "worker-1"))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call to a stopped service: %v, want Unavailable (retryable)", err)
	}
	env.Restart()
	var second *joinv1.IssueJoinTicketResponse
	for attempt := 0; ; attempt++ {
		second, err = client.IssueJoinTicket(context.Background(), joinRequest(t, "worker-1"))
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || attempt == 50 {
			t.Fatalf("retry %d: %v", attempt, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !bytes.Equal(first.GetDiskKey(), second.GetDiskKey()) {
		t.Error("the restarted service derived another disk key")
	}
	env.Advance(time.Hour)
	deleted, err := env.Kube.DeleteSpentBootstrapTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	left, err := env.Cluster.Client.CoreV1().Secrets("kube-system").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if deleted != 2 || len(left.Items) != 0 {
		t.Errorf("deleted %d expired tokens, %d left; want 2 and 0", deleted, len(left.Items))
	}
}

func counter(tb testing.TB, m *metrics.Metrics, name string, labels map[string]string) float64 {
	tb.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, metric := range f.GetMetric() {
			if labelsMatch(metric.GetLabel(), labels) {
				return metric.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelsMatch(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if want[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}

func auditLines(tb testing.TB, logs string) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			tb.Fatalf("log line is not JSON: %q", line)
		}
		if m["audit"] == true {
			out = append(out, m)
		}
	}
	return out
}
