// Command joinservice runs on control-plane nodes. It verifies joining nodes'
// attestation against the cluster policy and releases their disk keys,
// per-node bootstrap tokens and kubelet certificates over attested TLS.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/snp"
	"github.com/cloister-dev/cloister/internal/buildinfo"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/keys/kubesecret"
	"github.com/cloister-dev/cloister/internal/ratelimit"
	"github.com/cloister-dev/cloister/internal/sdnotify"
	"github.com/cloister-dev/cloister/internal/status"
	"github.com/cloister-dev/cloister/joinservice/internal/config"
	"github.com/cloister-dev/cloister/joinservice/internal/kube"
	"github.com/cloister-dev/cloister/joinservice/internal/metrics"
	"github.com/cloister-dev/cloister/joinservice/internal/readiness"
	"github.com/cloister-dev/cloister/joinservice/internal/server"
	"github.com/cloister-dev/cloister/joinservice/internal/verifier"
	"github.com/cloister-dev/cloister/joinservice/rbac"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

const usage = `joinservice: release node secrets to attested nodes

Usage:
  joinservice [flags]

Every setting lives in the config file (YAML, unknown fields are errors);
flags only choose the file and how this service attests itself.

Config file fields and defaults:
  listen: ":9000"                  attested gRPC (join.v1.JoinService, gRPC health)
  metricsListen: ":9091"           plain HTTP: /metrics (Prometheus), /healthz (live), /readyz (ready)
  statusListen: ":9092"            plain gRPC: status.v1, grpc.health.v1, reflection (grpc-health-probe)
  policy: /etc/cloister/policy.yaml      reference values, reread every policyReloadInterval
  policyReloadInterval: 10s        a bad new policy is refused and the old one stays
  clusterSecrets: /var/lib/cloister/cluster-secrets.json   must be mode 0600
  clusterSecretsSecret: ""         or "namespace/name" of a Kubernetes Secret (data key "secrets")
  kubeconfig: ""                   empty: in-cluster service account
  apiServerEndpoint: ""            host:port told to nodes; empty: from cluster-info
  kubernetesVersion: v1.37.2
  bootstrapTokenTTL: 15m           per-node token lifetime (max 24h)
  requestTimeout: 30s              deadline of every call
  handshakeTimeout: 30s            attested TLS handshake bound
  rateLimit: {connectionsPerSecond: 5, connectionBurst: 20, callsPerSecond: 5, callBurst: 20}   per peer IP
  trust: {tpmEKRoots: [], tpmAKRoots: [], snpCertCache: "", snpOffline: false, tdxRoots: []}
  allowControlPlaneJoins: false    control-plane tickets carry the master secret
  certificateKeyFile: ""           kubeadm's certificate key (0600), required for control-plane joins
  allowVariantsWithoutLatch: false accept sev-snp without a latch register
  diskKeyGeneration: 1             disk keys handed out; raise it to rotate every disk key

Flags:
`

