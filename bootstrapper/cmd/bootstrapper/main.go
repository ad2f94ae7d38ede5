// Command bootstrapper turns a booted confidential VM whose state disk
// disk-mapper has mounted into a Kubernetes node, exactly once. Until then it
// runs an init server (for `cloister init`) and a join client (polling join
// services) side by side; the first to reach the point of no return takes the
// node lock, and the persisted state machine carries the node to Joined or to
// a clearly reported Failed state. Once the node has joined (now or in an
// earlier boot) it serves the node's status, plain and over attested TLS, so
// that an operator can verify a running node at any time (`cloister verify`:
// measurements and cluster-ID latch). See docs of
// bootstrapper/internal/provision for the failure policy.
//
// Exit codes:
//
//	0  the node has joined, now or before, and the bootstrapper was stopped
//	1  error; the state is kept and a restart resumes from it
//	2  bad usage or configuration
//	3  the node is in the terminal Failed state (status.v1 and the log say why)
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

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
	"github.com/cloister-dev/cloister/internal/buildinfo"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/latch"
	"github.com/cloister-dev/cloister/internal/sdnotify"
	"github.com/cloister-dev/cloister/internal/status"
	initv1 "github.com/cloister-dev/cloister/proto/init/v1"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// Exit codes.
const (
	exitJoined = 0
	exitError  = 1
	exitUsage  = 2
	exitFailed = 3
)

type flags struct {
	stateDir          string
	stateDevice       string
	integrity         bool
	oneTimePassphrase string
	nodeConfig        string
	cmdline           string
	smbiosRoot        string
	joinPolicy        string
	attest            string
	tpmEKRoots        string
	tpmAKRoots        string
	initListen        string
	statusListen      string
	initSecretHash    string
	controlPlaneEP    string
	kubeadmPath       string
	adminKubeconfig   string
	kubeletKubeconfig string
	kubeletPKIDir     string
	attemptTimeout    time.Duration
	resetOnFailure    bool
	allowInsecureDev  bool
	logLevel          slog.Level
	version           bool
}

type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "bootstrapper: %v\n", err)
	}
	os.Exit(exitCode(err))
}

