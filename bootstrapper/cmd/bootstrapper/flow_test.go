package main

// The whole path of two nodes over REAL gRPC on loopback, with every real
// component the host has: node A (TPM simulator, AK certified by a FAKE
// platform CA) runs the bootstrapper's init server; a test client plays
// `cloister init` (attested TLS, verify-only) and initializes it; A's
// provisioning re-keys A's REAL LUKS2 header (file image), extends A's latch
// and "starts" the join service: the REAL join service (jointest, FAKE
// Kubernetes API) with the cluster secrets A wrote to its state disk,
// attesting with A's TPM. Node B has its own TPM, swtpm out of process in
// endorsement mode (its latch must be at reset: one TPM per node, as in a
// real cluster), and joins through A's join service with the bootstrapper's
// join path. kubeadm is a FAKE on both nodes (no cluster on the host); B's
// JoinConfiguration is then checked by a REAL kubeadm (`config validate`).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/bootstrapper/internal/discovery"
	"github.com/cloister-dev/cloister/bootstrapper/internal/initserver"
	"github.com/cloister-dev/cloister/bootstrapper/internal/joinclient"
	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodelock"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/latch"
	"github.com/cloister-dev/cloister/internal/retry"
	"github.com/cloister-dev/cloister/internal/status"
	"github.com/cloister-dev/cloister/joinservice/jointest"
	initv1 "github.com/cloister-dev/cloister/proto/init/v1"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// fakeKubeadm is a FAKE kubeadm: it records its calls and config files and
// leaves kubelet.conf (join) or admin.conf (init) like the real one.
type fakeKubeadm struct {
	dir string

	mu      sync.Mutex
	calls   []string
	configs map[string][]byte
}

func (k *fakeKubeadm) record(call, cfg, result string) error {
	b, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.calls = append(k.calls, call)
	k.configs[call] = b
	k.mu.Unlock()
	return os.WriteFile(filepath.Join(k.dir, result), []byte("apiVersion: v1\nkind: Config\n"), 0o600)
}

func (k *fakeKubeadm) Join(_ context.Context, cfg string) error {
	return k.record("join", cfg, "kubelet.conf")
}
func (k *fakeKubeadm) Init(_ context.Context, cfg string) error {
	return k.record("init", cfg, "admin.conf")
}
func (k *fakeKubeadm) Reset(context.Context) error {
	return errors.New("fakeKubeadm: reset not expected")
}

// joinServiceStarter "starts" the cluster's join service the way systemd
// would: the REAL join service, reading the secrets A wrote.
type joinServiceStarter struct {
	t       *testing.T
	stateA  string
	issuer  attestation.Issuer
	build   func(*policy.Policy) (attestation.Validators, error)
	policy  []byte
	service *jointest.Service
}

func (s *joinServiceStarter) Start(context.Context) error {
	if s.service != nil {
		return nil
	}
	secrets, err := keys.FileProvider{Path: filepath.Join(s.stateA, provision.ClusterSecretsFile)}.ClusterSecrets(context.Background())
	if err != nil {
		return err
	}
	s.service = jointest.Start(s.t, jointest.Options{Issuer: s.issuer, Build: s.build, Policy: s.policy, Secrets: secrets})
	return nil
}

// diskNode is a node's state disk as disk-mapper leaves a fresh one: a REAL
// LUKS2 header on a file image, the one-time passphrase in "/run", and the
// mounted state directory.
type diskNode struct {
	stateDir, runDir, etcDir, image, uuid string
	oneTime                               []byte
	store                                 *nodestate.Store
	lock                                  *nodelock.Lock
	dev                                   *cryptsetup.Device
	kubeadm                               *fakeKubeadm
	tracker                               *status.Tracker
}

func newDiskNode(t *testing.T) *diskNode {
	t.Helper()
	n := &diskNode{stateDir: t.TempDir(), runDir: t.TempDir(), etcDir: t.TempDir(), image: filepath.Join(t.TempDir(), "state.img")}
	f, err := os.Create(n.image)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Truncate(32<<20), f.Close()); err != nil {
		t.Fatal(err)
	}
	n.oneTime = make([]byte, 32)
	if _, err := rand.Read(n.oneTime); err != nil {
		t.Fatal(err)
	}
	if n.uuid, err = cryptsetup.Format(context.Background(), n.image, n.oneTime, cryptsetup.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.runDir, "one-time-passphrase"), n.oneTime, 0o600); err != nil {
		t.Fatal(err)
	}
	if n.dev, err = cryptsetup.Open(n.image, cryptsetup.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.dev.Close() })
	n.tracker = status.New("bootstrapper", status.Options{})
	if n.store, err = nodestate.Open(n.stateDir, nodestate.Options{OnTransition: func(st nodestate.State) { n.tracker.SetPhase(string(st.Phase)) }}); err != nil {
		t.Fatal(err)
	}
	n.lock = nodelock.New(n.store, "")
	n.kubeadm = &fakeKubeadm{dir: n.etcDir, configs: map[string][]byte{}}
	return n
}

