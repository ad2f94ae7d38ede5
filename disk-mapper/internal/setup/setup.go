package setup

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
	"github.com/cloister-dev/cloister/internal/keys"
)

// Defaults of Options.
const (
	DefaultPassphrasePath = "/run/cloister/one-time-passphrase"
	DefaultMountPoint     = "/var/lib/cloister"
	DefaultMapperName     = "cloister-state"
	// MeasurementSaltPath is where the bootstrapper stores the measurement
	// salt on the state disk, relative to its mount point.
	MeasurementSaltPath = "cloister/measurement-salt"
)

// Phases reported to the status tracker, in the order a boot passes them.
const (
	PhaseOpening    = "opening-disk"
	PhaseFormatting = "formatting"
	PhaseWaiting    = "waiting-for-key"
	PhaseMounting   = "mounting"
	PhaseLatching   = "extending-latch"
	PhaseReady      = "ready"
)

// DiskState is what the LUKS2 header's state token records.
type DiskState struct {
	// Keyed is false while the keyslot holds the one-time passphrase.
	Keyed bool
	// Generation is the generation of the key the disk is keyed with.
	Generation uint32
}

// Header is an open LUKS2 header that passed strict validation.
type Header interface {
	// UUID is the header's UUID, the disk's identity.
	UUID() string
	// CheckKey wraps unlock.ErrWrongKey when no keyslot accepts key.
	CheckKey(key []byte) error
	// State reads the state token.
	State() (DiskState, error)
	Close() error
}

// headers opens and formats LUKS2 headers. Open wraps ErrNoHeader for a disk
// without any LUKS header and ErrHeaderInvalid for a header it refuses.
type headers interface {
	Open(path string) (Header, error)
	// Format writes a new header keyed with passphrase whose state token
	// says "not keyed", and opens it.
	Format(ctx context.Context, path string, passphrase []byte) (Header, error)
}

// mapper opens a LUKS2 disk through device-mapper and returns the path of
// the decrypted device. It is faked on hosts without device-mapper.
type mapper interface {
	Activate(ctx context.Context, path, name string, key []byte) (string, error)
}

// filesystem makes and mounts the state filesystem.
type filesystem interface {
	Mkfs(ctx context.Context, device string) error
	Mount(ctx context.Context, device, target string) error
}

// latch is the cluster-ID latch (latch.TPM, latch.TDX).
type latch interface {
	Extend(ctx context.Context, clusterID []byte) error
}

// KeySource delivers candidate keys for a keyed disk (rejoin.Client,
// recovery.Server). Run offers keys to the checker until one wins or ctx
// ends, and returns nil then; an error means the source gave up.
type KeySource interface {
	Run(ctx context.Context, c *unlock.Checker) error
}

// tracker is the status the flow reports (status.Tracker).
type tracker interface {
	SetPhase(phase string)
	SetDiskUUID(uuid string)
	Attempt(err error)
}

// Components are the Flow's required parts.
type Components struct {
	Headers    headers
	Mapper     mapper
	Filesystem filesystem
	Latch      latch
	Status     tracker
	Log        *slog.Logger
	// Sources race to deliver the key of a keyed disk (rejoin, recovery).
	Sources map[string]KeySource
}

// Options are the Flow's settings; the zero value uses the defaults.
type Options struct {
	// PassphrasePath is where a fresh disk's one-time passphrase goes
	// (default DefaultPassphrasePath). Its directory is created 0700.
	PassphrasePath string
	// MountPoint is where the state filesystem is mounted (default
	// DefaultMountPoint).
	MountPoint string
	// MapperName names the decrypted device (default DefaultMapperName).
	MapperName string
	// KeyTimeout ends the wait for the key of a keyed disk; zero waits until
	// the context ends.
	KeyTimeout time.Duration
	// Rand is the randomness for one-time passphrases (default
	// crypto/rand.Reader).
	Rand io.Reader
}

// Result is what a successful Run did.
type Result struct {
	// DiskUUID is the LUKS2 UUID of the state disk.
	DiskUUID string
	// Formatted is true when the disk was (re)formatted in this boot.
	Formatted bool
	// Device is the decrypted device that was mounted.
	Device string
	// KeySource names the source whose key opened a keyed disk.
	KeySource string
	// ClusterID is what was extended into the latch (keyed disks only).
	ClusterID []byte
}

// Flow is disk-mapper's boot flow.
type Flow struct {
	c    Components
	opts Options
	log  *slog.Logger
}

