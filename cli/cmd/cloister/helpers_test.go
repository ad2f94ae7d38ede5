package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/status"
	initv1 "github.com/cloister-dev/cloister/proto/init/v1"
	recoveryv1 "github.com/cloister-dev/cloister/proto/recovery/v1"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// testTimeout bounds every CLI run of a test.
const testTimeout = 30 * time.Second

// cliResult is one run of the CLI.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the CLI in-process with args.
func runCLI(tb testing.TB, args ...string) cliResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// wantCode fails the test unless the run exited with code.
func (r cliResult) wantCode(tb testing.TB, code int) {
	tb.Helper()
	if r.code != code {
		tb.Fatalf("want exit %d, got %s", code, r)
	}
}

// testNode is a node's attested port in a test: REAL attested TLS with a
// REAL tpm.Issuer on the in-process TPM simulator, its AK certified by a
// FAKE platform CA, serving fake init/recovery services and the real
// status.Tracker. One simulator per process: tests with a node never run in
// parallel.
type testNode struct {
	addr   string
	sim    io.ReadWriter
	caFile string // PEM of the FAKE CA that certifies the node's key
	// anchorFlag is the flag that takes caFile: --tpm-ak-roots or
	// --tdx-roots.
	anchorFlag string
	tracker    *status.Tracker
	init       *fakeInitServer
	recovery   *fakeRecoveryServer
}

type nodeServices struct {
	init     *fakeInitServer
	recovery *fakeRecoveryServer
	// requireAttestedClient makes the node refuse unattested clients, like a
	// join service.
	requireAttestedClient bool
	// noStatus leaves status.v1 off the attested port.
	noStatus bool
	// eventLog (tpm nodes) is measured into the TPM before the issuer starts
	// and sent with every quote, as a boot would have done.
	eventLog []byte
}

func startTPMNode(tb testing.TB, svc nodeServices) *testNode {
	tb.Helper()
	sim := tpmtest.Simulator(tb)
	if len(svc.eventLog) > 0 {
		tpmtest.ExtendEventLog(tb, sim, svc.eventLog)
	}
	ca := tpmtest.NewFakePlatformCA(tb, "fake platform CA")
	iss, err := tpm.NewIssuer(sim, tpm.IssuerOptions{AKCertificate: ca.CertifyAK(tb, sim), EventLog: svc.eventLog})
	if err != nil {
		tb.Fatalf("tpm.NewIssuer: %v", err)
	}
	tb.Cleanup(func() { iss.Close() })
	cfg := atls.Config{Issuer: iss, AcceptUnattestedPeer: true}
	if svc.requireAttestedClient {
		pol := &policy.TPM{PCRs: map[int]policy.Value{0: {Want: make([]byte, 32), Mode: policy.Warn}}}
		v, err := tpm.NewValidator(pol, tpm.ValidatorOptions{AKRoots: ca.Pool()})
		if err != nil {
			tb.Fatalf("tpm.NewValidator: %v", err)
		}
		reg, err := attestation.NewValidators(v)
		if err != nil {
			tb.Fatal(err)
		}
		cfg = atls.Config{Issuer: iss, Verifier: reg}
	}
	n := serveNode(tb, cfg, svc)
	n.sim, n.caFile, n.anchorFlag = sim, writeCAFile(tb, ca.Certificate()), "--tpm-ak-roots"
	return n
}

// startTDXNode is a node's attested port with a REAL tdx.Issuer whose
// quotes come from a FAKE Intel-shaped chain (tdxtest) with the given body.
func startTDXNode(tb testing.TB, body tdxtest.Body, svc nodeServices) *testNode {
	tb.Helper()
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	iss, err := tdx.NewIssuer(chain.QuoteProvider(body), tdx.IssuerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	n := serveNode(tb, atls.Config{Issuer: iss, AcceptUnattestedPeer: true}, svc)
	n.caFile, n.anchorFlag = writeCAFile(tb, chain.Root()), "--tdx-roots"
	return n
}

// serveNode serves the node's services over attested TLS with cfg.
func serveNode(tb testing.TB, cfg atls.Config, svc nodeServices) *testNode {
	tb.Helper()
	creds, err := atls.NewCredentials(cfg)
	if err != nil {
		tb.Fatalf("atls.NewCredentials: %v", err)
	}
	tracker := status.New("bootstrapper", status.Options{Now: func() time.Time { return time.Unix(1795000000, 0) }})
	srv := grpc.NewServer(grpc.Creds(creds))
	if !svc.noStatus {
		statusv1.RegisterStatusServiceServer(srv, tracker)
	}
	if svc.init != nil {
		initv1.RegisterInitServiceServer(srv, svc.init)
	}
	if svc.recovery != nil {
		recoveryv1.RegisterRecoveryServiceServer(srv, svc.recovery)
	}
	return &testNode{addr: serve(tb, srv), tracker: tracker, init: svc.init, recovery: svc.recovery}
}

// serve runs srv on 127.0.0.1 until cleanup and returns its address.
func serve(tb testing.TB, srv *grpc.Server) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listening: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(lis); err != nil {
			tb.Errorf("serving: %v", err)
		}
	})
	tb.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return lis.Addr().String()
}

