package initserver

// Init requests over REAL gRPC with attested TLS on loopback: the node
// attests with the insecure-dev variant (this package's tests need no TPM;
// the full flow with the TPM simulator is in cmd/bootstrapper), the test
// client plays the CLI and verifies it. The provisioning after the lock is a
// FAKE RunFunc that records it ran.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/bootstrapper/internal/nodelock"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/keys"
	initv1 "github.com/cloister-dev/cloister/proto/init/v1"
)

const diskUUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

type testServer struct {
	dir    string
	store  *nodestate.Store
	lock   *nodelock.Lock
	client initv1.InitServiceClient
	runs   atomic.Int32
}

func startServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	ts := &testServer{dir: t.TempDir()}
	var err error
	if ts.store, err = nodestate.Open(ts.dir, nodestate.Options{}); err != nil {
		t.Fatal(err)
	}
	ts.lock = nodelock.New(ts.store, "")
	// fakeRun is a FAKE provisioning: it records the run and reports done.
	fakeRun := func(ctx context.Context, progress func(string)) (*provision.Result, error) {
		ts.runs.Add(1)
		progress("fake step")
		return &provision.Result{ClusterID: []byte("cluster-id"), Kubeconfig: []byte("kubeconfig")}, nil
	}
	srv, err := New(ts.lock, ts.store, diskUUID, "cp-1", fakeRun, slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	if err != nil {
		t.Fatal(err)
	}
	nodeCreds, err := atls.NewCredentials(atls.Config{Issuer: insecuredev.NewIssuer(), AcceptUnattestedPeer: true, HandshakeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(nodeCreds))
	initv1.RegisterInitServiceServer(g, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	pol, err := policy.Parse([]byte(`{"version": 1, "name": "test-node", "insecure-dev": {"iUnderstandThisProvesNothing": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := platform.Validators(pol, platform.Anchors{AllowInsecureDev: true})
	if err != nil {
		t.Fatal(err)
	}
	cliCreds, err := atls.NewCredentials(atls.Config{Verifier: v, HandshakeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(cliCreds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ts.client = initv1.NewInitServiceClient(conn)
	return ts
}

func goodRequest(t *testing.T) *initv1.InitRequest {
	t.Helper()
	s, err := keys.NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &initv1.InitRequest{MasterSecret: s.MasterSecret, MasterSalt: s.MasterSalt, MeasurementSecret: s.MeasurementSecret, MeasurementSalt: s.MeasurementSalt,
		InitSecret: []byte("open sesame"), ClusterName: "demo", KubernetesVersion: "v1.37.2"}
}

// initCall runs Init and returns the progress lines and the final message.
func (ts *testServer) initCall(t *testing.T, req *initv1.InitRequest) ([]string, *initv1.InitResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := ts.client.Init(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	var lines []string
	for {
		resp, err := stream.Recv()
		if err != nil {
			return lines, nil, err
		}
		if p, ok := resp.GetKind().(*initv1.InitResponse_Progress); ok {
			lines = append(lines, p.Progress)
			continue
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("stream goes on after the result: %v", err)
		}
		return lines, resp, nil
	}
}

// files lists what the state directory holds.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInitSucceedsOnce(t *testing.T) {
	hash := sha256.Sum256([]byte("open sesame"))
	ts := startServer(t, Options{InitSecretHash: hash[:]})
	lines, resp, err := ts.initCall(t, goodRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	ok := resp.GetSuccess()
	if ok == nil || string(ok.GetClusterId()) != "cluster-id" || string(ok.GetKubeconfig()) != "kubeconfig" {
		t.Fatalf("result %v", resp)
	}
	if !slices.Contains(lines, "fake step") {
		t.Fatalf("progress %q", lines)
	}
	if st := ts.store.State(); st.Phase != nodestate.Locked || st.Path != nodestate.PathInit {
		t.Fatalf("state %+v", st)
	}
	fi, err := os.Stat(filepath.Join(ts.dir, provision.InitFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("init inputs: %v %v", err, fi)
	}
}

func TestInitRefusedBeforeAnythingIsWritten(t *testing.T) {
	hash := sha256.Sum256([]byte("open sesame"))
	cases := []struct {
		name     string
		mut      func(r *initv1.InitRequest)
		prep     func(t *testing.T, ts *testServer)
		wantCode codes.Code
	}{
		{"wrong init secret", func(r *initv1.InitRequest) { r.InitSecret = []byte("guess") }, nil, codes.PermissionDenied},
		{"missing init secret", func(r *initv1.InitRequest) { r.InitSecret = nil }, nil, codes.PermissionDenied},
		{"short master secret", func(r *initv1.InitRequest) { r.MasterSecret = r.MasterSecret[:31] }, nil, codes.InvalidArgument},
		{"missing master salt", func(r *initv1.InitRequest) { r.MasterSalt = nil }, nil, codes.InvalidArgument},
		{"missing measurement secret", func(r *initv1.InitRequest) { r.MeasurementSecret = nil }, nil, codes.InvalidArgument},
		{"long measurement salt", func(r *initv1.InitRequest) { r.MeasurementSalt = make([]byte, 33) }, nil, codes.InvalidArgument},
		{"bad kubernetes version", func(r *initv1.InitRequest) { r.KubernetesVersion = "latest" }, nil, codes.InvalidArgument},
		{"bad cluster name", func(r *initv1.InitRequest) { r.ClusterName = "My Cluster" }, nil, codes.InvalidArgument},
		{"join client holds the lock", nil, func(t *testing.T, ts *testServer) {
			if err := ts.lock.Acquire(nodestate.PathJoin, nil); err != nil {
				t.Fatal(err)
			}
		}, codes.FailedPrecondition},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Options{InitSecretHash: hash[:]})
			if tc.prep != nil {
				tc.prep(t, ts)
			}
			before := files(t, ts.dir)
			req := goodRequest(t)
			if tc.mut != nil {
				tc.mut(req)
			}
			_, resp, err := ts.initCall(t, req)
			if status.Code(err) != tc.wantCode {
				t.Fatalf("Init = %v, %v; want %v", resp, err, tc.wantCode)
			}
			if after := files(t, ts.dir); !slices.Equal(before, after) {
				t.Fatalf("refused Init wrote %v (before %v)", after, before)
			}
			if ts.runs.Load() != 0 {
				t.Fatal("provisioning ran")
			}
		})
	}
}

func TestSecondInitRefused(t *testing.T) {
	ts := startServer(t, Options{})
	if _, _, err := ts.initCall(t, goodRequest(t)); err != nil {
		t.Fatal(err)
	}
	before := files(t, ts.dir)
	_, _, err := ts.initCall(t, goodRequest(t))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second Init: %v, want FailedPrecondition", err)
	}
	if after := files(t, ts.dir); !slices.Equal(before, after) {
		t.Fatalf("second Init wrote files: %v", after)
	}
	if ts.runs.Load() != 1 {
		t.Fatalf("provisioning ran %d times", ts.runs.Load())
	}
}

func TestConcurrentInitsOneWins(t *testing.T) {
	ts := startServer(t, Options{})
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, resp, err := ts.initCall(t, goodRequest(t))
			switch {
			case err == nil && resp.GetSuccess() != nil:
				ok.Add(1)
			case status.Code(err) == codes.FailedPrecondition:
				refused.Add(1)
			default:
				t.Errorf("Init: %v %v", resp, err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || refused.Load() != 7 || ts.runs.Load() != 1 {
		t.Fatalf("%d succeeded, %d refused, %d runs; want 1, 7, 1", ok.Load(), refused.Load(), ts.runs.Load())
	}
}

func TestNewNamesTheFix(t *testing.T) {
	store, _ := nodestate.Open(t.TempDir(), nodestate.Options{})
	lock := nodelock.New(store, "")
	run := func(context.Context, func(string)) (*provision.Result, error) { return nil, nil }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := New(lock, store, diskUUID, "cp-1", run, log, Options{InitSecretHash: []byte{1}}); err == nil {
		t.Error("short init secret hash accepted")
	}
	if _, err := New(lock, store, "NOT-A-UUID", "cp-1", run, log, Options{}); err == nil {
		t.Error("bad disk UUID accepted")
	}
	if _, err := New(lock, store, diskUUID, "CP_1", run, log, Options{}); err == nil {
		t.Error("bad node name accepted")
	}
}