// New checks the components and fills in the options' defaults.
func New(c Components, opts Options) (*Flow, error) {
	switch {
	case c.Headers == nil:
		return nil, errors.New("setup: no LUKS2 headers: set Components.Headers")
	case c.Mapper == nil:
		return nil, errors.New("setup: no device mapper: set Components.Mapper")
	case c.Filesystem == nil:
		return nil, errors.New("setup: no filesystem: set Components.Filesystem")
	case c.Latch == nil:
		return nil, errors.New("setup: no cluster-ID latch: set Components.Latch")
	case c.Status == nil:
		return nil, errors.New("setup: no status tracker: set Components.Status")
	case c.Log == nil:
		return nil, errors.New("setup: no logger: set Components.Log")
	case len(c.Sources) == 0:
		return nil, errors.New("setup: no key sources: set Components.Sources (rejoin, recovery)")
	}
	if opts.PassphrasePath == "" {
		opts.PassphrasePath = DefaultPassphrasePath
	}
	if opts.MountPoint == "" {
		opts.MountPoint = DefaultMountPoint
	}
	if opts.MapperName == "" {
		opts.MapperName = DefaultMapperName
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.KeyTimeout < 0 {
		return nil, fmt.Errorf("setup: Options.KeyTimeout is %v: set it to a positive duration, or zero to wait for ever", opts.KeyTimeout)
	}
	if !filepath.IsAbs(opts.PassphrasePath) || !filepath.IsAbs(opts.MountPoint) {
		return nil, fmt.Errorf("setup: Options.PassphrasePath %q and MountPoint %q must be absolute paths", opts.PassphrasePath, opts.MountPoint)
	}
	return &Flow{c: c, opts: opts, log: c.Log}, nil
}

// Run sets up the state disk at path (as found by statedisk) and mounts it.
// Its errors map to exit codes with ExitCode.
func (f *Flow) Run(ctx context.Context, path string) (*Result, error) {
	f.c.Status.SetPhase(PhaseOpening)
	h, err := f.c.Headers.Open(path)
	if errors.Is(err, ErrNoHeader) {
		f.log.Info("state disk has no LUKS header: formatting it", "device", path)
		return f.format(ctx, path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening state disk %s: %w", path, err)
	}
	uuid := h.UUID()
	// The UUID names the disk to the join service and to the operator and
	// derives its key: a header must not choose how it is spelled.
	// internal/cryptsetup already refuses such a header; this holds for
	// any headers implementation.
	if err := keys.CheckDiskUUID(uuid); err != nil {
		return nil, errors.Join(fmt.Errorf("state disk %s: %w: %w", path, ErrHeaderInvalid, err), h.Close())
	}
	f.c.Status.SetDiskUUID(uuid)
	state, err := h.State()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("reading state of disk %s: %w", uuid, err), h.Close())
	}
	if !state.Keyed {
		if err := h.Close(); err != nil {
			return nil, fmt.Errorf("closing state disk %s: %w", uuid, err)
		}
		// See the package documentation: the token says the disk never
		// held cluster data, and its one-time passphrase is gone.
		f.log.Warn("state disk was formatted but never keyed: formatting it again", "device", path, "disk_uuid", uuid)
		return f.format(ctx, path)
	}
	defer h.Close()
	f.log.Info("state disk is keyed: waiting for its key", "device", path, "disk_uuid", uuid, "generation", state.Generation)
	return f.unlock(ctx, path, h)
}

func (f *Flow) format(ctx context.Context, path string) (*Result, error) {
	f.c.Status.SetPhase(PhaseFormatting)
	pass := make(keys.Secret, keys.SecretSize)
	defer pass.Zero()
	if _, err := io.ReadFull(f.opts.Rand, pass); err != nil {
		return nil, fmt.Errorf("drawing one-time passphrase: %w", err)
	}
	// The file first: a crash after Format leaves a passphrase in /run
	// that opens the disk, never a disk nobody can open in this boot.
	if err := writeSecretFile(f.opts.PassphrasePath, pass); err != nil {
		return nil, fmt.Errorf("writing one-time passphrase: %w", err)
	}
	h, err := f.c.Headers.Format(ctx, path, pass)
	if err != nil {
		return nil, fmt.Errorf("formatting state disk %s: %w", path, err)
	}
	uuid := h.UUID()
	if err := keys.CheckDiskUUID(uuid); err != nil {
		return nil, errors.Join(fmt.Errorf("state disk %s just formatted: %w: %w", path, ErrHeaderInvalid, err), h.Close())
	}
	if err := h.Close(); err != nil {
		return nil, fmt.Errorf("closing state disk %s: %w", uuid, err)
	}
	f.c.Status.SetDiskUUID(uuid)
	f.log.Info("formatted state disk", "device", path, "disk_uuid", uuid)
	dev, err := f.c.Mapper.Activate(ctx, path, f.opts.MapperName, pass)
	if err != nil {
		return nil, fmt.Errorf("opening state disk %s as %s: %w", uuid, f.opts.MapperName, err)
	}
	if err := f.c.Filesystem.Mkfs(ctx, dev); err != nil {
		return nil, fmt.Errorf("making filesystem on %s: %w", dev, err)
	}
	f.c.Status.SetPhase(PhaseMounting)
	if err := f.c.Filesystem.Mount(ctx, dev, f.opts.MountPoint); err != nil {
		return nil, fmt.Errorf("mounting %s on %s: %w", dev, f.opts.MountPoint, err)
	}
	f.c.Status.SetPhase(PhaseReady)
	return &Result{DiskUUID: uuid, Formatted: true, Device: dev}, nil
}

