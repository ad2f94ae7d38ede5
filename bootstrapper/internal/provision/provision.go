package provision

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/latch"
	"github.com/cloister-dev/cloister/internal/retry"
	"github.com/cloister-dev/cloister/internal/status"
)

// Defaults of Options.
const (
	DefaultOneTimePassphrasePath = "/run/cloister/one-time-passphrase"
	DefaultKubeletPKIDir         = "/var/lib/kubelet/pki"
	DefaultAdminKubeconfig       = "/etc/kubernetes/admin.conf"
	DefaultKubeletKubeconfig     = "/etc/kubernetes/kubelet.conf"
	DefaultClusterCAFile         = "/etc/kubernetes/pki/ca.crt"
	DefaultMaxAttempts           = 3
	DefaultRetryWait             = 2 * time.Second

	// MeasurementSaltPath is where the measurement salt goes, relative to
	// the state directory; disk-mapper reads it after a reboot.
	MeasurementSaltPath = "cloister/measurement-salt"
	// ClusterSecretsFile holds the cluster secrets on a control plane, for
	// its join service (relative to the state directory).
	ClusterSecretsFile = "cluster-secrets.json"
	// KubeletCertFile is the kubelet client certificate and key (PEM, 0600)
	// in the kubelet PKI directory, under the name kubelet's certificate
	// store reads and rotates: the certificate the join service issued
	// after attestation is the one kubelet uses, not one it asks for itself.
	KubeletCertFile = "kubelet-client-current.pem"
	// Kubeadm configuration files, relative to the state directory.
	JoinConfigFile = "kubeadm/join-config.yaml"
	InitConfigFile = "kubeadm/init-config.yaml"
	// JoinServiceUserConfigFile is the ClusterConfiguration for `kubeadm
	// kubeconfig user`, which makes the join service's client certificate.
	JoinServiceUserConfigFile = "kubeadm/joinservice-user-config.yaml"
	// CertificateKeyFile holds the hex kubeadm certificate key of the
	// uploaded control-plane certificates (0600), for the join service's
	// control-plane tickets.
	CertificateKeyFile = "kubeadm/certificate-key"
	// kubeadmSucceededFile is written once kubeadm init or join returned
	// success, so a restart can tell a finished kubeadm from an interrupted
	// one.
	kubeadmSucceededFile = "kubeadm/succeeded"
)

// ErrFailed means the node is in the terminal Failed state.
var ErrFailed = errors.New("node provisioning failed")

// keyslots re-keys the state disk; *cryptsetup.Device implements it.
type keyslots interface {
	Rekey(ctx context.Context, oldPass, newPass []byte, generation uint32) error
}

// clusterLatch is the cluster-ID latch; *latch.TPM implements it.
type clusterLatch interface {
	Extend(ctx context.Context, clusterID []byte) error
	Value(ctx context.Context) ([]byte, error)
	CheckReset(ctx context.Context) error
}

// kubeadmRunner runs kubeadm; kubeadm.Runner implements it.
type kubeadmRunner interface {
	Join(ctx context.Context, configPath string) error
	Init(ctx context.Context, configPath string) error
	Reset(ctx context.Context) error
}

var (
	_ keyslots      = (*cryptsetup.Device)(nil)
	_ clusterLatch  = (*latch.TPM)(nil)
	_ clusterLatch  = (*latch.TDX)(nil)
	_ kubeadmRunner = kubeadm.Runner{}
	_ reporter      = (*status.Tracker)(nil)
)

// Starter starts something the node needs and returns once it runs; in
// production `systemctl start <unit>`, which for a oneshot unit returns
// when the unit finished. It must be idempotent.
type Starter interface {
	Start(ctx context.Context) error
}

// JoinServiceIdentity gives the join service its own least-privilege
// Kubernetes identity after kubeadm init (RBAC objects and a kubeconfig);
// *kubeadm.JoinServiceIdentity implements it. Ensure must be idempotent.
type JoinServiceIdentity interface {
	Ensure(ctx context.Context, userConfigPath string) error
}

var _ JoinServiceIdentity = kubeadm.JoinServiceIdentity{}

// Rebooter reboots the machine.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// reporter shows attempts in the status; *status.Tracker implements it.
type reporter interface {
	Attempt(err error)
}