// exitCode maps run's error to the documented exit codes.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitJoined
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, provision.ErrFailed):
		return exitFailed
	}
	return exitError
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("bootstrapper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.stateDir, "state-dir", "/var/lib/cloister", "mounted state disk (disk-mapper mounts it)")
	fs.StringVar(&f.stateDevice, "state-device", "/dev/disk/by-partlabel/cloister-state", "the state disk's LUKS2 device, re-keyed after the lock")
	fs.BoolVar(&f.integrity, "integrity", false, "the state disk was formatted with dm-integrity (must match disk-mapper's --integrity)")
	fs.StringVar(&f.oneTimePassphrase, "one-time-passphrase", provision.DefaultOneTimePassphrasePath, "disk-mapper's one-time passphrase of a fresh disk")
	fs.StringVar(&f.nodeConfig, "node-config", "/etc/cloister/bootstrapper.yaml", "node configuration file (joinEndpoints, role, nodeName); tried after SMBIOS and the kernel command line")
	fs.StringVar(&f.cmdline, "cmdline", discovery.DefaultCmdlinePath, "kernel command line (cloister.join=, cloister.role=, cloister.node=)")
	fs.StringVar(&f.smbiosRoot, "smbios-root", discovery.DefaultSMBIOSRoot, "SMBIOS entries directory (type 11 OEM strings)")
	fs.StringVar(&f.joinPolicy, "join-policy", "/etc/cloister/join-service-policy.yaml", "policy (reference values) a join service's attestation must meet")
	fs.StringVar(&f.attest, "attest", "tpm", "how this node attests: tpm, tdx, insecure-dev (sev-snp has no cluster-ID latch)")
	fs.StringVar(&f.tpmEKRoots, "trust-tpm-ek-roots", "", "comma-separated PEM files: TPM manufacturer roots, to verify join services")
	fs.StringVar(&f.tpmAKRoots, "trust-tpm-ak-roots", "", "comma-separated PEM files: platform AK CAs, to verify join services")
	fs.StringVar(&f.initListen, "init-listen", ":9100", "attested TLS address (this node attests, the operator's CLI does not): init.v1 and status.v1, status.v1 only once joined")
	fs.StringVar(&f.statusListen, "status-listen", ":9101", "status.v1, gRPC health and reflection address (plain gRPC, read-only); empty: off")
	fs.StringVar(&f.initSecretHash, "init-secret-sha256", "", "hex SHA-256 of the init secret `cloister init` must send; empty: no init secret")
	fs.StringVar(&f.controlPlaneEP, "control-plane-endpoint", "", "stable host:port of the control planes for kubeadm init; empty: this node")
	fs.StringVar(&f.kubeadmPath, "kubeadm", kubeadm.DefaultPath, "kubeadm binary")
	fs.StringVar(&f.adminKubeconfig, "admin-kubeconfig", provision.DefaultAdminKubeconfig, "admin kubeconfig kubeadm init writes")
	fs.StringVar(&f.kubeletKubeconfig, "kubelet-kubeconfig", provision.DefaultKubeletKubeconfig, "kubelet kubeconfig kubeadm join leaves")
	fs.StringVar(&f.kubeletPKIDir, "kubelet-pki-dir", provision.DefaultKubeletPKIDir, "directory of the kubelet client certificate")
	fs.DurationVar(&f.attemptTimeout, "attempt-timeout", joinclient.DefaultAttemptTimeout, "deadline of one join attempt (handshake and call)")
	fs.BoolVar(&f.resetOnFailure, "reset-on-failure", false, "on a terminal failure, run kubeadm reset -f and reboot")
	fs.BoolVar(&f.allowInsecureDev, "allow-insecure-dev", false, "allow the insecure-dev variant (evidence that proves NOTHING), for local development only")
	fs.BoolVar(&f.version, "version", false, "print the version and VCS revision (on stderr, like --help) and exit 0")
	fs.TextVar(&f.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, err
		}
		return f, &usageError{err}
	}
	if f.version { // nothing else is checked or started
		return f, nil
	}
	if fs.NArg() > 0 {
		return f, &usageError{fmt.Errorf("unexpected arguments %q; see --help", fs.Args())}
	}
	return f, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.version {
		fmt.Fprintln(stderr, buildinfo.Read().Line("bootstrapper"))
		return nil
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: f.logLevel})).With("service", "bootstrapper")
	notify := sdnotify.FromEnv()
	tracker := status.New("bootstrapper", status.Options{OnChange: func(line string) {
		logNotifyError(log, notify.Status("%s", line))
	}})

	store, err := nodestate.Open(f.stateDir, nodestate.Options{OnTransition: func(st nodestate.State) {
		log.Info("state transition", "phase", st.Phase, "path", st.Path, "reason", st.Reason)
		tracker.SetPhase(string(st.Phase))
	}})
	if err != nil {
		return err
	}
	st := store.State()
	switch st.Phase {
	case nodestate.Joined:
		log.Info("node joined before")
		issuer, err := platform.OpenIssuer(attestation.Variant(f.attest), platform.IssuerOptions{AllowInsecureDev: f.allowInsecureDev})
		if err != nil {
			return fmt.Errorf("opening this node's attestation issuer: %w", err)
		}
		defer issuer.Close()
		return serveJoined(ctx, f, issuer, tracker, notify, log)
	case nodestate.Failed:
		tracker.SetPhase(string(st.Phase))
		tracker.Attempt(errors.New(st.Reason))
		return fmt.Errorf("node %w in %s: %s", provision.ErrFailed, st.FailedIn, st.Reason)
	}
	tracker.SetPhase(string(st.Phase))

	// status.v1 on the plain port from the start, so an operator sees why a
	// node waits or what it resumes.
	g, gctx := errgroup.WithContext(ctx)
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	stop, err := serveStatus(g, f.statusListen, tracker)
	if err != nil {
		return err
	}
	stops = append(stops, stop)

	issuer, err := platform.OpenIssuer(attestation.Variant(f.attest), platform.IssuerOptions{AllowInsecureDev: f.allowInsecureDev})
	if err != nil {
		return fmt.Errorf("opening this node's attestation issuer: %w", err)
	}
	defer issuer.Close()
	clusterLatch, expected, closeLatch, err := openLatch(f.attest)
	if err != nil {
		return err
	}
	defer closeLatch()
	disk, err := cryptsetup.Open(f.stateDevice, cryptsetup.FormatOptions{Integrity: f.integrity})
	if err != nil {
		return fmt.Errorf("opening the state disk's LUKS2 header: %w", err)
	}
	defer disk.Close()
	tracker.SetDiskUUID(disk.UUID())

	kubeadmLog, err := os.OpenFile(filepath.Join(f.stateDir, "kubeadm.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("opening the kubeadm log: %w", err)
	}
	defer kubeadmLog.Close()
	provOpts := provision.Options{
		OneTimePassphrasePath: f.oneTimePassphrase,
		KubeletPKIDir:         f.kubeletPKIDir,
		AdminKubeconfig:       f.adminKubeconfig,
		KubeletKubeconfig:     f.kubeletKubeconfig,
		ExpectedLatch:         expected,
		JoinService:           systemd{unit: "joinservice.service"},
		JoinServiceIdentity: kubeadm.JoinServiceIdentity{
			Runner:          kubeadm.Runner{Path: f.kubeadmPath, Output: kubeadmLog},
			AdminKubeconfig: f.adminKubeconfig,
		},
		Images:         systemd{unit: "cloister-images.service"},
		ResetOnFailure: f.resetOnFailure,
		Rebooter:       systemd{},
	}
	runProvision := func(ctx context.Context, progress func(string)) (*provision.Result, error) {
		o := provOpts
		o.Progress = progress
		p, err := provision.New(store, disk, clusterLatch, kubeadm.Runner{Path: f.kubeadmPath, Output: kubeadmLog}, tracker, log, o)
		if err != nil {
			return nil, err
		}
		return p.Run(ctx)
	}

	// A restart after the lock resumes where the node stopped.
	if st.Phase != nodestate.Fresh {
		log.Info("resuming", "phase", st.Phase, "path", st.Path)
		logNotifyError(log, notify.Ready())
		_, err := runProvision(ctx, func(line string) { log.Info(line) })
		return err
	}

	cfg, err := discover(ctx, f)
	if err != nil {
		return &usageError{err}
	}
	log.Info("node configuration", "source", cfg.Source, "node", cfg.NodeName, "role", cfg.Role, "join_endpoints", cfg.JoinEndpoints)

	var hash []byte
	if f.initSecretHash != "" {
		if hash, err = hex.DecodeString(f.initSecretHash); err != nil || len(hash) != sha256.Size {
			return &usageError{errors.New("--init-secret-sha256: want 64 hex characters")}
		}
	}
	lock := nodelock.New(store, "")
	done := make(chan error, 2)
	initSrv, err := initserver.New(lock, store, disk.UUID(), cfg.NodeName, runProvision, log, initserver.Options{
		InitSecretHash:       hash,
		ControlPlaneEndpoint: f.controlPlaneEP,
		OnDone:               func(err error) { done <- err },
	})
	if err != nil {
		return &usageError{err}
	}
	// One device, two users: the node's own quotes for its join go before
	// the quotes CLI connections to the init port trigger.
	gate, err := atls.NewPriorityIssuer(issuer, 0)
	if err != nil {
		return fmt.Errorf("sharing the issuer: %w", err)
	}
	initCreds, err := atls.NewCredentials(atls.Config{Issuer: gate.Peers(), AcceptUnattestedPeer: true, Log: log.With("component", "init")})
	if err != nil {
		return fmt.Errorf("building attested TLS credentials for init: %w", err)
	}

	initGRPC := grpc.NewServer(grpc.Creds(initCreds), grpc.MaxRecvMsgSize(4<<10))
	initv1.RegisterInitServiceServer(initGRPC, initSrv)
	statusv1.RegisterStatusServiceServer(initGRPC, tracker)
	if stop, err = serve(g, f.initListen, initGRPC); err != nil {
		return err
	}
	stops = append(stops, stop)

	if len(cfg.JoinEndpoints) > 0 {
		creds, err := joinServiceCreds(f, gate.Own())
		if err != nil {
			return err
		}
		client, err := joinclient.New(cfg.JoinEndpoints, creds, joinclient.Request{DiskUUID: disk.UUID(), NodeName: cfg.NodeName, Role: cfg.Role}, tracker, log, joinclient.Options{AttemptTimeout: f.attemptTimeout})
		if err != nil {
			return &usageError{err}
		}
		g.Go(func() error {
			done <- joinPath(gctx, client, lock, store, runProvision, log)
			return nil
		})
	} else {
		log.Info("no join endpoints configured: waiting for cloister init only")
	}

	tracker.SetPhase("waiting-for-init-or-join")
	logNotifyError(log, notify.Ready())
	var result error
	for result = errInitWon; errors.Is(result, errInitWon); {
		select {
		case result = <-done:
		case <-gctx.Done():
			result = gctx.Err()
		}
	}
	if result != nil {
		logNotifyError(log, notify.Stopping())
	}
	for _, s := range stops {
		s()
	}
	stops = nil
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(result, context.Canceled) && ctx.Err() != nil {
		// Shutdown before the node finished: the next start resumes.
		return fmt.Errorf("stopped in phase %s: %w", store.State().Phase, result)
	}
	if result != nil {
		return result
	}
	log.Info("node joined")
	return serveJoined(ctx, f, issuer, tracker, notify, log)
}

