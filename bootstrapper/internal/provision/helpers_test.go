package provision

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodelock"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/latch"
	"github.com/cloister-dev/cloister/internal/status"
)

// fakeKubeadm is a FAKE kubeadm: it records every call and, like the real
// one, leaves kubelet.conf after a join and admin.conf after an init.
type fakeKubeadm struct {
	kubeletConf, adminConf string
	failWith               error

	mu      sync.Mutex
	calls   []string
	configs map[string][]byte
}

func newFakeKubeadm(dir string) *fakeKubeadm {
	return &fakeKubeadm{kubeletConf: filepath.Join(dir, "kubelet.conf"), adminConf: filepath.Join(dir, "admin.conf"), configs: map[string][]byte{}}
}

func (k *fakeKubeadm) record(call, configPath string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, call)
	if configPath != "" {
		b, err := os.ReadFile(configPath)
		if err != nil {
			return err
		}
		k.configs[call] = b
	}
	return k.failWith
}

func (k *fakeKubeadm) Join(_ context.Context, configPath string) error {
	if err := k.record("join", configPath); err != nil {
		return err
	}
	// Like kubeadm join with the bootstrapper's kubelet.conf in place: the
	// kubelet uses it and nothing rewrites it.
	if _, err := os.Stat(k.kubeletConf); err == nil {
		return nil
	}
	return os.WriteFile(k.kubeletConf, []byte("kubelet kubeconfig"), 0o600)
}

func (k *fakeKubeadm) Init(_ context.Context, configPath string) error {
	if err := k.record("init", configPath); err != nil {
		return err
	}
	return os.WriteFile(k.adminConf, []byte("apiVersion: v1\nkind: Config\n"), 0o600)
}

func (k *fakeKubeadm) Reset(context.Context) error { return k.record("reset", "") }

func (k *fakeKubeadm) count(call string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, c := range k.calls {
		if c == call {
			n++
		}
	}
	return n
}

// fakeStarter is a FAKE join-service starter (systemctl in production).
type fakeStarter struct{ starts int }

func (s *fakeStarter) Start(context.Context) error { s.starts++; return nil }

// fakeIdentity is a FAKE join service identity maker (kubeadm kubeconfig
// user and RBAC through admin.conf in production): it records the user
// configuration it was given.
type fakeIdentity struct {
	fail    error
	calls   int
	userCfg []byte
}

func (f *fakeIdentity) Ensure(_ context.Context, userConfigPath string) error {
	f.calls++
	b, err := os.ReadFile(userConfigPath)
	f.userCfg = b
	if err != nil {
		return err
	}
	return f.fail
}

// fakeRebooter is a FAKE reboot.
type fakeRebooter struct{ reboots int }

func (r *fakeRebooter) Reboot(context.Context) error { r.reboots++; return nil }

// testNode is a node on the host: a REAL LUKS2 header on a file image
// formatted with a one-time passphrase as disk-mapper leaves it, the REAL
// latch in the TPM simulator's PCR 15, and a state directory.
type testNode struct {
	stateDir, runDir, etcDir string
	image, uuid              string
	oneTime                  []byte
	secrets                  *keys.ClusterSecrets
	latch                    clusterLatch
	sim                      io.ReadWriteCloser
	kubeadm                  *fakeKubeadm
	starter                  *fakeStarter
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	n := &testNode{stateDir: t.TempDir(), runDir: t.TempDir(), etcDir: t.TempDir()}
	n.image = filepath.Join(t.TempDir(), "state.img")
	f, err := os.Create(n.image)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Truncate(32<<20), f.Close()); err != nil {
		t.Fatal(err)
	}
	n.oneTime = randomKey(t)
	if n.uuid, err = cryptsetup.Format(context.Background(), n.image, n.oneTime, cryptsetup.FormatOptions{}); err != nil {
		t.Fatalf("Format: %v", err)
	}
	if err := os.WriteFile(n.passphrasePath(), n.oneTime, 0o600); err != nil {
		t.Fatal(err)
	}
	if n.secrets, err = keys.NewClusterSecrets(rand.Reader); err != nil {
		t.Fatal(err)
	}
	n.sim = tpmtest.Simulator(t)
	n.latch = latch.NewTPM(n.sim)
	n.kubeadm = newFakeKubeadm(n.etcDir)
	n.starter = &fakeStarter{}
	return n
}

func randomKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func (n *testNode) passphrasePath() string { return filepath.Join(n.runDir, "one-time-passphrase") }

