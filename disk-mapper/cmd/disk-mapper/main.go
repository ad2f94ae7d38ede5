// Command disk-mapper runs once per boot, before anything uses the node's
// state disk: it formats a fresh disk with a one-time passphrase, or gets
// the key of a keyed disk back (from a join service, or from the operator's
// recovery), opens and mounts it, and extends the cluster-ID latch. See
// package setup for the flow and the exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cloister-dev/cloister/disk-mapper/internal/config"
	"github.com/cloister-dev/cloister/disk-mapper/internal/recovery"
	"github.com/cloister-dev/cloister/disk-mapper/internal/rejoin"
	"github.com/cloister-dev/cloister/disk-mapper/internal/setup"
	"github.com/cloister-dev/cloister/disk-mapper/internal/statedisk"
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
)

const usage = `disk-mapper: set up the encrypted state disk, once per boot

Usage:
  disk-mapper [flags]

The state disk is found by its GPT partition label (--state-disk-label) or a
/dev/disk/by-id path (--state-disk-by-id), never by guessing; a disk on the
same whole disk as the root filesystem is refused.

  Fresh disk: LUKS2-format it with a random one-time passphrase (written to
  <run-dir>/one-time-passphrase, 0600, for the bootstrapper), make an ext4
  filesystem, mount it at --mount.
  Formatted but never keyed (an earlier boot ended before joining): format it
  again; it never held cluster data.
  Keyed disk: ask the join services (--join-endpoints, --node-config) for its
  key with attested TLS, and serve recovery.v1 on --recovery-listen for the
  operator's "cloister recover"; the first key that opens the disk wins. Then
  mount it, read the measurement salt from it and extend the cluster-ID latch
  (PCR 15 or RTMR 3) with the cluster ID.

status.v1 (read-only, unauthenticated, plain gRPC) on --status-listen says
what disk-mapper is doing and why it waits; systemd's STATUS= shows the same.
The same port serves grpc.health.v1 ("" and cloister.status.v1.StatusService)
and gRPC reflection, for grpc-health-probe and grpcurl.

Exit codes:
  0  ready: the state disk is mounted
  1  internal error
  2  bad usage: flags or configuration
  3  no usable state disk: missing, or on the boot disk
  4  LUKS header refused (not what disk-mapper formats; the field is named)
  5  no key opened the disk before the wait ended (--key-timeout, or every key source gave up)

Flags:
`

// The key sources plug into the flow.
var (
	_ setup.KeySource = (*rejoin.Client)(nil)
	_ setup.KeySource = (*recovery.Server)(nil)
)

type flags struct {
	stateDiskLabel   string
	stateDiskByID    string
	mountPoint       string
	runDir           string
	mapperName       string
	joinEndpoints    string
	nodeConfig       string
	joinPolicy       string
	attest           string
	latch            string
	tpmEKRoots       string
	tpmAKRoots       string
	tdxRoots         string
	recoveryListen   string
	statusListen     string
	keyTimeout       time.Duration
	attemptTimeout   time.Duration
	integrity        bool
	allowInsecureDev bool
	logLevel         slog.Level
	version          bool
}

