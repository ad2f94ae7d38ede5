package provision

// Crash tests: the bootstrapper is stopped at every persisted transition
// (FAULT INJECTION right before and right after each write of the state
// file) and started again on the same state directory, the same REAL LUKS2
// header (file image) and the same REAL latch (TPM simulator; a restart is
// not a reboot, so PCR 15 keeps its value). kubeadm is a FAKE that counts
// its runs. The simulator is one per process: these tests are serial.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/latch"
)

var errCrash = errors.New("crash (injected)")

func crashPoints() []string {
	var pts []string
	for _, p := range []nodestate.Phase{nodestate.Locked, nodestate.Keyed, nodestate.Configured, nodestate.KubeadmStarted, nodestate.Joined} {
		pts = append(pts, "before:"+string(p), "after:"+string(p))
	}
	return pts
}

func TestCrashAtEveryTransitionThenRestart(t *testing.T) {
	for _, path := range []nodestate.Path{nodestate.PathJoin, nodestate.PathInit} {
		for _, point := range crashPoints() {
			t.Run(fmt.Sprintf("%s/%s", path, point), func(t *testing.T) {
				n := newTestNode(t)
				crashed := false
				_, _, err := n.run(t, path, func(p string) error {
					if p == point && !crashed {
						crashed = true
						return errCrash
					}
					return nil
				}, Options{})
				if !errors.Is(err, errCrash) {
					t.Fatalf("first run: %v, want the injected crash", err)
				}
				if st := n.state(t); st.Phase == nodestate.Failed {
					t.Fatalf("a crash is not a failure: %+v", st)
				}
				// Never without a working keyslot: a known key opens the disk.
				if oneTime, diskKey := n.openingKeys(t); !oneTime && !diskKey {
					t.Fatal("after the crash no known key opens the disk")
				}

				// Restart, no faults.
				_, tracker, err := n.run(t, path, nil, Options{})
				st := n.state(t)
				call := map[nodestate.Path]string{nodestate.PathJoin: "join", nodestate.PathInit: "init"}[path]
				if c := n.kubeadm.count(call); c > 1 {
					t.Fatalf("kubeadm %s ran %d times", call, c)
				}
				switch st.Phase {
				case nodestate.Joined:
					if err != nil {
						t.Fatalf("restart: %v", err)
					}
					if c := n.kubeadm.count(call); c != 1 {
						t.Fatalf("joined with kubeadm %s run %d times, want 1", call, c)
					}
				case nodestate.Failed:
					// Only kubeadm's own window may end here: KubeadmStarted
					// persisted, kubeadm not run, so it is not run twice.
					if point != "after:kubeadm-started" {
						t.Fatalf("restart after %s failed: %+v", point, st)
					}
					if !errors.Is(err, ErrFailed) || st.FailedIn != nodestate.KubeadmStarted || st.Reason == "" {
						t.Fatalf("terminal state not reported clearly: err %v, state %+v", err, st)
					}
					if tracker.Snapshot().GetLastError() == "" {
						t.Fatal("the failure is not on status.v1")
					}
					if n.kubeadm.count(call) != 0 {
						t.Fatal("kubeadm ran before the crash point it should not have reached")
					}
				default:
					t.Fatalf("restart ended in %s (%v)", st.Phase, err)
				}
				// Keyed exactly to the derived key; the one-time passphrase is
				// gone from disk and from /run.
				if oneTime, diskKey := n.openingKeys(t); oneTime || !diskKey {
					t.Fatalf("keyslots: one-time opens %v, disk key opens %v", oneTime, diskKey)
				}
				if _, err := os.Stat(n.passphrasePath()); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("one-time passphrase still in /run: %v", err)
				}
				// The latch was extended exactly once.
				if got, want := n.latchValue(t), latch.ExpectedTPM(n.clusterID(t)); !bytes.Equal(got, want) {
					t.Fatalf("latch %x, want one extend: %x", got, want)
				}
				salt, err := os.ReadFile(filepath.Join(n.stateDir, MeasurementSaltPath))
				if err != nil || !bytes.Equal(salt, n.secrets.MeasurementSalt) {
					t.Fatalf("measurement salt on disk: %v", err)
				}
				// A third start of a finished node does nothing more.
				if _, _, err := n.run(t, path, nil, Options{}); err != nil {
					t.Fatalf("third start: %v", err)
				}
				if c := n.kubeadm.count(call); c > 1 {
					t.Fatalf("kubeadm %s ran %d times after a third start", call, c)
				}
			})
		}
	}
}