// Options are the Provisioner's settings; the zero value is the production
// choice except where noted.
type Options struct {
	// OneTimePassphrasePath is disk-mapper's one-time passphrase of a fresh
	// disk (default DefaultOneTimePassphrasePath).
	OneTimePassphrasePath string
	// KubeletPKIDir receives the kubelet certificate (default
	// DefaultKubeletPKIDir).
	KubeletPKIDir string
	// AdminKubeconfig is kubeadm init's admin kubeconfig; KubeletKubeconfig
	// is the kubelet's, which the bootstrapper writes before kubeadm join
	// (defaults DefaultAdminKubeconfig, DefaultKubeletKubeconfig).
	AdminKubeconfig, KubeletKubeconfig string
	// ClusterCAFile is where kubeadm join writes the cluster CA, which the
	// kubelet kubeconfig of a joining node names (default
	// DefaultClusterCAFile).
	ClusterCAFile string
	// ExpectedLatch is the latch value after one extend with a cluster ID
	// (default latch.ExpectedTPM).
	ExpectedLatch func(clusterID []byte) []byte
	// MaxAttempts bounds every step after the lock (default
	// DefaultMaxAttempts); RetryWait is the pause between attempts (default
	// DefaultRetryWait).
	MaxAttempts int
	RetryWait   time.Duration
	// JoinService starts the join service after kubeadm init. Required for
	// the init path.
	JoinService Starter
	// JoinServiceIdentity makes the join service's identity after kubeadm
	// init, before JoinService starts it. Required for the init path: the
	// join service never runs with admin.conf.
	JoinServiceIdentity JoinServiceIdentity
	// Images makes the container images kubeadm needs available before it
	// runs (the image's cloister-images.service imports them at boot, in
	// parallel with the wait for init or join). Nil: nothing to wait for.
	Images Starter
	// ResetOnFailure runs `kubeadm reset -f` and reboots through Rebooter
	// when the node fails. Off by default: the failed node stays as it is
	// for an operator to inspect.
	ResetOnFailure bool
	Rebooter       Rebooter
	// Progress receives a human-readable line as each step starts.
	Progress func(line string)
}

// Result is what a finished provisioning yields.
type Result struct {
	// ClusterID is the value extended into the latch.
	ClusterID []byte
	// Kubeconfig is the admin kubeconfig (init path only).
	Kubeconfig []byte
}

// Provisioner runs the steps after the lock.
type Provisioner struct {
	store   *nodestate.Store
	disk    keyslots
	latch   clusterLatch
	kubeadm kubeadmRunner
	status  reporter
	log     *slog.Logger
	opts    Options
}