// usageError is bad flags or configuration: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(setup.ExitReady)
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "disk-mapper: %v\n", err)
		os.Exit(setup.ExitUsage)
	}
	fmt.Fprintf(os.Stderr, "disk-mapper: %v\n", err)
	os.Exit(setup.ExitCode(err))
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("disk-mapper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.stateDiskLabel, "state-disk-label", statedisk.DefaultLabel, "GPT partition label of the state disk (/dev/disk/by-partlabel/<label>)")
	fs.StringVar(&f.stateDiskByID, "state-disk-by-id", "", "a /dev/disk/by-id/... path naming the state disk; overrides --state-disk-label")
	fs.StringVar(&f.mountPoint, "mount", setup.DefaultMountPoint, "where the state filesystem is mounted")
	fs.StringVar(&f.runDir, "run-dir", "/run/cloister", "tmpfs directory (created 0700) for the one-time passphrase of a fresh disk")
	fs.StringVar(&f.mapperName, "mapper-name", setup.DefaultMapperName, "device-mapper name of the decrypted disk (/dev/mapper/<name>)")
	fs.StringVar(&f.joinEndpoints, "join-endpoints", "", "comma-separated host:port of join services, asked for a keyed disk's key (added to --node-config's)")
	fs.StringVar(&f.nodeConfig, "node-config", "", "node config file (YAML: joinEndpoints: [host:port, ...]); empty: none")
	fs.StringVar(&f.joinPolicy, "join-policy", "/etc/cloister/join-service-policy.yaml", "policy (reference values) a join service's attestation must meet")
	fs.StringVar(&f.attest, "attest", "tpm", "how this node attests: tpm, sev-snp, tdx, insecure-dev")
	fs.StringVar(&f.latch, "latch", "auto", "cluster-ID latch register: tpm (PCR 15), tdx (RTMR 3), or auto (tdx for --attest=tdx, else tpm)")
	fs.StringVar(&f.tpmEKRoots, "trust-tpm-ek-roots", "", "comma-separated PEM files: TPM manufacturer roots, to verify join services")
	fs.StringVar(&f.tpmAKRoots, "trust-tpm-ak-roots", "", "comma-separated PEM files: platform AK CAs, to verify join services")
	fs.StringVar(&f.tdxRoots, "trust-tdx-roots", "", "comma-separated PEM files replacing Intel's SGX root (testing only)")
	fs.StringVar(&f.recoveryListen, "recovery-listen", ":9100", "recovery.v1 address (attested TLS; this node attests, the operator's CLI does not)")
	fs.StringVar(&f.statusListen, "status-listen", ":9101", "status.v1, gRPC health and reflection address (plain gRPC, read-only); empty: off")
	fs.DurationVar(&f.keyTimeout, "key-timeout", 0, "give up waiting for a keyed disk's key after this long (exit 5); 0: wait until stopped")
	fs.DurationVar(&f.attemptTimeout, "attempt-timeout", rejoin.DefaultAttemptTimeout, "deadline of one rejoin attempt (handshake and call)")
	fs.BoolVar(&f.integrity, "integrity", false, "format with dm-integrity (hmac-sha256) and require it on existing headers")
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
	switch attestation.Variant(f.attest) {
	case attestation.VariantTPM, attestation.VariantSNP, attestation.VariantTDX:
	case attestation.VariantInsecureDev:
		if !f.allowInsecureDev {
			return f, &usageError{errors.New("--attest=insecure-dev proves nothing: it needs --allow-insecure-dev too")}
		}
	default:
		return f, &usageError{fmt.Errorf("--attest %q: want tpm, sev-snp, tdx or insecure-dev", f.attest)}
	}
	if f.latch != "auto" && f.latch != "tpm" && f.latch != "tdx" {
		return f, &usageError{fmt.Errorf("--latch %q: want tpm, tdx or auto", f.latch)}
	}
	if !filepath.IsAbs(f.runDir) || !filepath.IsAbs(f.mountPoint) {
		return f, &usageError{fmt.Errorf("--run-dir %q and --mount %q must be absolute paths", f.runDir, f.mountPoint)}
	}
	return f, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.version {
		fmt.Fprintln(stderr, buildinfo.Read().Line("disk-mapper"))
		return nil
	}
	endpoints, err := joinEndpoints(f)
	if err != nil {
		return &usageError{err}
	}
	hostname, hostErr := os.Hostname()
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: f.logLevel})).With("service", "disk-mapper", "node", hostname)
	if hostErr != nil {
		log.Warn("reading host name for the logs", "error", hostErr)
	}
	if f.allowInsecureDev {
		log.Warn("INSECURE: --allow-insecure-dev is set; insecure-dev evidence proves NOTHING")
	}

	notify := sdnotify.FromEnv()
	tracker := status.New("disk-mapper", status.Options{OnChange: func(line string) {
		logNotifyError(log, notify.Status("%s", line))
	}})

	g, gctx := errgroup.WithContext(ctx)
	stopStatus, err := serveStatus(g, f.statusListen, tracker)
	if err != nil {
		return err
	}
	defer stopStatus()

	tracker.SetPhase("finding-disk")
	disk, err := statedisk.Find(statedisk.Options{Label: f.stateDiskLabel, ByID: f.stateDiskByID})
	if err != nil {
		tracker.Attempt(err)
		return err
	}
	log.Info("found state disk", "device", disk.Path, "identifier", disk.Identifier)

	issuer, err := platform.OpenIssuer(attestation.Variant(f.attest), platform.IssuerOptions{AllowInsecureDev: f.allowInsecureDev})
	if err != nil {
		return fmt.Errorf("opening this node's attestation issuer: %w", err)
	}
	defer issuer.Close()
	clusterLatch, closeLatch, err := openLatch(f)
	if err != nil {
		return err
	}
	defer closeLatch()

	sources, err := keySources(f, endpoints, issuer, tracker, log)
	if err != nil {
		return err
	}
	luks := cryptsetup.FormatOptions{Integrity: f.integrity}
	flow, err := setup.New(setup.Components{
		Headers:    setup.LUKS{Options: luks},
		Mapper:     setup.DeviceMapper{Options: luks},
		Filesystem: setup.Ext4{},
		Latch:      clusterLatch,
		Status:     tracker,
		Log:        log,
		Sources:    sources,
	}, setup.Options{
		PassphrasePath: filepath.Join(f.runDir, "one-time-passphrase"),
		MountPoint:     f.mountPoint,
		MapperName:     f.mapperName,
		KeyTimeout:     f.keyTimeout,
	})
	if err != nil {
		return fmt.Errorf("building boot flow: %w", err)
	}

	var res *setup.Result
	g.Go(func() error {
		defer stopStatus()
		var err error
		res, err = flow.Run(gctx, disk.Path)
		return err
	})
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			log.Info("shutting down before the state disk was ready", "error", err)
			logNotifyError(log, notify.Stopping())
		}
		tracker.Attempt(err)
		return err
	}
	log.Info("state disk ready", "disk_uuid", res.DiskUUID, "device", res.Device, "mount", f.mountPoint, "formatted", res.Formatted, "key_source", res.KeySource)
	logNotifyError(log, notify.Ready())
	return nil
}