// serveJoined serves a joined node's status until ctx ends: plain on
// --status-listen and over attested TLS on --init-listen (status.v1 only; a
// joined node takes no init). The attested port lets an operator verify a
// running node at any time: its measurements and its cluster-ID latch.
func serveJoined(ctx context.Context, f flags, issuer attestation.Issuer, tracker *status.Tracker, notify *sdnotify.Notifier, log *slog.Logger) error {
	tracker.SetPhase(string(nodestate.Joined))
	// Only peers quote now, but through a bounded queue.
	gate, err := atls.NewPriorityIssuer(issuer, 0)
	if err != nil {
		return fmt.Errorf("sharing the issuer: %w", err)
	}
	creds, err := atls.NewCredentials(atls.Config{Issuer: gate.Peers(), AcceptUnattestedPeer: true, Log: log.With("component", "attested-status")})
	if err != nil {
		return fmt.Errorf("building attested TLS credentials for status: %w", err)
	}
	attested := grpc.NewServer(grpc.Creds(creds), grpc.MaxRecvMsgSize(1<<10))
	statusv1.RegisterStatusServiceServer(attested, tracker)

	g, gctx := errgroup.WithContext(ctx)
	stopPlain, err := serveStatus(g, f.statusListen, tracker)
	if err != nil {
		return err
	}
	defer stopPlain()
	stopAttested, err := serve(g, f.initListen, attested)
	if err != nil {
		return err
	}
	defer stopAttested()
	log.Info("serving the joined node's status", "attested", f.initListen, "plain", f.statusListen)
	logNotifyError(log, notify.Ready())
	<-gctx.Done()
	logNotifyError(log, notify.Stopping())
	stopPlain()
	stopAttested()
	return g.Wait()
}