// New returns a Provisioner over the opened state store and the state disk.
func New(store *nodestate.Store, disk keyslots, l clusterLatch, k kubeadmRunner, status reporter, log *slog.Logger, opts Options) (*Provisioner, error) {
	if store == nil || disk == nil || l == nil || k == nil || status == nil || log == nil {
		return nil, errors.New("provision: New needs a state store, the state disk, the latch, kubeadm, a status tracker and a logger")
	}
	if opts.MaxAttempts < 0 || opts.RetryWait < 0 {
		return nil, fmt.Errorf("provision: Options.MaxAttempts %d and RetryWait %v must not be negative (zero means %d and %v)", opts.MaxAttempts, opts.RetryWait, DefaultMaxAttempts, DefaultRetryWait)
	}
	if opts.ResetOnFailure && opts.Rebooter == nil {
		return nil, errors.New("provision: Options.ResetOnFailure needs Options.Rebooter")
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&opts.OneTimePassphrasePath, DefaultOneTimePassphrasePath)
	def(&opts.KubeletPKIDir, DefaultKubeletPKIDir)
	def(&opts.AdminKubeconfig, DefaultAdminKubeconfig)
	def(&opts.KubeletKubeconfig, DefaultKubeletKubeconfig)
	def(&opts.ClusterCAFile, DefaultClusterCAFile)
	if opts.ExpectedLatch == nil {
		opts.ExpectedLatch = latch.ExpectedTPM
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.RetryWait == 0 {
		opts.RetryWait = DefaultRetryWait
	}
	if opts.Progress == nil {
		opts.Progress = func(string) {}
	}
	return &Provisioner{store: store, disk: disk, latch: l, kubeadm: k, status: status, log: log.With("component", "provision"), opts: opts}, nil
}

// plan is one path's inputs, in the shape the common steps need.
type plan struct {
	path       nodestate.Path
	diskKey    keys.Secret
	generation uint32
	clusterID  []byte
	salt       []byte
	writeFiles func() error
	kubeadm    func(ctx context.Context) error
	done       string // kubeadm's result file
	zero       func()
}

// Run resumes provisioning from the persisted phase and returns when the
// node is Joined (nil), Failed (an error wrapping ErrFailed), or ctx ends.
// A Fresh node is an error: the lock comes first.
func (p *Provisioner) Run(ctx context.Context) (*Result, error) {
	st := p.store.State()
	switch st.Phase {
	case nodestate.Fresh:
		return nil, errors.New("provision: node not locked yet")
	case nodestate.Failed:
		return nil, fmt.Errorf("provision: %w in %s: %s", ErrFailed, st.FailedIn, st.Reason)
	}
	pl, err := p.plan(st.Path)
	if err != nil {
		return nil, p.fail(ctx, fmt.Sprintf("loading the %s inputs: %v", st.Path, err))
	}
	defer pl.zero()
	res := &Result{ClusterID: pl.clusterID}
	if st.Phase == nodestate.Joined {
		return res, nil
	}

	if p.store.State().Phase == nodestate.Locked {
		// The salt goes first: once the LUKS2 token says "keyed", a reboot
		// makes disk-mapper unlock the disk and read the salt from it.
		if err := p.step(ctx, "measurement-salt", func(context.Context) error { return p.writeSalt(pl.salt) }); err != nil {
			return nil, err
		}
		p.opts.Progress("re-keying the state disk to the derived disk key")
		if err := p.step(ctx, "rekey", func(ctx context.Context) error { return p.rekey(ctx, pl) }); err != nil {
			return nil, err
		}
		if err := p.store.Advance(nodestate.Keyed); err != nil {
			return nil, err
		}
	}
	if p.store.State().Phase == nodestate.Keyed {
		p.opts.Progress("writing the measurement salt, certificates and kubeadm configuration")
		if err := p.step(ctx, "write-files", func(context.Context) error { return pl.writeFiles() }); err != nil {
			return nil, err
		}
		p.opts.Progress("extending the cluster-ID latch")
		if err := p.step(ctx, "latch", func(ctx context.Context) error { return p.extendLatch(ctx, pl.clusterID) }); err != nil {
			return nil, err
		}
		if err := p.store.Advance(nodestate.Configured); err != nil {
			return nil, err
		}
	}
	ranKubeadm := false
	if p.store.State().Phase == nodestate.Configured {
		if p.opts.Images != nil {
			p.opts.Progress("waiting for the built-in container images")
			if err := p.step(ctx, "container-images", p.opts.Images.Start); err != nil {
				return nil, err
			}
		}
		if err := p.store.Advance(nodestate.KubeadmStarted); err != nil {
			return nil, err
		}
		p.opts.Progress("running kubeadm " + map[nodestate.Path]string{nodestate.PathInit: "init", nodestate.PathJoin: "join"}[pl.path])
		ranKubeadm = true
		if err := pl.kubeadm(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("provision: kubeadm interrupted by shutdown: %w", ctx.Err())
			}
			return nil, p.fail(ctx, fmt.Sprintf("kubeadm: %v", err))
		}
		// kubeadm writes admin.conf/kubelet.conf early in its run, so their
		// presence proves nothing; this marker is written only after it
		// returned success.
		if err := writeSecret(filepath.Join(p.store.Dir(), kubeadmSucceededFile), []byte(pl.path)); err != nil {
			return nil, p.fail(ctx, fmt.Sprintf("recording kubeadm's success: %v", err))
		}
	}
	if !ranKubeadm {
		// KubeadmStarted from an earlier run: kubeadm must not run twice.
		if _, err := os.Stat(filepath.Join(p.store.Dir(), kubeadmSucceededFile)); err != nil {
			return nil, p.fail(ctx, "kubeadm was interrupted before it reported success: it is not run twice; reset the node (kubeadm reset -f) and reboot")
		}
		p.log.Info("kubeadm finished before a restart", "result", pl.done)
	}
	if pl.path == nodestate.PathInit {
		p.opts.Progress("giving the join service its own Kubernetes identity")
		userCfg := filepath.Join(p.store.Dir(), JoinServiceUserConfigFile)
		if err := p.step(ctx, "join-service-identity", func(ctx context.Context) error {
			return p.opts.JoinServiceIdentity.Ensure(ctx, userCfg)
		}); err != nil {
			return nil, err
		}
		p.opts.Progress("starting the join service")
		if err := p.step(ctx, "join-service", p.opts.JoinService.Start); err != nil {
			return nil, err
		}
		kc, err := os.ReadFile(p.opts.AdminKubeconfig)
		if err != nil {
			return nil, p.fail(ctx, fmt.Sprintf("reading the admin kubeconfig: %v", err))
		}
		res.Kubeconfig = kc
	}
	if err := p.store.Advance(nodestate.Joined); err != nil {
		return nil, err
	}
	p.opts.Progress("joined")
	return res, nil
}