type flags struct {
	configPath       string
	attestAs         string
	allowInsecureDev bool
	logLevel         slog.Level
	version          bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "joinservice: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("joinservice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.configPath, "config", "/etc/cloister/joinservice.yaml", "config file")
	fs.StringVar(&f.attestAs, "attest", "tpm", "how this service attests itself to nodes: tpm, sev-snp, tdx, insecure-dev")
	fs.BoolVar(&f.allowInsecureDev, "allow-insecure-dev", false, "allow the insecure-dev variant (evidence that proves NOTHING), for local development only")
	fs.BoolVar(&f.version, "version", false, "print the version and VCS revision (on stderr, like --help) and exit 0")
	fs.TextVar(&f.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if f.version { // nothing else is checked or started
		return f, nil
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}
	return f, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.version {
		fmt.Fprintln(stderr, buildinfo.Read().Line("joinservice"))
		return nil
	}
	cfg, err := config.Load(f.configPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: f.logLevel})).With("service", "joinservice")
	if f.allowInsecureDev {
		log.Warn("INSECURE: --allow-insecure-dev is set; a policy with insecure-dev accepts nodes that prove NOTHING")
	}

	anchors, err := loadAnchors(cfg.Trust, f.allowInsecureDev)
	if err != nil {
		return fmt.Errorf("loading trust anchors: %w", err)
	}
	ver, err := verifier.New(cfg.Policy, func(p *policy.Policy) (attestation.Validators, error) {
		return platform.Validators(p, anchors)
	}, log)
	if err != nil {
		return fmt.Errorf("loading policy: %w", err)
	}
	log.Info("policy in force", "policy", ver.Policy().String())

	issuer, err := platform.OpenIssuer(attestation.Variant(f.attestAs), platform.IssuerOptions{AllowInsecureDev: f.allowInsecureDev})
	if err != nil {
		return fmt.Errorf("opening this service's attestation issuer: %w", err)
	}
	defer issuer.Close()

	kubeClient, err := kubernetesClient(cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("building kubernetes client: %w", err)
	}
	cluster, err := kube.New(kubeClient, kube.Options{TokenTTL: cfg.BootstrapTokenTTL.Duration})
	if err != nil {
		return fmt.Errorf("building kubernetes access: %w", err)
	}
	// The service faces every unattested client: it refuses to run with a
	// credential that can do more than it needs (admin.conf) or less.
	if err := cluster.CheckIdentity(ctx); err != nil {
		return fmt.Errorf("checking the kubeconfig's permissions (want exactly those of user %s, granted at init): %w", rbac.UserName, err)
	}
	endpoint := cfg.APIServerEndpoint
	if endpoint == "" {
		if endpoint, err = cluster.APIServerEndpoint(ctx); err != nil {
			return fmt.Errorf("finding the API server endpoint (or set apiServerEndpoint): %w", err)
		}
	}

	m := metrics.New()
	creds, err := atls.NewCredentials(atls.Config{
		Issuer:           issuer,
		Verifier:         server.Instrument(ver, m, log),
		HandshakeTimeout: cfg.HandshakeTimeout.Duration,
		Log:              log,
	})
	if err != nil {
		return fmt.Errorf("building attested TLS credentials: %w", err)
	}
	secrets := secretsProvider(cfg, kubeClient)
	// Fail early if the cluster secrets are unusable, not at the first join.
	if _, err := secrets.ClusterSecrets(ctx); err != nil {
		return err
	}
	var certificateKey string
	if cfg.AllowControlPlaneJoins {
		if certificateKey, err = readCertificateKey(cfg.CertificateKeyFile); err != nil {
			return err
		}
	}
	// Readiness: the policy, the secrets and the Kubernetes API, checked in
	// one loop (bounded, never per probe) that sets the health of
	// cloister.join.v1.JoinService and "" on both gRPC ports, /readyz and
	// status.v1.
	notify := sdnotify.FromEnv()
	tracker := status.New("joinservice", status.Options{OnChange: func(line string) {
		logNotifyError(log, notify.Status("%s", line))
	}})
	plain := status.NewPlainServer(tracker)
	monitor, err := readiness.New(readiness.JoinService(ver, secrets, cluster), readiness.Options{OnChange: readiness.Publish(plain, tracker)})
	if err != nil {
		return fmt.Errorf("building the readiness monitor: %w", err)
	}
	monitor.Round(ctx)

	srv := server.New(secrets, cluster, ver, m, log, server.Options{
		CertificateKey:            certificateKey,
		APIServerEndpoint:         endpoint,
		KubernetesVersion:         cfg.KubernetesVersion,
		DiskKeyGeneration:         cfg.DiskKeyGeneration,
		AllowControlPlaneJoins:    cfg.AllowControlPlaneJoins,
		AllowVariantsWithoutLatch: cfg.AllowVariantsWithoutLatch,
	})

	callLimiter := ratelimit.New(ratelimit.Options{PerSecond: cfg.RateLimit.CallsPerSecond, Burst: cfg.RateLimit.CallBurst})
	grpcServer := grpc.NewServer(server.ServerOptions(creds, callLimiter, cfg.RequestTimeout.Duration, m)...)
	joinv1.RegisterJoinServiceServer(grpcServer, srv)
	healthpb.RegisterHealthServer(grpcServer, plain.Health())

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	limited := &ratelimit.Listener{
		Listener: lis,
		Limiter:  ratelimit.New(ratelimit.Options{PerSecond: cfg.RateLimit.ConnectionsPerSecond, Burst: cfg.RateLimit.ConnectionBurst}),
		OnRefuse: func(net.Addr) { m.Rejection("rate-limit", "connections") },
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	// /healthz is liveness: the process serves. /readyz is readiness: the
	// monitor's last answer, never a new call to the Kubernetes API.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := monitor.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	httpServer := plainHTTPServer(mux)
	metricsLis, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.MetricsListen, err)
	}

	statusLis, err := net.Listen("tcp", cfg.StatusListen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.StatusListen, err)
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return grpcServer.Serve(limited) })
	g.Go(func() error { return plain.Serve(statusLis) })
	g.Go(func() error { monitor.Run(ctx); return nil })
	g.Go(func() error {
		if err := httpServer.Serve(ratelimit.LimitConns(metricsLis, maxHTTPConns)); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { ver.Watch(ctx, cfg.PolicyReloadInterval.Duration); return nil })
	g.Go(func() error {
		return cluster.RunTokenCleanup(ctx, time.Minute, func(deleted int, err error) {
			if err != nil {
				log.Warn("cleaning up expired bootstrap tokens", "error", err)
			} else if deleted > 0 {
				log.Info("deleted expired bootstrap tokens", "count", deleted)
			}
		})
	})
	g.Go(func() error {
		<-ctx.Done()
		log.Info("shutting down")
		logNotifyError(log, notify.Stopping())
		plain.Stop()
		grpcServer.GracefulStop()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return httpServer.Shutdown(shutdownCtx)
	})
	log.Info("serving", "listen", lis.Addr().String(), "metrics", metricsLis.Addr().String(), "status", statusLis.Addr().String(),
		"attest", f.attestAs, "api_server", endpoint, "policy", ver.PolicyName(), "ready", errText(monitor.Ready()))
	logNotifyError(log, notify.Ready())
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// maxHTTPConns caps the plain HTTP port's open connections (Prometheus and
// probes: a few at a time); more wait in the accept queue.
const maxHTTPConns = 32

// plainHTTPServer serves h on the plain metrics port with every bound set:
// anyone who can reach the port may use it, so slow or silent clients must
// not keep connections, and headers stay small.
func plainHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    8 << 10,
	}
}