// serveStatus serves the plain status port (status.v1, gRPC health,
// reflection) on addr in g; an empty addr serves nothing.
func serveStatus(g *errgroup.Group, addr string, tracker *status.Tracker) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := status.NewPlainServer(tracker)
	g.Go(func() error { return srv.Serve(lis) })
	var once sync.Once
	return func() { once.Do(srv.Stop) }, nil
}

// discover reads the node's configuration from SMBIOS, the kernel command
// line or the config file, in that order. A node configured nowhere waits for
// `cloister init` only, named after its host name.
func discover(ctx context.Context, f flags) (*discovery.Config, error) {
	cfg, err := discovery.First{
		discovery.SMBIOS{Root: f.smbiosRoot},
		discovery.Cmdline{Path: f.cmdline},
		discovery.File{Path: f.nodeConfig},
	}.Discover(ctx)
	if !errors.Is(err, discovery.ErrNotConfigured) {
		return cfg, err
	}
	host, herr := os.Hostname()
	if herr != nil {
		return nil, errors.Join(err, herr)
	}
	if kerr := kubeadm.CheckNodeName(strings.ToLower(host)); kerr != nil {
		return nil, fmt.Errorf("%w; the host name is no node name either: %w", err, kerr)
	}
	return &discovery.Config{NodeName: strings.ToLower(host), Role: discovery.RoleWorker, Source: "host name"}, nil
}