// TestRebootAfterDiskKeyedResumes: the bootstrapper dies after the LUKS2
// token says "keyed" but before Keyed is persisted, and the machine reboots
// (the TPM simulator is power-cycled, /run is gone). disk-mapper then finds a
// keyed disk, unlocks it with the key the join service derives, reads the
// measurement salt the bootstrapper wrote before the re-key, and extends the
// latch (done here by hand: disk-mapper is another component). The
// bootstrapper resumes, leaves the latch alone and joins once.
func TestRebootAfterDiskKeyedResumes(t *testing.T) {
	n := newTestNode(t)
	crashed := false
	_, _, err := n.run(t, nodestate.PathJoin, func(p string) error {
		if p == "before:keyed" && !crashed {
			crashed = true
			return errCrash
		}
		return nil
	}, Options{})
	if !errors.Is(err, errCrash) {
		t.Fatalf("first run: %v", err)
	}
	// Reboot.
	resetter, ok := n.sim.(interface{ Reset() error })
	if !ok {
		t.Fatal("simulator cannot power-cycle")
	}
	if err := resetter.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := n.latch.CheckReset(context.Background()); err != nil {
		t.Fatalf("latch after the reboot: %v", err)
	}
	if err := os.RemoveAll(n.runDir); err != nil {
		t.Fatal(err)
	}
	// disk-mapper's part: the derived key opens the keyed disk, the salt is
	// on it, the latch gets the cluster ID.
	if _, diskKey := n.openingKeys(t); !diskKey {
		t.Fatal("the derived key does not open the keyed disk")
	}
	salt, err := os.ReadFile(filepath.Join(n.stateDir, MeasurementSaltPath))
	if err != nil {
		t.Fatalf("disk-mapper would find no measurement salt on the keyed disk: %v", err)
	}
	id, err := keys.ClusterID(n.secrets.MeasurementSecret, salt)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.latch.Extend(context.Background(), id); err != nil {
		t.Fatal(err)
	}

	if _, _, err := n.run(t, nodestate.PathJoin, nil, Options{}); err != nil {
		t.Fatalf("resume after the reboot: %v", err)
	}
	if st := n.state(t); st.Phase != nodestate.Joined || n.kubeadm.count("join") != 1 {
		t.Fatalf("state %s, kubeadm join %d times", st.Phase, n.kubeadm.count("join"))
	}
	if got := n.latchValue(t); !bytes.Equal(got, latch.ExpectedTPM(id)) {
		t.Fatalf("latch %x: extended more than once", got)
	}
	if oneTime, diskKey := n.openingKeys(t); oneTime || !diskKey {
		t.Fatalf("keyslots: one-time %v, disk key %v", oneTime, diskKey)
	}
}

// TestKubeadmKilledMidRunEndsFailed: kubeadm writes kubelet.conf or
// admin.conf early in its run, so a restart that finds them but no record of
// kubeadm's success must not call the node joined.
func TestKubeadmKilledMidRunEndsFailed(t *testing.T) {
	for _, path := range []nodestate.Path{nodestate.PathJoin, nodestate.PathInit} {
		t.Run(string(path), func(t *testing.T) {
			n := newTestNode(t)
			crashed := false
			_, _, err := n.run(t, path, func(p string) error {
				if p == "after:"+string(nodestate.KubeadmStarted) && !crashed {
					crashed = true
					return errCrash
				}
				return nil
			}, Options{})
			if !errors.Is(err, errCrash) {
				t.Fatalf("first run: %v, want the injected crash", err)
			}
			// What a kubeadm killed half-way leaves behind.
			for _, f := range []string{n.kubeadm.kubeletConf, n.kubeadm.adminConf} {
				if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err = n.run(t, path, nil, Options{})
			if st := n.state(t); !errors.Is(err, ErrFailed) || st.Phase != nodestate.Failed {
				t.Fatalf("restart after kubeadm was killed: err %v, state %+v; want Failed", err, st)
			}
		})
	}
}