func (n *diskNode) runFunc(l *latch.TPM, js provision.Starter, log *slog.Logger) initserver.RunFunc {
	return func(ctx context.Context, progress func(string)) (*provision.Result, error) {
		p, err := provision.New(n.store, n.dev, l, n.kubeadm, n.tracker, log, provision.Options{
			OneTimePassphrasePath: filepath.Join(n.runDir, "one-time-passphrase"),
			KubeletPKIDir:         filepath.Join(n.stateDir, "pki"),
			AdminKubeconfig:       filepath.Join(n.etcDir, "admin.conf"),
			KubeletKubeconfig:     filepath.Join(n.etcDir, "kubelet.conf"),
			JoinService:           js,
			JoinServiceIdentity:   fakeJoinServiceIdentity{},
			Progress:              progress,
		})
		if err != nil {
			return nil, err
		}
		return p.Run(ctx)
	}
}

func tpmPolicy(name string, pcrs map[int][]byte) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nname: %s\ntpm:\n  pcrs:\n", name)
	for i, v := range pcrs {
		fmt.Fprintf(&b, "    %q: {value: %q}\n", fmt.Sprint(i), hex.EncodeToString(v))
	}
	return []byte(b.String())
}

func mustValidators(t *testing.T, doc []byte, a platform.Anchors) attestation.Validators {
	t.Helper()
	p, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	v, err := platform.Validators(p, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// requireKubeadm returns a real kubeadm (CLOISTER_KUBEADM, exported by make):
// missing, it fails when CI=true and skips elsewhere.
func requireKubeadm(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CLOISTER_KUBEADM")
	if p != "" {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("a real kubeadm is required in CI: CLOISTER_KUBEADM=%q; run make kubeadm", p)
	}
	t.Skipf("no real kubeadm (CLOISTER_KUBEADM=%q): run make kubeadm", p)
	return ""
}

func TestInitThenJoinOverLoopback(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

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

	// Node B: swtpm, endorsement mode, EK certificate from swtpm's local CA.
	sw := tpmtest.StartSwtpm(t)
	issuerB, err := tpm.NewIssuer(sw.RW, tpm.IssuerOptions{EKIntermediates: sw.EKIntermediates})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { issuerB.Close() })
	pcrsB := tpmtest.PCRs(t, sw.RW)
	clusterPolicy := tpmPolicy("cluster", map[int][]byte{0: pcrsB[0], 7: pcrsB[7]})
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}

	a := newDiskNode(t)
	starter := &joinServiceStarter{t: t, stateA: a.stateDir, issuer: issuerA, policy: clusterPolicy,
		build: func(p *policy.Policy) (attestation.Validators, error) {
			return platform.Validators(p, platform.Anchors{TPMEKRoots: sw.EKRoots, ActivationSeed: seed})
		}}
	initDone := make(chan error, 1)
	srv, err := initserver.New(a.lock, a.store, a.uuid, "cp-1", a.runFunc(latch.NewTPM(simA), starter, log), log,
		initserver.Options{OnDone: func(err error) { initDone <- err }})
	if err != nil {
		t.Fatal(err)
	}
	nodeCreds, err := atls.NewCredentials(atls.Config{Issuer: issuerA, AcceptUnattestedPeer: true, HandshakeTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(nodeCreds))
	initv1.RegisterInitServiceServer(g, srv)
	statusv1.RegisterStatusServiceServer(g, a.tracker)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	// The CLI: verifies node A, attests nothing itself.
	cliCreds, err := atls.NewCredentials(atls.Config{Verifier: mustValidators(t, policyA, platform.Anchors{TPMAKRoots: ca.Pool()}), HandshakeTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(cliCreds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	secrets, err := keys.NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := initv1.NewInitServiceClient(conn).Init(ctx, &initv1.InitRequest{
		MasterSecret: secrets.MasterSecret, MasterSalt: secrets.MasterSalt,
		MeasurementSecret: secrets.MeasurementSecret, MeasurementSalt: secrets.MeasurementSalt,
		ClusterName: "demo", KubernetesVersion: "v1.37.2",
	})
	if err != nil {
		t.Fatal(err)
	}
	var progress []string
	var success *initv1.InitSuccess
	for success == nil {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("init stream: %v (progress %q)", err, progress)
		}
		switch k := resp.GetKind().(type) {
		case *initv1.InitResponse_Progress:
			progress = append(progress, k.Progress)
		case *initv1.InitResponse_Failure:
			t.Fatalf("init failed: %s (progress %q)", k.Failure.GetReason(), progress)
		case *initv1.InitResponse_Success:
			success = k.Success
		}
	}
	if err := <-initDone; err != nil {
		t.Fatal(err)
	}
	clusterID, _ := secrets.ClusterID()
	if !bytes.Equal(success.GetClusterId(), clusterID) || len(success.GetKubeconfig()) == 0 {
		t.Fatalf("init result: cluster ID %x, want %x", success.GetClusterId(), clusterID)
	}
	if st, err := statusv1.NewStatusServiceClient(conn).Get(ctx, &statusv1.GetRequest{}); err != nil || st.GetPhase() != string(nodestate.Joined) {
		t.Fatalf("A's status over the attested port: %v, %v", st, err)
	}
	if v, _ := latch.NewTPM(simA).Value(ctx); !bytes.Equal(v, latch.ExpectedTPM(clusterID)) {
		t.Fatalf("A's latch %x", v)
	}
	aKey, _ := secrets.DiskKey(a.uuid, keys.FirstGeneration)
	if _, err := a.dev.CheckKey(aKey); err != nil {
		t.Fatalf("A's disk does not open with its derived key: %v", err)
	}

	// Node B joins through the join service A started.
	if starter.service == nil {
		t.Fatal("A did not start the join service")
	}
	b := newDiskNode(t)
	joinCreds, err := atls.NewCredentials(atls.Config{Issuer: issuerB,
		Verifier:         mustValidators(t, policyA, platform.Anchors{TPMAKRoots: ca.Pool()}),
		HandshakeTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	backoff := retry.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	client, err := joinclient.New([]string{starter.service.Addr}, joinCreds,
		joinclient.Request{DiskUUID: b.uuid, NodeName: "worker-1", Role: discovery.RoleWorker}, b.tracker, log,
		joinclient.Options{Backoff: &backoff, AttemptTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := joinPath(ctx, client, b.lock, b.store, b.runFunc(latch.NewTPM(sw.RW), nil, log), log); err != nil {
		t.Fatalf("B's join path: %v\njoin service log:\n%s", err, starter.service.Logs())
	}
	for name, n := range map[string]*diskNode{"A": a, "B": b} {
		if st := n.store.State(); st.Phase != nodestate.Joined {
			t.Fatalf("node %s: %+v", name, st)
		}
	}
	if v, _ := latch.NewTPM(sw.RW).Value(ctx); !bytes.Equal(v, latch.ExpectedTPM(clusterID)) {
		t.Fatalf("B's latch %x, want the cluster's", v)
	}
	bKey, _ := secrets.DiskKey(b.uuid, keys.FirstGeneration)
	if _, err := b.dev.CheckKey(bKey); err != nil {
		t.Fatalf("B's disk does not open with the key A's secrets derive: %v", err)
	}
	if _, err := b.dev.CheckKey(b.oneTime); !errors.Is(err, cryptsetup.ErrKeyRejected) {
		t.Fatalf("B's one-time passphrase still opens the disk: %v", err)
	}
	if len(b.kubeadm.calls) != 1 || b.kubeadm.calls[0] != "join" || len(a.kubeadm.calls) != 1 || a.kubeadm.calls[0] != "init" {
		t.Fatalf("kubeadm calls: A %v, B %v", a.kubeadm.calls, b.kubeadm.calls)
	}

	// A second Init on the initialized node is refused.
	stream2, err := initv1.NewInitServiceClient(conn).Init(ctx, &initv1.InitRequest{
		MasterSecret: secrets.MasterSecret, MasterSalt: secrets.MasterSalt,
		MeasurementSecret: secrets.MeasurementSecret, MeasurementSalt: secrets.MeasurementSalt, KubernetesVersion: "v1.37.2"})
	if err == nil {
		_, err = stream2.Recv()
	}
	if grpcstatus.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second Init: %v, want FailedPrecondition", err)
	}

	// B's JoinConfiguration (and A's init configuration) pass the REAL kubeadm.
	kubeadmBin := requireKubeadm(t)
	cfg := filepath.Join(t.TempDir(), "join.yaml")
	if err := os.WriteFile(cfg, b.kubeadm.configs["join"], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (kubeadm.Runner{Path: kubeadmBin}).Validate(ctx, cfg); err != nil {
		t.Fatalf("kubeadm config validate: %v\n%s", err, b.kubeadm.configs["join"])
	}
	initCfg := filepath.Join(t.TempDir(), "init.yaml")
	if err := os.WriteFile(initCfg, a.kubeadm.configs["init"], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (kubeadm.Runner{Path: kubeadmBin}).Validate(ctx, initCfg); err != nil {
		t.Fatalf("kubeadm config validate (init): %v\n%s", err, a.kubeadm.configs["init"])
	}
}

// fakeJoinServiceIdentity is a FAKE: the join service's RBAC and kubeconfig
// need a real API server, which these host tests do not have.
type fakeJoinServiceIdentity struct{}

func (fakeJoinServiceIdentity) Ensure(context.Context, string) error { return nil }