func joinEndpoints(f flags) ([]string, error) {
	eps, err := config.SplitEndpoints(f.joinEndpoints)
	if err != nil {
		return nil, fmt.Errorf("--join-endpoints: %w", err)
	}
	if f.nodeConfig != "" {
		c, err := config.Load(f.nodeConfig)
		if err != nil {
			return nil, err
		}
		eps = append(eps, c.JoinEndpoints...)
	}
	return eps, nil
}

// keySources builds the rejoin client and the recovery server, both
// attesting with the node's issuer.
func keySources(f flags, endpoints []string, issuer attestation.Issuer, tracker *status.Tracker, log *slog.Logger) (map[string]setup.KeySource, error) {
	var anchors platform.Anchors
	var err error
	anchors.AllowInsecureDev = f.allowInsecureDev
	if anchors.TPMEKRoots, err = platform.LoadCertPool(splitList(f.tpmEKRoots)); err != nil {
		return nil, &usageError{fmt.Errorf("--trust-tpm-ek-roots: %w", err)}
	}
	if anchors.TPMAKRoots, err = platform.LoadCertPool(splitList(f.tpmAKRoots)); err != nil {
		return nil, &usageError{fmt.Errorf("--trust-tpm-ak-roots: %w", err)}
	}
	if anchors.TDXRoots, err = platform.LoadCertPool(splitList(f.tdxRoots)); err != nil {
		return nil, &usageError{fmt.Errorf("--trust-tdx-roots: %w", err)}
	}
	// One device, two users: the rejoin's own quotes go before the quotes
	// CLI connections to the recovery port trigger.
	gate, err := atls.NewPriorityIssuer(issuer, 0)
	if err != nil {
		return nil, fmt.Errorf("sharing the issuer: %w", err)
	}
	sources := map[string]setup.KeySource{}
	if len(endpoints) > 0 {
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
		creds, err := atls.NewCredentials(atls.Config{Issuer: gate.Own(), Verifier: validators})
		if err != nil {
			return nil, fmt.Errorf("building attested TLS credentials for rejoin: %w", err)
		}
		client, err := rejoin.New(endpoints, creds, tracker, log, rejoin.Options{AttemptTimeout: f.attemptTimeout})
		if err != nil {
			return nil, &usageError{err}
		}
		sources["rejoin"] = client
		log.Info("rejoin configured", "endpoints", endpoints, "policy", pol.String())
	} else {
		log.Warn("no join endpoints configured: a keyed disk waits for recovery only")
	}

	recCreds, err := atls.NewCredentials(atls.Config{Issuer: gate.Peers(), AcceptUnattestedPeer: true, Log: log.With("component", "recovery")})
	if err != nil {
		return nil, fmt.Errorf("building attested TLS credentials for recovery: %w", err)
	}
	lis, err := net.Listen("tcp", f.recoveryListen)
	if err != nil {
		return nil, fmt.Errorf("listening for recovery on %s: %w", f.recoveryListen, err)
	}
	sources["recovery"] = recovery.New(lis, recCreds, tracker, log)
	return sources, nil
}

// openLatch opens the cluster-ID latch register --latch names.
func openLatch(f flags) (interface {
	Extend(ctx context.Context, clusterID []byte) error
}, func(), error) {
	kind := f.latch
	if kind == "auto" {
		kind = "tpm"
		if f.attest == string(attestation.VariantTDX) {
			kind = "tdx"
		}
	}
	switch kind {
	case "tpm":
		// The resource manager lets the latch and the issuer share the TPM.
		rw, err := os.OpenFile(tpm.DevicePath, os.O_RDWR, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("opening TPM for the cluster-ID latch: %w", err)
		}
		return latch.NewTPM(rw), func() { rw.Close() }, nil
	case "tdx":
		l, err := latch.OpenTDX()
		if err != nil {
			return nil, nil, fmt.Errorf("opening RTMR for the cluster-ID latch: %w", err)
		}
		return l, func() {}, nil
	}
	return nil, nil, &usageError{fmt.Errorf("--latch %q: want tpm, tdx or auto", f.latch)}
}

// serveStatus serves the plain status port (status.v1, gRPC health,
// reflection) in g until the returned stop is called.
func serveStatus(g *errgroup.Group, addr string, tracker *status.Tracker) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for status on %s: %w", addr, err)
	}
	srv := status.NewPlainServer(tracker)
	g.Go(func() error { return srv.Serve(lis) })
	var once sync.Once
	return func() { once.Do(srv.Stop) }, nil
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

func logNotifyError(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("notifying systemd", "error", err)
	}
}