// step runs fn at most MaxAttempts times; then the node fails.
func (p *Provisioner) step(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	var err error
	for attempt := 1; attempt <= p.opts.MaxAttempts; attempt++ {
		if err = fn(ctx); err == nil {
			p.status.Attempt(nil)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("provision: %s interrupted by shutdown: %w", name, ctx.Err())
		}
		p.status.Attempt(err)
		p.log.Warn("provisioning step failed", "step", name, "attempt", attempt, "error", err)
		if errors.Is(err, retry.ErrPermanent) || attempt == p.opts.MaxAttempts {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("provision: %s interrupted by shutdown: %w", name, ctx.Err())
		case <-time.After(p.opts.RetryWait):
		}
	}
	return p.fail(ctx, fmt.Sprintf("%s: %v", name, err))
}

// fail enters Failed with reason (no secrets) and, if configured, resets
// kubeadm and reboots.
func (p *Provisioner) fail(ctx context.Context, reason string) error {
	p.log.Error("node provisioning failed", "reason", reason)
	if err := p.store.Fail(reason); err != nil {
		return errors.Join(fmt.Errorf("provision: %w: %s", ErrFailed, reason), err)
	}
	// After the Failed phase is set, so that status.v1 shows the reason.
	p.status.Attempt(errors.New(reason))
	if p.opts.ResetOnFailure {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if err := p.kubeadm.Reset(rctx); err != nil {
			p.log.Error("kubeadm reset after the failure", "error", err)
		}
		if err := p.opts.Rebooter.Reboot(rctx); err != nil {
			p.log.Error("rebooting after the failure", "error", err)
		}
	}
	return fmt.Errorf("provision: %w: %s", ErrFailed, reason)
}

// rekey moves the disk from the one-time passphrase to the disk key of the
// plan's generation.
func (p *Provisioner) rekey(ctx context.Context, pl *plan) error {
	oldPass, err := os.ReadFile(p.opts.OneTimePassphrasePath)
	if errors.Is(err, os.ErrNotExist) {
		// Gone (a restart after the file was removed, or after a reboot):
		// Rekey then only finishes what it recorded, since no keyslot can
		// hold a fresh random passphrase.
		oldPass = make([]byte, keys.SecretSize)
		if _, err := rand.Read(oldPass); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("reading the one-time passphrase: %w", err)
	}
	defer keys.Secret(oldPass).Zero()
	if err := p.disk.Rekey(ctx, oldPass, pl.diskKey, pl.generation); err != nil {
		return fmt.Errorf("re-keying the state disk: %w", err)
	}
	// The passphrase opens nothing any more.
	if err := os.Remove(p.opts.OneTimePassphrasePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the one-time passphrase: %w", err)
	}
	return nil
}

// extendLatch extends the latch with clusterID exactly once across crashes.
func (p *Provisioner) extendLatch(ctx context.Context, clusterID []byte) error {
	want := p.opts.ExpectedLatch(clusterID)
	got, err := p.latch.Value(ctx)
	if err != nil {
		return fmt.Errorf("reading the latch: %w", err)
	}
	if bytes.Equal(got, want) {
		p.log.Info("latch already holds this cluster's ID (extended before a restart)")
		return nil
	}
	if err := p.latch.CheckReset(ctx); err != nil {
		if errors.Is(err, latch.ErrNotReset) {
			return retry.Permanent(fmt.Errorf("the latch holds neither its reset value nor this cluster's ID (want %x, got %x): only a reboot resets it", want, got))
		}
		return err
	}
	if err := p.latch.Extend(ctx, clusterID); err != nil {
		return fmt.Errorf("extending the latch: %w", err)
	}
	if got, err := p.latch.Value(ctx); err != nil || !bytes.Equal(got, want) {
		return retry.Permanent(fmt.Errorf("latch after extend: want %x, got %x (%v)", want, got, err))
	}
	return nil
}

