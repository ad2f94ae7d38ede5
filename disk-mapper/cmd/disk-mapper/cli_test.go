package main

// The REAL cloister CLI, built from this checkout and run as a process,
// against disk-mapper's REAL recovery server: a keyed state disk (a REAL
// LUKS2 header on a file image, re-keyed to the cluster's derived key) waits
// for its key while the join service is down; the TPM simulator attests the
// node with an AK certificate from a FAKE platform CA, and the REAL latch
// (PCR 15) is extended at the end. device-mapper, mkfs and mount are FAKES
// (the host has no device-mapper). The CLI is checked only through what an
// operator sees: its exit code and output, and what happens on the node.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cloister-dev/cloister/cli/clitest"
	"github.com/cloister-dev/cloister/disk-mapper/internal/recovery"
	"github.com/cloister-dev/cloister/disk-mapper/internal/rejoin"
	"github.com/cloister-dev/cloister/disk-mapper/internal/setup"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/latch"
	"github.com/cloister-dev/cloister/internal/retry"
	"github.com/cloister-dev/cloister/internal/status"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// fakeMapper is a FAKE device-mapper (the host has none): it checks the key
// on the real header first, as dm-crypt would refuse a wrong one, and
// records it.
type fakeMapper struct {
	dir string
	mu  sync.Mutex
	key []byte
}

func (m *fakeMapper) Activate(_ context.Context, path, name string, key []byte) (string, error) {
	d, err := cryptsetup.Open(path, cryptsetup.FormatOptions{})
	if err != nil {
		return "", err
	}
	defer d.Close()
	if _, err := d.CheckKey(key); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.key = bytes.Clone(key)
	return filepath.Join(m.dir, name), nil
}

func (m *fakeMapper) activatedKey() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.key
}

// fakeFilesystem is a FAKE mkfs and mount: the state "filesystem" is a
// directory that already holds what the bootstrapper stored at join.
type fakeFilesystem struct{}

func (fakeFilesystem) Mkfs(context.Context, string) error {
	return errors.New("fakeFilesystem: mkfs not expected on a keyed disk")
}

func (fakeFilesystem) Mount(_ context.Context, _, target string) error {
	_, err := os.Stat(target)
	return err
}

// nodeLog is the node's JSON log, safe for the flow's goroutines.
type nodeLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *nodeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns how many records have the message msg.
func (l *nodeLog) count(t *testing.T, msg string) int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	dec := json.NewDecoder(bytes.NewReader(l.buf.Bytes()))
	for {
		var rec struct{ Msg string }
		err := dec.Decode(&rec)
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("node log: %v", err)
		}
		if rec.Msg == msg {
			n++
		}
	}
}

// keyedImage returns a state disk image as a joined node leaves it:
// formatted with a one-time passphrase, then re-keyed to the key the
// cluster's secrets derive for it at keys.FirstGeneration.
func keyedImage(t *testing.T, secrets *keys.ClusterSecrets) (path, uuid string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "state.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Truncate(32<<20), f.Close()); err != nil {
		t.Fatal(err)
	}
	oneTime := make([]byte, 32)
	if _, err := rand.Read(oneTime); err != nil {
		t.Fatal(err)
	}
	if uuid, err = cryptsetup.Format(context.Background(), path, oneTime, cryptsetup.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := cryptsetup.Open(path, cryptsetup.FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	key, err := secrets.DiskKey(uuid, keys.FirstGeneration)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Rekey(context.Background(), oneTime, key, keys.FirstGeneration); err != nil {
		t.Fatal(err)
	}
	return path, uuid
}

// clusterDirWith writes a cluster directory the way `cloister init` leaves
// it: 0700, the secrets 0600.
func clusterDirWith(t *testing.T, s *keys.ClusterSecrets) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cluster")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteClusterSecrets(filepath.Join(dir, clitest.SecretsFile), s); err != nil {
		t.Fatal(err)
	}
	return dir
}

func tpmPolicy(pcrs map[int][]byte) []byte {
	var b strings.Builder
	b.WriteString("version: 1\nname: disk-mapper-cli-test\ntpm:\n  pcrs:\n")
	for i, v := range pcrs {
		b.WriteString("    \"" + strconv.Itoa(i) + "\": {value: \"" + hex.EncodeToString(v) + "\"}\n")
	}
	return []byte(b.String())
}

func writeTestFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func caPEM(ca *tpmtest.FakePlatformCA) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw})
}