func errText(err error) string {
	if err == nil {
		return "yes"
	}
	return err.Error()
}

func logNotifyError(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("notifying systemd", "error", err)
	}
}

func loadAnchors(t config.Trust, allowInsecureDev bool) (platform.Anchors, error) {
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return platform.Anchors{}, err
	}
	a := platform.Anchors{AllowInsecureDev: allowInsecureDev, ActivationSeed: seed}
	var err error
	if a.TPMEKRoots, err = platform.LoadCertPool(t.TPMEKRoots); err != nil {
		return a, err
	}
	if a.TPMAKRoots, err = platform.LoadCertPool(t.TPMAKRoots); err != nil {
		return a, err
	}
	if a.TDXRoots, err = platform.LoadCertPool(t.TDXRoots); err != nil {
		return a, err
	}
	if t.SNPCertCache != "" {
		opts := snp.CertCacheOptions{}
		if !t.SNPOffline {
			opts.Upstream = snpUpstream()
		}
		cache, err := snp.NewCertCache(t.SNPCertCache, opts)
		if err != nil {
			return a, err
		}
		a.SNPCertGetter = cache
	}
	return a, nil
}

// readCertificateKey reads kubeadm's certificate key: 32 bytes as 64 hex
// characters, from a file only its owner may read.
func readCertificateKey(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("reading kubeadm certificate key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("kubeadm certificate key %s: mode %04o lets group or others read it; want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading kubeadm certificate key: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if _, err := hex.DecodeString(key); err != nil || len(key) != 64 {
		return "", fmt.Errorf("kubeadm certificate key %s: want 64 hex characters", path)
	}
	return key, nil
}

func secretsProvider(cfg config.Config, client kubernetes.Interface) keys.KeyProvider {
	if ns, name, ok := strings.Cut(cfg.ClusterSecretsSecret, "/"); ok {
		return &kubesecret.Provider{Client: client, Namespace: ns, Name: name}
	}
	return keys.FileProvider{Path: cfg.ClusterSecrets}
}

func kubernetesClient(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}
