// Package jointest runs the REAL join service — the production server,
// attested TLS, the policy verifier, rate limits and metrics — in-process on
// 127.0.0.1, with a FAKE Kubernetes API (client-go's fake clientset and a fake
// CSR signer). Tests of the components that talk to a join service (the
// join service itself, disk-mapper, bootstrapper, the CLI) use it. Like the
// production service it has a plain status port (status.v1, grpc.health.v1,
// reflection) whose health follows the same readiness checks, run every
// ReadinessInterval; SetKubernetesReachable cuts the fake API off.
package jointest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/ratelimit"
	"github.com/cloister-dev/cloister/internal/status"
	"github.com/cloister-dev/cloister/joinservice/internal/kube"
	"github.com/cloister-dev/cloister/joinservice/internal/kubetest"
	"github.com/cloister-dev/cloister/joinservice/internal/metrics"
	"github.com/cloister-dev/cloister/joinservice/internal/readiness"
	"github.com/cloister-dev/cloister/joinservice/internal/server"
	"github.com/cloister-dev/cloister/joinservice/internal/verifier"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// Options configure a test join service.
type Options struct {
	// Issuer attests the service to nodes. Required.
	Issuer attestation.Issuer
	// Build turns the policy into validators. Required.
	Build verifier.BuildFunc
	// Policy is the policy document. Required.
	Policy []byte
	// Secrets are the cluster secrets; nil draws fresh ones.
	Secrets *keys.ClusterSecrets
	// AllowControlPlaneJoins and AllowVariantsWithoutLatch are the server
	// options of the same names.
	AllowControlPlaneJoins, AllowVariantsWithoutLatch bool
	// RateLimit per peer for calls and connections; zero means 1000/s.
	RateLimit float64
}

// Service is a running test join service.
type Service struct {
	// Addr is host:port on 127.0.0.1.
	Addr string
	// Secrets are the cluster secrets it derives keys from.
	Secrets *keys.ClusterSecrets
	// Cluster is the fake Kubernetes API behind it.
	Cluster *kubetest.Cluster
	// Kube is the service's Kubernetes access, on Cluster.
	Kube *kube.Cluster
	// Metrics are the service's metrics.
	Metrics *metrics.Metrics
	// PolicyPath is the watched policy file; Reload rereads it.
	PolicyPath string
	Verifier   *verifier.Verifier
	// StatusAddr is the plain status port (status.v1, grpc.health.v1,
	// reflection) on 127.0.0.1.
	StatusAddr string
	// Readiness is the service's readiness monitor.
	Readiness *readiness.Monitor

	unreachable atomic.Bool

	logs  *syncBuffer
	now   time.Time
	nowMu sync.Mutex

	mu     sync.Mutex
	grpc   *grpc.Server
	served chan struct{}
	serve  func(net.Listener)
	tb     TB
}

