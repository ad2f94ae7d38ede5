package provision

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/latch"
	"github.com/cloister-dev/cloister/internal/status"
)

func TestInitPathWritesSecretsAndReturnsKubeconfig(t *testing.T) {
	n := newTestNode(t)
	var lines []string
	res, _, err := n.run(t, nodestate.PathInit, nil, Options{Progress: func(l string) { lines = append(lines, l) }})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.ClusterID, n.clusterID(t)) || !bytes.HasPrefix(res.Kubeconfig, []byte("apiVersion: v1")) {
		t.Fatalf("result %x / %q", res.ClusterID, res.Kubeconfig)
	}
	// The join service reads the secrets from the state disk, 0600.
	path := filepath.Join(n.stateDir, ClusterSecretsFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cluster secrets file: %v, mode %v", err, fi.Mode())
	}
	got, err := keys.FileProvider{Path: path}.ClusterSecrets(context.Background())
	if err != nil || !bytes.Equal(got.MasterSecret, n.secrets.MasterSecret) || !bytes.Equal(got.MeasurementSecret, n.secrets.MeasurementSecret) {
		t.Fatalf("cluster secrets on disk differ: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(n.stateDir, CertificateKeyFile)); err != nil || string(b) != strings.Repeat("0a", 32) {
		t.Fatalf("certificate key file: %q, %v", b, err)
	}
	if n.starter.starts != 1 {
		t.Fatalf("join service started %d times", n.starter.starts)
	}
	if cfg := string(n.kubeadm.configs["init"]); !strings.Contains(cfg, "kind: InitConfiguration") || !strings.Contains(cfg, "certificateKey: "+strings.Repeat("0a", 32)) {
		t.Fatalf("kubeadm init config:\n%s", cfg)
	}
	if len(lines) < 4 || lines[len(lines)-1] != "joined" {
		t.Fatalf("progress lines %q", lines)
	}
}

func TestJoinPathWritesFiles0600(t *testing.T) {
	n := newTestNode(t)
	if _, _, err := n.run(t, nodestate.PathJoin, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{MeasurementSaltPath, JoinConfigFile, "pki/" + KubeletCertFile, TicketFile, nodestate.FileName} {
		fi, err := os.Stat(filepath.Join(n.stateDir, p))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", p, err, fi.Mode())
		}
	}
	if cfg := string(n.kubeadm.configs["join"]); !strings.Contains(cfg, "kind: JoinConfiguration") || !strings.Contains(cfg, "name: worker-1") {
		t.Fatalf("kubeadm join config:\n%s", cfg)
	}
	// kubelet.conf is in place before kubeadm join and names the attested
	// certificate, so kubelet never asks for one of its own.
	kc, err := os.ReadFile(n.kubeadm.kubeletConf)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(n.kubeadm.kubeletConf); fi.Mode().Perm() != 0o600 {
		t.Errorf("kubelet.conf mode %v, want 0600", fi.Mode().Perm())
	}
	if want := "client-certificate: " + filepath.Join(n.stateDir, "pki", KubeletCertFile); !strings.Contains(string(kc), want) {
		t.Errorf("kubelet.conf does not name the issued certificate (%s):\n%s", want, kc)
	}
}