func (n *testNode) diskKey(t testing.TB) keys.Secret {
	t.Helper()
	k, err := n.secrets.DiskKey(n.uuid, keys.FirstGeneration)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (n *testNode) clusterID(t testing.TB) []byte {
	t.Helper()
	id, err := n.secrets.ClusterID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// ticket is a validated join ticket as the join client hands it over.
func (n *testNode) ticket(t testing.TB) *Ticket {
	return &Ticket{
		DiskKey:           n.diskKey(t),
		DiskKeyGeneration: keys.FirstGeneration,
		MeasurementSecret: bytes.Clone(n.secrets.MeasurementSecret),
		MeasurementSalt:   bytes.Clone(n.secrets.MeasurementSalt),
		Kubeadm: kubeadm.Join{NodeName: "worker-1", APIServerEndpoint: "10.0.0.1:6443", Token: "abcdef.0123456789abcdef",
			CACertHashes: []string{"sha256:" + strings.Repeat("ab", 32)}},
		KubeletCert:       []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"),
		KubeletKey:        []byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"),
		KubernetesVersion: "v1.37.2",
		TokenExpiry:       time.Now().Add(time.Hour),
	}
}

func (n *testNode) initInputs(t testing.TB) *InitInputs {
	s := *n.secrets
	return &InitInputs{Secrets: &s, DiskKey: n.diskKey(t), DiskKeyGeneration: keys.FirstGeneration, Kubeadm: kubeadm.Init{NodeName: "cp-1", KubernetesVersion: "v1.37.2", CertificateKey: strings.Repeat("0a", 32)}}
}

// run is one bootstrapper process: it opens the store with the fault
// injection fault (nil: none), takes the lock for path unless the state is
// past it, and provisions.
func (n *testNode) run(t *testing.T, path nodestate.Path, fault func(string) error, opts Options) (*Result, *status.Tracker, error) {
	t.Helper()
	store, err := nodestate.Open(n.stateDir, nodestate.Options{Fault: fault})
	if err != nil {
		t.Fatalf("nodestate.Open: %v", err)
	}
	switch store.State().Phase {
	case nodestate.Fresh:
		lock := nodelock.New(store, "")
		err := lock.Acquire(path, func() error {
			if path == nodestate.PathJoin {
				return SaveTicket(n.stateDir, n.ticket(t))
			}
			return SaveInit(n.stateDir, n.initInputs(t))
		})
		if err != nil {
			return nil, nil, err
		}
	case nodestate.Joined, nodestate.Failed:
		return nil, nil, nil
	}
	dev, err := cryptsetup.Open(n.image, cryptsetup.FormatOptions{})
	if err != nil {
		t.Fatalf("cryptsetup.Open: %v", err)
	}
	defer dev.Close()
	tracker := status.New("bootstrapper", status.Options{})
	opts.OneTimePassphrasePath = n.passphrasePath()
	opts.KubeletPKIDir = filepath.Join(n.stateDir, "pki")
	opts.AdminKubeconfig = n.kubeadm.adminConf
	opts.KubeletKubeconfig = n.kubeadm.kubeletConf
	if opts.JoinServiceIdentity == nil {
		opts.JoinServiceIdentity = &fakeIdentity{}
	}
	if opts.JoinService == nil {
		opts.JoinService = n.starter
	}
	if opts.RetryWait == 0 {
		opts.RetryWait = time.Millisecond
	}
	p, err := New(store, dev, n.latch, n.kubeadm, tracker, slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Run(context.Background())
	return res, tracker, err
}

// openingKeys reports which of the known keys open the disk, on its REAL
// header.
func (n *testNode) openingKeys(t *testing.T) (oneTime, diskKey bool) {
	t.Helper()
	dev, err := cryptsetup.Open(n.image, cryptsetup.FormatOptions{})
	if err != nil {
		t.Fatalf("cryptsetup.Open: %v", err)
	}
	defer dev.Close()
	check := func(k []byte) bool {
		_, err := dev.CheckKey(k)
		if err != nil && !errors.Is(err, cryptsetup.ErrKeyRejected) {
			t.Fatalf("CheckKey: %v", err)
		}
		return err == nil
	}
	return check(n.oneTime), check(n.diskKey(t))
}

func (n *testNode) state(t *testing.T) nodestate.State {
	t.Helper()
	s, err := nodestate.Open(n.stateDir, nodestate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s.State()
}

func (n *testNode) latchValue(t *testing.T) []byte {
	t.Helper()
	v, err := n.latch.Value(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}