// Start runs a join service until the test ends.
func Start(tb TB, opts Options) *Service {
	tb.Helper()
	dir := tb.TempDir()
	s := &Service{logs: &syncBuffer{}, Metrics: metrics.New(), now: time.Now(), tb: tb}
	s.PolicyPath = filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(s.PolicyPath, opts.Policy, 0o644); err != nil {
		tb.Fatal(err)
	}
	s.Secrets = opts.Secrets
	if s.Secrets == nil {
		var err error
		if s.Secrets, err = keys.NewClusterSecrets(rand.Reader); err != nil {
			tb.Fatal(err)
		}
	}
	secretsPath := filepath.Join(dir, "cluster-secrets.json")
	if err := keys.WriteClusterSecrets(secretsPath, s.Secrets); err != nil {
		tb.Fatal(err)
	}
	s.Cluster = kubetest.NewCluster(tb, "https://10.0.0.1:6443")
	s.Cluster.Client.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		if s.unreachable.Load() {
			return true, nil, errors.New("fake Kubernetes API: connection refused (SetKubernetesReachable(false))")
		}
		return false, nil, nil
	})
	var err error
	s.Kube, err = kube.New(s.Cluster.Client, kube.Options{Now: s.Now, CSRPollInterval: time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.Verifier, err = verifier.New(s.PolicyPath, opts.Build, log)
	if err != nil {
		tb.Fatal(err)
	}
	rate := opts.RateLimit
	if rate == 0 {
		rate = 1000
	}
	// Every simulated node dials from 127.0.0.1: the per-IP limits follow
	// opts.RateLimit, as the join service's own connection limit does.
	creds, err := atls.NewCredentials(atls.Config{Issuer: opts.Issuer, Verifier: server.Instrument(s.Verifier, s.Metrics, log), HandshakeTimeout: 20 * time.Second,
		Limits: atls.Limits{MaxUnauthenticated: 4096, MaxUnauthenticatedPerIP: 4096, HandshakesPerSecondPerIP: rate, HandshakeBurstPerIP: int(rate)}})
	if err != nil {
		tb.Fatal(err)
	}
	so := server.Options{
		APIServerEndpoint:         "10.0.0.1:6443",
		KubernetesVersion:         "v1.37.2",
		AllowControlPlaneJoins:    opts.AllowControlPlaneJoins,
		AllowVariantsWithoutLatch: opts.AllowVariantsWithoutLatch,
	}
	secrets := keys.FileProvider{Path: secretsPath}
	srv := server.New(secrets, s.Kube, s.Verifier, s.Metrics, log, so)

	// The plain status port and readiness, assembled as in the production
	// main.
	tracker := status.New("joinservice", status.Options{})
	plain := status.NewPlainServer(tracker)
	s.Readiness, err = readiness.New(readiness.JoinService(s.Verifier, secrets, s.Kube), readiness.Options{
		Interval: ReadinessInterval, OnChange: readiness.Publish(plain, tracker)})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.Readiness.Round(ctx)
	statusLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	s.StatusAddr = statusLis.Addr().String()
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); s.Readiness.Run(ctx) }()
	go func() { defer bg.Done(); _ = plain.Serve(statusLis) }()
	tb.Cleanup(func() {
		cancel()
		plain.Stop()
		bg.Wait()
	})
	s.serve = func(lis net.Listener) {
		g := grpc.NewServer(server.ServerOptions(creds, ratelimit.New(ratelimit.Options{PerSecond: rate, Burst: int(rate)}), 20*time.Second, s.Metrics)...)
		joinv1.RegisterJoinServiceServer(g, srv)
		healthpb.RegisterHealthServer(g, plain.Health())
		done := make(chan struct{})
		go func() { defer close(done); _ = g.Serve(lis) }()
		s.mu.Lock()
		s.grpc, s.served = g, done
		s.mu.Unlock()
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.Addr = lis.Addr().String()
	s.serve(lis)
	tb.Cleanup(s.Stop)
	return s
}

// ReadinessInterval is how often a test join service checks its readiness
// (production: every 10 s).
const ReadinessInterval = 100 * time.Millisecond

// SetKubernetesReachable makes every call to the fake Kubernetes API fail
// (false), as an API server that went away would, or answer again (true).
func (s *Service) SetKubernetesReachable(reachable bool) { s.unreachable.Store(!reachable) }

// Stop stops serving (idempotent); Start serves again on the same address.
func (s *Service) Stop() {
	s.mu.Lock()
	g, done := s.grpc, s.served
	s.grpc = nil
	s.mu.Unlock()
	if g != nil {
		g.Stop()
		<-done
	}
}

// Restart serves again on the same address after Stop.
func (s *Service) Restart() {
	lis, err := net.Listen("tcp", s.Addr)
	if err != nil {
		s.tb.Fatalf("restarting join service on %s: %v", s.Addr, err)
	}
	s.serve(lis)
}

// Now is the service's clock (for token expiry).
func (s *Service) Now() time.Time {
	s.nowMu.Lock()
	defer s.nowMu.Unlock()
	return s.now
}

// Advance moves the service's clock forward.
func (s *Service) Advance(d time.Duration) {
	s.nowMu.Lock()
	defer s.nowMu.Unlock()
	s.now = s.now.Add(d)
}

// Logs returns everything the service logged (JSON lines).
func (s *Service) Logs() string { return s.logs.String() }

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