func TestFailurePolicy(t *testing.T) {
	t.Run("latch holds another cluster's ID: fails at once, no retries", func(t *testing.T) {
		n := newTestNode(t)
		counted := &countingLatch{clusterLatch: n.latch}
		n.latch = counted
		other := bytes.Repeat([]byte{7}, 32)
		if err := n.latch.Extend(context.Background(), other); err != nil {
			t.Fatal(err)
		}
		_, tracker, err := n.run(t, nodestate.PathJoin, nil, Options{})
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("err = %v, want ErrFailed", err)
		}
		st := n.state(t)
		if st.Phase != nodestate.Failed || st.FailedIn != nodestate.Keyed || !strings.HasPrefix(st.Reason, "latch:") {
			t.Fatalf("state %+v", st)
		}
		if counted.checks != 1 {
			t.Fatalf("latch checked %d times, want 1 (a permanent error is not retried)", counted.checks)
		}
		if !strings.Contains(tracker.Snapshot().GetLastError(), "latch") {
			t.Fatalf("status shows %q", tracker.Snapshot().GetLastError())
		}
		if got := n.latchValue(t); !bytes.Equal(got, latch.ExpectedTPM(other)) {
			t.Fatal("the latch was extended again")
		}
		if n.kubeadm.count("join") != 0 {
			t.Fatal("kubeadm ran on a failed node")
		}
	})
	t.Run("disk step keeps failing (fake keyslots): bounded retries then Failed", func(t *testing.T) {
		n := newTestNode(t)
		store := lockedStore(t, n, nodestate.PathJoin)
		disk := &fakeKeyslots{err: errors.New("device busy")}
		p := newProvisioner(t, n, store, disk, Options{MaxAttempts: 3})
		if _, err := p.Run(context.Background()); !errors.Is(err, ErrFailed) {
			t.Fatalf("err = %v, want ErrFailed", err)
		}
		if disk.calls != 3 {
			t.Fatalf("rekey tried %d times, want 3", disk.calls)
		}
		if st := store.State(); st.FailedIn != nodestate.Locked || !strings.Contains(st.Reason, "device busy") {
			t.Fatalf("state %+v", st)
		}
	})
	t.Run("kubeadm join fails: not retried, Failed, reset and reboot when asked", func(t *testing.T) {
		n := newTestNode(t)
		n.kubeadm.failWith = errors.New("exit code 1")
		reb := &fakeRebooter{}
		_, _, err := n.run(t, nodestate.PathJoin, nil, Options{ResetOnFailure: true, Rebooter: reb})
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("err = %v, want ErrFailed", err)
		}
		if n.kubeadm.count("join") != 1 || n.kubeadm.count("reset") != 1 || reb.reboots != 1 {
			t.Fatalf("join %d, reset %d, reboot %d; want 1 each", n.kubeadm.count("join"), n.kubeadm.count("reset"), reb.reboots)
		}
		if st := n.state(t); st.FailedIn != nodestate.KubeadmStarted {
			t.Fatalf("state %+v", st)
		}
		// A restart reports the failure and does nothing.
		if _, _, err := n.run(t, nodestate.PathJoin, nil, Options{}); err != nil {
			t.Fatalf("restart of a failed node: %v", err)
		}
		if n.kubeadm.count("join") != 1 {
			t.Fatal("kubeadm ran again on a failed node")
		}
	})
	t.Run("inputs missing after the lock: Failed", func(t *testing.T) {
		n := newTestNode(t)
		store := lockedStore(t, n, nodestate.PathJoin)
		if err := os.Remove(filepath.Join(n.stateDir, TicketFile)); err != nil {
			t.Fatal(err)
		}
		p := newProvisioner(t, n, store, &fakeKeyslots{}, Options{})
		if _, err := p.Run(context.Background()); !errors.Is(err, ErrFailed) {
			t.Fatalf("err = %v, want ErrFailed", err)
		}
	})
	t.Run("shutdown is not a failure (fake keyslots)", func(t *testing.T) {
		n := newTestNode(t)
		store := lockedStore(t, n, nodestate.PathJoin)
		ctx, cancel := context.WithCancel(context.Background())
		disk := &fakeKeyslots{err: errors.New("slow"), onCall: cancel}
		p := newProvisioner(t, n, store, disk, Options{})
		if _, err := p.Run(ctx); err == nil || errors.Is(err, ErrFailed) {
			t.Fatalf("err = %v, want a shutdown error", err)
		}
		if st := store.State(); st.Phase != nodestate.Locked {
			t.Fatalf("phase %s after shutdown, want locked (resumable)", st.Phase)
		}
	})
}