// joinPath waits for a valid ticket, takes the lock with it, and provisions.
// It returns nil without doing anything when the init path won the lock.
func joinPath(ctx context.Context, client *joinclient.Client, lock *nodelock.Lock, store *nodestate.Store, runProvision initserver.RunFunc, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lock.Taken():
			cancel()
		case <-ctx.Done():
		}
	}()
	ticket, err := client.Run(ctx)
	if err != nil {
		if lock.Holder() == nodestate.PathInit {
			log.Info("init took the node lock: join client stopped")
			return errInitWon
		}
		return err
	}
	defer ticket.Zero()
	err = lock.Acquire(nodestate.PathJoin, func() error { return provision.SaveTicket(store.Dir(), ticket) })
	if errors.Is(err, nodelock.ErrTaken) {
		log.Info("init took the node lock first: ticket dropped")
		return errInitWon
	}
	if err != nil {
		return err
	}
	_, err = runProvision(context.WithoutCancel(ctx), func(line string) { log.Info(line) })
	return err
}

// errInitWon tells run that the join path stepped aside; the init path's
// result follows on the same channel.
var errInitWon = errors.New("init path won the node lock")

func joinServiceCreds(f flags, issuer attestation.Issuer) (*atls.Credentials, error) {
	var anchors platform.Anchors
	var err error
	anchors.AllowInsecureDev = f.allowInsecureDev
	if anchors.TPMEKRoots, err = platform.LoadCertPool(splitList(f.tpmEKRoots)); err != nil {
		return nil, &usageError{fmt.Errorf("--trust-tpm-ek-roots: %w", err)}
	}
	if anchors.TPMAKRoots, err = platform.LoadCertPool(splitList(f.tpmAKRoots)); err != nil {
		return nil, &usageError{fmt.Errorf("--trust-tpm-ak-roots: %w", err)}
	}
	doc, err := os.ReadFile(f.joinPolicy)
	if err != nil {
		return nil, &usageError{fmt.Errorf("reading join-service policy: %w", err)}
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		return nil, &usageError{fmt.Errorf("join-service policy %s: %w", f.joinPolicy, err)}
	}
	validators, err := platform.Validators(pol, anchors)
	if err != nil {
		return nil, &usageError{fmt.Errorf("join-service policy %s: %w", f.joinPolicy, err)}
	}
	return atls.NewCredentials(atls.Config{Issuer: issuer, Verifier: validators})
}

type latchDevice interface {
	Extend(ctx context.Context, clusterID []byte) error
	Value(ctx context.Context) ([]byte, error)
	CheckReset(ctx context.Context) error
}

// openLatch opens the cluster-ID latch of the attestation variant.
func openLatch(variant string) (latchDevice, func([]byte) []byte, func(), error) {
	switch attestation.Variant(variant) {
	case attestation.VariantTPM:
		// The resource manager lets the latch and the issuer share the TPM.
		rw, err := os.OpenFile(tpm.DevicePath, os.O_RDWR, 0)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("opening the TPM for the cluster-ID latch: %w", err)
		}
		return latch.NewTPM(rw), latch.ExpectedTPM, func() { rw.Close() }, nil
	case attestation.VariantTDX:
		l, err := latch.OpenTDX()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("opening RTMR 3 for the cluster-ID latch: %w", err)
		}
		return l, latch.ExpectedTDX, func() {}, nil
	}
	return nil, nil, nil, &usageError{fmt.Errorf("--attest %q: the bootstrapper needs a cluster-ID latch: want tpm or tdx", variant)}
}

// systemd starts units and reboots through systemctl.
type systemd struct{ unit string }

// Start implements provision.Starter.
func (s systemd) Start(ctx context.Context) error {
	return systemctl(ctx, "start", s.unit)
}

// Reboot implements provision.Rebooter.
func (systemd) Reboot(ctx context.Context) error { return systemctl(ctx, "reboot") }

func systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// serve runs srv on addr in g until the returned stop is called.
func serve(g *errgroup.Group, addr string, srv *grpc.Server) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	g.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serving on %s: %w", addr, err)
		}
		return nil
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			// Let a running Init send its result, but not forever.
			t := time.AfterFunc(10*time.Second, srv.Stop)
			defer t.Stop()
			srv.GracefulStop()
		})
	}, nil
}

func logNotifyError(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("notifying systemd", "error", err)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