// plan loads the saved inputs of path.
func (p *Provisioner) plan(path nodestate.Path) (*plan, error) {
	dir := p.store.Dir()
	switch path {
	case nodestate.PathJoin:
		t, err := loadTicket(dir)
		if err != nil {
			return nil, err
		}
		id, err := keys.ClusterID(t.MeasurementSecret, t.MeasurementSalt)
		if err != nil {
			return nil, err
		}
		cfgPath := filepath.Join(dir, JoinConfigFile)
		return &plan{
			path: path, diskKey: t.DiskKey, generation: t.DiskKeyGeneration, clusterID: id, salt: t.MeasurementSalt,
			writeFiles: func() error { return p.writeJoinFiles(cfgPath, t) },
			kubeadm:    func(ctx context.Context) error { return p.kubeadm.Join(ctx, cfgPath) },
			done:       p.opts.KubeletKubeconfig,
			zero:       t.Zero,
		}, nil
	case nodestate.PathInit:
		if p.opts.JoinService == nil || p.opts.JoinServiceIdentity == nil {
			return nil, errors.New("the init path needs Options.JoinService and Options.JoinServiceIdentity")
		}
		in, err := loadInit(dir)
		if err != nil {
			return nil, err
		}
		id, err := in.Secrets.ClusterID()
		if err != nil {
			return nil, err
		}
		cfgPath := filepath.Join(dir, InitConfigFile)
		return &plan{
			path: path, diskKey: in.DiskKey, generation: in.DiskKeyGeneration, clusterID: id, salt: in.Secrets.MeasurementSalt,
			writeFiles: func() error { return p.writeInitFiles(cfgPath, in) },
			kubeadm:    func(ctx context.Context) error { return p.kubeadm.Init(ctx, cfgPath) },
			done:       p.opts.AdminKubeconfig,
			zero:       in.Zero,
		}, nil
	}
	return nil, fmt.Errorf("unknown path %q", path)
}

func (p *Provisioner) writeSalt(salt []byte) error {
	if err := writeSecret(filepath.Join(p.store.Dir(), MeasurementSaltPath), salt); err != nil {
		return fmt.Errorf("writing the measurement salt: %w", err)
	}
	return nil
}

func (p *Provisioner) writeJoinFiles(cfgPath string, t *Ticket) error {
	if err := p.writeSalt(t.MeasurementSalt); err != nil {
		return err
	}
	pemBundle := append(append([]byte(nil), t.KubeletCert...), t.KubeletKey...)
	defer keys.Secret(pemBundle).Zero()
	certPath := filepath.Join(p.opts.KubeletPKIDir, KubeletCertFile)
	if err := writeSecret(certPath, pemBundle); err != nil {
		return fmt.Errorf("writing the kubelet certificate: %w", err)
	}
	// With a valid kubelet.conf in place, kubelet skips its TLS bootstrap
	// (a CSR of its own, signed on the bootstrap token's say-so) and uses
	// the attested certificate; kubeadm join writes the CA file it names.
	kc, err := kubeadm.KubeletKubeconfig(t.Kubeadm.NodeName, t.Kubeadm.APIServerEndpoint, p.opts.ClusterCAFile, certPath)
	if err != nil {
		return err
	}
	if err := writeSecret(p.opts.KubeletKubeconfig, kc); err != nil {
		return fmt.Errorf("writing the kubelet kubeconfig: %w", err)
	}
	cfg, err := kubeadm.JoinConfiguration(t.Kubeadm)
	if err != nil {
		return err
	}
	if err := writeSecret(cfgPath, cfg); err != nil {
		return fmt.Errorf("writing the kubeadm join configuration: %w", err)
	}
	return nil
}

func (p *Provisioner) writeInitFiles(cfgPath string, in *InitInputs) error {
	if err := keys.WriteClusterSecrets(filepath.Join(p.store.Dir(), ClusterSecretsFile), in.Secrets); err != nil {
		return fmt.Errorf("writing the cluster secrets: %w", err)
	}
	if err := p.writeSalt(in.Secrets.MeasurementSalt); err != nil {
		return err
	}
	if err := writeSecret(filepath.Join(p.store.Dir(), CertificateKeyFile), []byte(in.Kubeadm.CertificateKey)); err != nil {
		return fmt.Errorf("writing the certificate key: %w", err)
	}
	cfg, err := kubeadm.InitConfiguration(in.Kubeadm)
	if err != nil {
		return err
	}
	if err := writeSecret(cfgPath, cfg); err != nil {
		return fmt.Errorf("writing the kubeadm init configuration: %w", err)
	}
	userCfg, err := kubeadm.JoinServiceUserConfiguration(in.Kubeadm, "")
	if err != nil {
		return err
	}
	if err := writeSecret(filepath.Join(p.store.Dir(), JoinServiceUserConfigFile), userCfg); err != nil {
		return fmt.Errorf("writing the join service's kubeadm user configuration: %w", err)
	}
	return nil
}

// writeSecret writes b 0600 (atomically) in a directory it creates 0700.
func writeSecret(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return nodestate.WriteFile(path, b)
}