// deadAddr is a loopback address nothing listens on: the join service is
// down.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestRealCLIRecoverAgainstRecoveryServerWithFakeMapper(t *testing.T) {
	cli := clitest.Build(t)
	files := t.TempDir()

	// The node: the TPM simulator, AK certificate from a FAKE platform CA.
	sim := tpmtest.Simulator(t)
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	issuer, err := tpm.NewIssuer(sim, tpm.IssuerOptions{AKCertificate: ca.CertifyAK(t, sim)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { issuer.Close() })
	pcrs := tpmtest.PCRs(t, sim)
	nodePolicy := tpmPolicy(map[int][]byte{0: pcrs[0], 7: pcrs[7]})
	otherCA := tpmtest.NewFakePlatformCA(t, "another fake platform CA")
	var (
		goodPolicy  = writeTestFile(t, files, "policy.yaml", nodePolicy)
		wrongPolicy = writeTestFile(t, files, "wrong-pcr0.yaml", tpmPolicy(map[int][]byte{0: bytes.Repeat([]byte{0xcd}, 32), 7: pcrs[7]}))
		caFile      = writeTestFile(t, files, "ak-ca.pem", caPEM(ca))
		otherCAFile = writeTestFile(t, files, "other-ak-ca.pem", caPEM(otherCA))
	)

	secrets, err := keys.NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	others, err := keys.NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clusterID, err := secrets.ClusterID()
	if err != nil {
		t.Fatal(err)
	}
	img, uuid := keyedImage(t, secrets)

	// The flow as disk-mapper's run builds it, with the join service down.
	tracker := status.New("disk-mapper", status.Options{})
	logs := &nodeLog{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	pol, err := policy.Parse(nodePolicy)
	if err != nil {
		t.Fatal(err)
	}
	joinValidators, err := platform.Validators(pol, platform.Anchors{TPMAKRoots: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	joinCreds, err := atls.NewCredentials(atls.Config{Issuer: issuer, Verifier: joinValidators, HandshakeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	backoff := retry.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, Multiplier: 2}
	rj, err := rejoin.New([]string{deadAddr(t)}, joinCreds, tracker, log, rejoin.Options{Backoff: &backoff, AttemptTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	recCreds, err := atls.NewCredentials(atls.Config{Issuer: issuer, AcceptUnattestedPeer: true, HandshakeTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	recLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recoveryAddr := recLis.Addr().String()
	mapper := &fakeMapper{dir: t.TempDir()}
	mount := t.TempDir()
	saltPath := filepath.Join(mount, setup.MeasurementSaltPath)
	if err := errors.Join(os.MkdirAll(filepath.Dir(saltPath), 0o700), os.WriteFile(saltPath, secrets.MeasurementSalt, 0o600)); err != nil {
		t.Fatal(err)
	}
	flow, err := setup.New(setup.Components{
		Headers:    setup.LUKS{},
		Mapper:     mapper,
		Filesystem: fakeFilesystem{},
		Latch:      latch.NewTPM(sim),
		Status:     tracker,
		Log:        log,
		Sources:    map[string]setup.KeySource{"rejoin": rj, "recovery": recovery.New(recLis, recCreds, tracker, log)},
	}, setup.Options{PassphrasePath: filepath.Join(t.TempDir(), "one-time-passphrase"), MountPoint: mount})
	if err != nil {
		t.Fatal(err)
	}
	plain := grpc.NewServer(grpc.Creds(insecure.NewCredentials()), grpc.MaxRecvMsgSize(1<<10))
	statusv1.RegisterStatusServiceServer(plain, tracker)
	statusLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = plain.Serve(statusLis) }()
	t.Cleanup(plain.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	done := make(chan struct{})
	var (
		res    *setup.Result
		runErr error
	)
	go func() {
		defer close(done)
		res, runErr = flow.Run(ctx, img)
	}()
	t.Cleanup(func() { cancel(); <-done })
	waiting := func(t *testing.T) {
		t.Helper()
		select {
		case <-done:
			t.Fatalf("the flow ended (%+v, %v); want it still waiting for the key", res, runErr)
		default:
		}
		if ph := tracker.Snapshot().GetPhase(); ph != setup.PhaseWaiting {
			t.Fatalf("phase %q, want %q", ph, setup.PhaseWaiting)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); tracker.Snapshot().GetPhase() != setup.PhaseWaiting; {
		if time.Now().After(deadline) {
			t.Fatalf("the flow never waited for a key: %v", tracker.Snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}

	t.Run("status on the plain port shows the disk waiting", func(t *testing.T) {
		r := clitest.Run(t, cli, "status", "--node", statusLis.Addr().String(), "-o", "json")
		var st struct {
			Component string `json:"component"`
			Phase     string `json:"phase"`
			DiskUUID  string `json:"diskUUID"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || r.Code != clitest.ExitOK {
			t.Fatalf("status: %v\n%v", err, r)
		}
		if st.Component != "disk-mapper" || st.Phase != setup.PhaseWaiting || st.DiskUUID != uuid {
			t.Fatalf("status %+v, want disk-mapper %s on disk %s", st, setup.PhaseWaiting, uuid)
		}
	})

	rightDir := clusterDirWith(t, secrets)
	t.Run("verify --cluster-dir before recovery: latch not set", func(t *testing.T) {
		r := clitest.Run(t, cli, "verify", "--node", recoveryAddr, "--policy", goodPolicy, "--tpm-ak-roots", caFile, "--cluster-dir", rightDir, "-o", "json")
		var v struct {
			Verified bool `json:"verified"`
			Latch    *struct {
				Match bool   `json:"match"`
				Got   string `json:"got"`
			} `json:"latch"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &v); err != nil {
			t.Fatalf("verify: %v\n%v", err, r)
		}
		if r.Code != clitest.ExitLatch || !v.Verified || v.Latch == nil || v.Latch.Match || v.Latch.Got != hex.EncodeToString(make([]byte, 32)) {
			t.Fatalf("want exit %d with pcr[15] at reset, got %+v\n%v", clitest.ExitLatch, v.Latch, r)
		}
		waiting(t)
	})

	t.Run("recover refused", func(t *testing.T) {
		anotherUUID := "0b6f3c52-8a9e-4d1f-b2c7-5e0d9a4f7c31"
		tests := []struct {
			name     string
			args     []string
			wantCode int
			keySent  bool // the node received (and refused) a key
		}{
			{name: "cluster directory of another cluster: the key does not open the disk",
				args:     []string{"--disk-uuid", uuid, "--policy", goodPolicy, "--tpm-ak-roots", caFile, "--cluster-dir", clusterDirWith(t, others)},
				wantCode: clitest.ExitNodeRefused, keySent: true},
			{name: "key derived for another disk UUID",
				args:     []string{"--disk-uuid", anotherUUID, "--policy", goodPolicy, "--tpm-ak-roots", caFile, "--cluster-dir", rightDir},
				wantCode: clitest.ExitNodeRefused, keySent: true},
			{name: "pcr[0] pinned to another value: no key sent",
				args:     []string{"--disk-uuid", uuid, "--policy", wrongPolicy, "--tpm-ak-roots", caFile, "--cluster-dir", rightDir},
				wantCode: clitest.ExitRefused},
			{name: "AK certificate from an untrusted platform CA: no key sent",
				args:     []string{"--disk-uuid", uuid, "--policy", goodPolicy, "--tpm-ak-roots", otherCAFile, "--cluster-dir", rightDir},
				wantCode: clitest.ExitRefused},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := clitest.Run(t, cli, append([]string{"recover", "--node", recoveryAddr}, tt.args...)...)
				if r.Code != tt.wantCode || r.Stdout != "" {
					t.Fatalf("want exit %d and no disk UUID on stdout\n%v", tt.wantCode, r)
				}
				// The node logs refused keys at most once a minute (log
				// flooding), so the first refusal is in the log and the
				// node's own answer tells the cases apart: ExitNodeRefused
				// (it checked the key and refused it) or ExitRefused (the
				// CLI refused the node and sent nothing).
				if tt.keySent && logs.count(t, "recovery key refused") == 0 {
					t.Fatal("the node refused a key without logging it")
				}
				t.Logf("stderr:\n%s", r.Stderr)
				waiting(t)
			})
		}
		if mapper.activatedKey() != nil {
			t.Fatal("a refused key reached the device mapper")
		}
	})

	t.Run("recover with the cluster's directory opens the disk", func(t *testing.T) {
		r := clitest.Run(t, cli, "recover", "--node", recoveryAddr, "--disk-uuid", uuid, "--policy", goodPolicy, "--tpm-ak-roots", caFile, "--cluster-dir", rightDir)
		if r.Code != clitest.ExitOK || strings.TrimSpace(r.Stdout) != uuid {
			t.Fatalf("want exit 0 printing disk %s\n%v", uuid, r)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the flow did not end after recovery")
		}
		if runErr != nil {
			t.Fatalf("flow: %v", runErr)
		}
		if res.KeySource != "recovery" || res.DiskUUID != uuid || !bytes.Equal(res.ClusterID, clusterID) {
			t.Fatalf("result %+v, want disk %s opened by recovery, cluster ID %x", res, uuid, clusterID)
		}
		wantKey, _ := secrets.DiskKey(uuid, keys.FirstGeneration)
		if !bytes.Equal(mapper.activatedKey(), wantKey) {
			t.Fatal("the disk was activated with another key than the cluster's derived one")
		}
		got, err := latch.NewTPM(sim).Value(context.Background())
		if err != nil || !bytes.Equal(got, latch.ExpectedTPM(clusterID)) || !bytes.Equal(tpmtest.PCRs(t, sim)[latch.PCR], got) {
			t.Fatalf("pcr[15] = %x (%v), want %x", got, err, latch.ExpectedTPM(clusterID))
		}
		if ph := tracker.Snapshot().GetPhase(); ph != setup.PhaseReady {
			t.Fatalf("phase %q, want %q", ph, setup.PhaseReady)
		}
	})
}