func TestSavedInputsMustBePrivate(t *testing.T) {
	n := newTestNode(t)
	store := lockedStore(t, n, nodestate.PathJoin)
	if err := os.Chmod(filepath.Join(n.stateDir, TicketFile), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newProvisioner(t, n, store, &fakeKeyslots{}, Options{})
	if _, err := p.Run(context.Background()); !errors.Is(err, ErrFailed) {
		t.Fatalf("err = %v: a world-readable ticket must be refused", err)
	}
}

func TestNewNamesTheFix(t *testing.T) {
	n := newTestNode(t)
	store := lockedStore(t, n, nodestate.PathJoin)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tr := status.New("bootstrapper", status.Options{})
	for name, opts := range map[string]Options{
		"negative attempts":      {MaxAttempts: -1},
		"reset without rebooter": {ResetOnFailure: true},
		"negative retry wait":    {RetryWait: -1},
	} {
		if _, err := New(store, &fakeKeyslots{}, n.latch, n.kubeadm, tr, log, opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// countingLatch is the REAL latch, with its reset checks counted.
type countingLatch struct {
	clusterLatch
	checks int
}

func (c *countingLatch) CheckReset(ctx context.Context) error {
	c.checks++
	return c.clusterLatch.CheckReset(ctx)
}

// fakeKeyslots is a FAKE LUKS2 device whose Rekey fails as told.
type fakeKeyslots struct {
	err    error
	calls  int
	onCall func()
}

func (f *fakeKeyslots) Rekey(context.Context, []byte, []byte, uint32) error {
	f.calls++
	if f.onCall != nil {
		f.onCall()
	}
	return f.err
}

func lockedStore(t *testing.T, n *testNode, path nodestate.Path) *nodestate.Store {
	t.Helper()
	store, err := nodestate.Open(n.stateDir, nodestate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveTicket(n.stateDir, n.ticket(t)); err != nil {
		t.Fatal(err)
	}
	if err := store.Lock(path); err != nil {
		t.Fatal(err)
	}
	return store
}

func newProvisioner(t *testing.T, n *testNode, store *nodestate.Store, disk keyslots, opts Options) *Provisioner {
	t.Helper()
	opts.OneTimePassphrasePath = n.passphrasePath()
	opts.KubeletPKIDir = filepath.Join(n.stateDir, "pki")
	opts.AdminKubeconfig, opts.KubeletKubeconfig = n.kubeadm.adminConf, n.kubeadm.kubeletConf
	opts.RetryWait = 1
	p, err := New(store, disk, n.latch, n.kubeadm, status.New("bootstrapper", status.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestInitGivesTheJoinServiceItsIdentityFirst checks that init makes the join
// service's identity (with a ClusterConfiguration that has no
// controlPlaneEndpoint, so the kubeconfig names this node's API server)
// before it starts the join service, and that a node whose identity cannot
// be made fails instead of starting the service some other way.
func TestInitGivesTheJoinServiceItsIdentityFirst(t *testing.T) {
	// Subtests: one node (one TPM simulator) at a time.
	t.Run("identity before the join service starts", func(t *testing.T) {
		n := newTestNode(t)
		id := &fakeIdentity{}
		if _, _, err := n.run(t, nodestate.PathInit, nil, Options{JoinServiceIdentity: id}); err != nil {
			t.Fatal(err)
		}
		if id.calls != 1 || n.starter.starts != 1 {
			t.Fatalf("identity made %d times, join service started %d times; want 1 and 1", id.calls, n.starter.starts)
		}
		if cfg := string(id.userCfg); !strings.Contains(cfg, "kind: ClusterConfiguration") || strings.Contains(cfg, "controlPlaneEndpoint") {
			t.Fatalf("user configuration:\n%s", cfg)
		}
	})
	t.Run("no identity, no join service", func(t *testing.T) {
		n := newTestNode(t)
		failing := &fakeIdentity{fail: errors.New("fake: API server unreachable")}
		_, _, err := n.run(t, nodestate.PathInit, nil, Options{JoinServiceIdentity: failing, MaxAttempts: 2, RetryWait: time.Millisecond})
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("run with a failing identity: %v, want ErrFailed", err)
		}
		if st := n.state(t); st.FailedIn != "join-service-identity" && !strings.Contains(st.Reason, "join-service-identity") {
			t.Errorf("failed state %+v, want it to name join-service-identity", st)
		}
		if failing.calls != 2 || n.starter.starts != 0 {
			t.Errorf("identity tried %d times, join service started %d times; want 2 and 0", failing.calls, n.starter.starts)
		}
	})
}