// unlock races the key sources, then opens, mounts and latches the disk.
func (f *Flow) unlock(ctx context.Context, path string, h Header) (*Result, error) {
	f.c.Status.SetPhase(PhaseWaiting)
	uuid := h.UUID()
	checker := unlock.NewChecker(h, uuid)
	cand, err := f.race(ctx, checker)
	if err != nil {
		return nil, err
	}
	defer cand.Zero()
	f.log.Info("key opened the state disk", "disk_uuid", uuid, "source", cand.Source, "generation", cand.Generation)

	f.c.Status.SetPhase(PhaseMounting)
	dev, err := f.c.Mapper.Activate(ctx, path, f.opts.MapperName, cand.DiskKey)
	if err != nil {
		return nil, fmt.Errorf("opening state disk %s as %s: %w", uuid, f.opts.MapperName, err)
	}
	if err := f.c.Filesystem.Mount(ctx, dev, f.opts.MountPoint); err != nil {
		return nil, fmt.Errorf("mounting %s on %s: %w", dev, f.opts.MountPoint, err)
	}

	f.c.Status.SetPhase(PhaseLatching)
	saltPath := filepath.Join(f.opts.MountPoint, MeasurementSaltPath)
	salt, err := readSalt(saltPath)
	if err != nil {
		return nil, fmt.Errorf("disk %s is keyed but its measurement salt is unusable (the bootstrapper stores it at join): %w", uuid, err)
	}
	clusterID, err := keys.ClusterID(cand.MeasurementSecret, salt)
	if err != nil {
		return nil, fmt.Errorf("deriving cluster ID: %w", err)
	}
	if err := f.c.Latch.Extend(ctx, clusterID); err != nil {
		return nil, fmt.Errorf("extending cluster-ID latch: %w", err)
	}
	f.log.Info("extended cluster-ID latch", "disk_uuid", uuid, "cluster_id", fmt.Sprintf("%x", clusterID))
	f.c.Status.SetPhase(PhaseReady)
	return &Result{DiskUUID: uuid, Device: dev, KeySource: cand.Source, ClusterID: clusterID}, nil
}

// race runs every source until a key wins, the wait times out, or every
// source has given up, then stops them all.
func (f *Flow) race(ctx context.Context, checker *unlock.Checker) (*unlock.Candidate, error) {
	waitCtx := ctx
	if f.opts.KeyTimeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, f.opts.KeyTimeout)
		defer cancel()
	}
	srcCtx, stop := context.WithCancel(waitCtx)
	type ended struct {
		name string
		err  error
	}
	done := make(chan ended, len(f.c.Sources))
	for name, src := range f.c.Sources {
		go func() { done <- ended{name, src.Run(srcCtx, checker)} }()
	}
	running := len(f.c.Sources)
	// stopAll cancels the sources and waits for each to return, so that
	// none still serves or dials once the disk is open.
	stopAll := func() {
		stop()
		for ; running > 0; running-- {
			e := <-done
			if e.err != nil && !errors.Is(e.err, context.Canceled) && !errors.Is(e.err, context.DeadlineExceeded) {
				f.log.Warn("key source ended with an error", "source", e.name, "error", e.err)
			}
		}
	}
	var lastErr error
	for {
		select {
		case <-checker.Won():
			stopAll()
			return checker.Wait(ctx)
		case <-waitCtx.Done():
			stopAll()
			// A key may have won at the same moment: select picks either.
			select {
			case <-checker.Won():
				return checker.Wait(ctx)
			default:
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("waiting %v for the key of disk %s: %w", f.opts.KeyTimeout, checker.DiskUUID(), ErrNoKey)
		case e := <-done:
			running--
			if e.err != nil {
				lastErr = fmt.Errorf("%s: %w", e.name, e.err)
				f.log.Error("key source gave up", "source", e.name, "error", e.err)
				f.c.Status.Attempt(lastErr)
			} else {
				f.log.Info("key source ended", "source", e.name)
			}
			if running == 0 {
				select {
				case <-checker.Won():
					stopAll()
					return checker.Wait(ctx)
				default:
				}
				stop()
				return nil, fmt.Errorf("every key source ended without a key for disk %s (last error: %v): %w", checker.DiskUUID(), lastErr, ErrNoKey)
			}
		}
	}
}