func writeCAFile(tb testing.TB, ca *x509.Certificate) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "fake-ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// pcrs reads the node's current SHA-256 PCRs as hex.
func (n *testNode) pcrs(tb testing.TB) map[int]string {
	tb.Helper()
	out := map[int]string{}
	for i, v := range tpmtest.PCRs(tb, n.sim) {
		out[i] = hex.EncodeToString(v)
	}
	return out
}

// trustArgs are the flags that verify this node with the policy at path.
func (n *testNode) trustArgs(policyPath string) []string {
	return []string{"--node", n.addr, "--policy", policyPath, n.anchorFlag, n.caFile}
}

// pcrPolicy is one reference value of a test policy.
type pcrPolicy struct {
	value string
	warn  bool
}

// writeTPMPolicy writes a policy pinning pcrs and returns its path.
func writeTPMPolicy(tb testing.TB, name string, pcrs map[int]pcrPolicy) string {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nname: %s\ntpm:\n  pcrs:\n", name)
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		p := pcrs[i]
		mode := ""
		if p.warn {
			mode = ", mode: warn"
		}
		fmt.Fprintf(&b, "    \"%d\": {value: %q%s}\n", i, p.value, mode)
	}
	path := filepath.Join(tb.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// newClusterDir writes fresh cluster secrets into a new cluster directory,
// as 'cloister init' leaves it, and returns the directory and the secrets.
func newClusterDir(tb testing.TB) (string, *keys.ClusterSecrets) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "cluster")
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	s, err := keys.NewClusterSecrets(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if err := keys.WriteClusterSecrets(filepath.Join(dir, secretsFileName), s); err != nil {
		tb.Fatal(err)
	}
	return dir, s
}

// fakeInitServer is a FAKE bootstrapper init service: it records the
// request, what the cluster directory held when the request arrived, and
// streams progress before its result.
type fakeInitServer struct {
	initv1.UnimplementedInitServiceServer
	secretsPath string // the CLI's secrets file, read when Init arrives
	progress    []string
	failure     string // when set, Init ends with this failure
	wrongID     bool   // when set, Init reports another cluster ID

	mu           sync.Mutex
	calls        int
	got          *initv1.InitRequest
	savedAtInit  []byte
	savedModeErr error
	savedMode    os.FileMode
}

const fakeKubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\n"

func (f *fakeInitServer) Init(req *initv1.InitRequest, stream initv1.InitService_InitServer) error {
	f.mu.Lock()
	f.calls++
	f.got = proto.Clone(req).(*initv1.InitRequest)
	f.savedAtInit, f.savedModeErr = os.ReadFile(f.secretsPath)
	if fi, err := os.Stat(f.secretsPath); err == nil {
		f.savedMode = fi.Mode().Perm()
	}
	f.mu.Unlock()
	for _, p := range f.progress {
		if err := stream.Send(&initv1.InitResponse{Kind: &initv1.InitResponse_Progress{Progress: p}}); err != nil {
			return err
		}
	}
	if f.failure != "" {
		return stream.Send(&initv1.InitResponse{Kind: &initv1.InitResponse_Failure{Failure: &initv1.InitFailure{Reason: f.failure}}})
	}
	id, err := keys.ClusterID(req.GetMeasurementSecret(), req.GetMeasurementSalt())
	if err != nil {
		return grpcstatus.Error(codes.InvalidArgument, err.Error())
	}
	if f.wrongID {
		id[0] ^= 0xff
	}
	return stream.Send(&initv1.InitResponse{Kind: &initv1.InitResponse_Success{Success: &initv1.InitSuccess{Kubeconfig: []byte(fakeKubeconfig), ClusterId: id}}})
}

func (f *fakeInitServer) request() (*initv1.InitRequest, []byte, os.FileMode, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got, f.savedAtInit, f.savedMode, f.calls
}

// fakeRecoveryServer is a FAKE disk-mapper recovery service: it accepts
// exactly one disk key (as a real LUKS header would) and records every
// request.
type fakeRecoveryServer struct {
	recoveryv1.UnimplementedRecoveryServiceServer
	diskUUID string
	key      []byte

	mu  sync.Mutex
	got []*recoveryv1.RecoverRequest
}

func (f *fakeRecoveryServer) Recover(_ context.Context, req *recoveryv1.RecoverRequest) (*recoveryv1.RecoverResponse, error) {
	f.mu.Lock()
	f.got = append(f.got, proto.Clone(req).(*recoveryv1.RecoverRequest))
	f.mu.Unlock()
	if !bytes.Equal(req.GetDiskKey(), f.key) {
		return nil, grpcstatus.Error(codes.PermissionDenied, "unlock: key does not open the disk")
	}
	return &recoveryv1.RecoverResponse{DiskUuid: f.diskUUID}, nil
}

func (f *fakeRecoveryServer) requests() []*recoveryv1.RecoverRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got
}

// closedAddr returns an address on 127.0.0.1 where nothing listens.
func closedAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func newFakeCA(tb testing.TB) *tpmtest.FakePlatformCA {
	return tpmtest.NewFakePlatformCA(tb, "another fake platform CA")
}

// startOtherCA writes the PEM of a FAKE CA that certified nothing.
func startOtherCA(tb testing.TB) string {
	return writeCAFile(tb, newFakeCA(tb).Certificate())
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

// silentListener accepts connections on 127.0.0.1 and never answers, like a
// hung node.
func silentListener(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	tb.Cleanup(func() {
		lis.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}
