package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/internal/keys"
)

// startInitNode starts a REAL attested tpm node with a FAKE init service
// that expects the CLI's secrets in dir.
func startInitNode(t *testing.T, dir string, fake *fakeInitServer) (*testNode, string) {
	t.Helper()
	fake.secretsPath = filepath.Join(dir, secretsFileName)
	node := startTPMNode(t, nodeServices{init: fake})
	pol := writeTPMPolicy(t, "init", map[int]pcrPolicy{0: {value: node.pcrs(t)[0]}})
	return node, pol
}

// TestInit runs a full init against a FAKE init service behind real
// attested TLS: the secrets are saved 0600 before they are sent, the node
// receives exactly those, the kubeconfig is saved 0600 and the cluster ID
// printed; a second init into the same directory is refused.
func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	fake := &fakeInitServer{progress: []string{"generating kubeadm configuration", "running kubeadm init \x1b[2J\x1b]0;pwned\x07"}}
	node, pol := startInitNode(t, dir, fake)

	r := runCLI(t, append([]string{"init", "--cluster-dir", dir, "--name", "prod"}, node.trustArgs(pol)...)...)
	r.wantCode(t, exitOK)

	saved, err := keys.FileProvider{Path: filepath.Join(dir, secretsFileName)}.ClusterSecrets(context.Background())
	if err != nil {
		t.Fatalf("reading the saved secrets: %v", err)
	}
	req, atInit, mode, calls := fake.request()
	if calls != 1 || req == nil {
		t.Fatalf("node got %d Init calls", calls)
	}
	// Saved before sending: the file the node saw when Init arrived holds
	// the secrets it received, with mode 0600.
	fromDisk, err := keys.ParseClusterSecrets(atInit)
	if err != nil {
		t.Fatalf("secrets file when Init arrived: %v", err)
	}
	if mode != 0o600 {
		t.Errorf("secrets file mode when Init arrived = %04o, want 0600", mode)
	}
	for _, c := range []struct {
		name         string
		sent, atInit []byte
		final        []byte
	}{
		{"master secret", req.GetMasterSecret(), fromDisk.MasterSecret, saved.MasterSecret},
		{"master salt", req.GetMasterSalt(), fromDisk.MasterSalt, saved.MasterSalt},
		{"measurement secret", req.GetMeasurementSecret(), fromDisk.MeasurementSecret, saved.MeasurementSecret},
		{"measurement salt", req.GetMeasurementSalt(), fromDisk.MeasurementSalt, saved.MeasurementSalt},
	} {
		if len(c.sent) != keys.SecretSize || !bytes.Equal(c.sent, c.atInit) || !bytes.Equal(c.sent, c.final) {
			t.Errorf("%s: sent and saved values differ", c.name)
		}
	}
	if req.GetClusterName() != "prod" || req.GetKubernetesVersion() != "v1.37.2" || len(req.GetInitSecret()) != 0 {
		t.Errorf("request = name %q, version %q, init secret %d bytes", req.GetClusterName(), req.GetKubernetesVersion(), len(req.GetInitSecret()))
	}

	wantID, err := saved.ClusterID()
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != hex.EncodeToString(wantID)+"\n" {
		t.Errorf("stdout = %q, want the cluster ID %x", r.stdout, wantID)
	}
	for name, want := range map[string]string{kubeconfigFileName: fakeKubeconfig, clusterIDFileName: hex.EncodeToString(wantID) + "\n"} {
		checkFile(t, filepath.Join(dir, name), want, 0o600)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("cluster directory: %v, mode %v, want 0700", err, fi.Mode())
	}
	if !strings.Contains(r.stderr, "generating kubeadm configuration") || strings.ContainsAny(r.stderr, "\x1b\x07") {
		t.Errorf("progress not shown, or shown with the node's control characters:\n%q", r.stderr)
	}

	// A second init into the same directory never overwrites the secrets.
	before, _ := os.ReadFile(filepath.Join(dir, secretsFileName))
	r = runCLI(t, append([]string{"init", "--cluster-dir", dir}, node.trustArgs(pol)...)...)
	r.wantCode(t, exitLocal)
	if !strings.Contains(r.stderr, "refusing to overwrite") || !strings.Contains(r.stderr, "hint: ") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
	after, _ := os.ReadFile(filepath.Join(dir, secretsFileName))
	if !bytes.Equal(before, after) {
		t.Error("the second init changed the saved secrets")
	}
	if _, _, _, calls := fake.request(); calls != 1 {
		t.Errorf("the second init reached the node (%d calls)", calls)
	}
}

// TestInitRefused checks inits that must not complete, one per case.
func TestInitRefused(t *testing.T) {
	t.Run("node fails the policy: nothing generated or sent", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "cluster")
		fake := &fakeInitServer{}
		node, _ := startInitNode(t, dir, fake)
		pol := writeTPMPolicy(t, "wrong", map[int]pcrPolicy{4: {value: wrongPCR}})
		r := runCLI(t, append([]string{"init", "--cluster-dir", dir}, node.trustArgs(pol)...)...)
		r.wantCode(t, exitRefused)
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cluster directory created for a refused node: %v", err)
		}
		if _, _, _, calls := fake.request(); calls != 0 {
			t.Errorf("refused node got %d Init calls", calls)
		}
	})
	t.Run("FAKE node fails init: secrets kept", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "cluster")
		fake := &fakeInitServer{failure: "kubeadm init: exit status 1"}
		node, pol := startInitNode(t, dir, fake)
		r := runCLI(t, append([]string{"init", "--cluster-dir", dir}, node.trustArgs(pol)...)...)
		r.wantCode(t, exitNodeRefused)
		if !strings.Contains(r.stderr, "the node failed init: kubeadm init: exit status 1") || !strings.Contains(r.stderr, "hint: the secrets stay in") {
			t.Errorf("stderr:\n%s", r.stderr)
		}
		if _, err := (keys.FileProvider{Path: filepath.Join(dir, secretsFileName)}).ClusterSecrets(context.Background()); err != nil {
			t.Errorf("secrets not kept after a failed init: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, kubeconfigFileName)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("kubeconfig written after a failed init: %v", err)
		}
	})
	t.Run("FAKE node reports another cluster ID", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "cluster")
		node, pol := startInitNode(t, dir, &fakeInitServer{wrongID: true})
		r := runCLI(t, append([]string{"init", "--cluster-dir", dir}, node.trustArgs(pol)...)...)
		r.wantCode(t, exitNodeRefused)
		if !strings.Contains(r.stderr, "reports cluster ID") || r.stdout != "" {
			t.Errorf("%s", r)
		}
	})
	t.Run("node without init service", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "cluster")
		node := startTPMNode(t, nodeServices{})
		pol := writeTPMPolicy(t, "p", map[int]pcrPolicy{0: {value: node.pcrs(t)[0]}})
		r := runCLI(t, append([]string{"init", "--cluster-dir", dir}, node.trustArgs(pol)...)...)
		r.wantCode(t, exitNodeRefused)
		if !strings.Contains(r.stderr, "does not serve this") {
			t.Errorf("stderr:\n%s", r.stderr)
		}
	})
}

// TestInitWithoutStatusService checks that a node whose attested port
// serves init but no status.v1 is still attested, and initialized.
func TestInitWithoutStatusService(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	fake := &fakeInitServer{secretsPath: filepath.Join(dir, secretsFileName)}
	node := startTPMNode(t, nodeServices{init: fake, noStatus: true})
	pol := writeTPMPolicy(t, "init", map[int]pcrPolicy{0: {value: node.pcrs(t)[0]}})
	r := runCLI(t, append([]string{"init", "--cluster-dir", dir}, node.trustArgs(pol)...)...)
	r.wantCode(t, exitOK)
	if !strings.Contains(r.stderr, "attested: tpm") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
	bad := writeTPMPolicy(t, "bad", map[int]pcrPolicy{4: {value: wrongPCR}})
	dir2 := filepath.Join(t.TempDir(), "cluster")
	r = runCLI(t, append([]string{"init", "--cluster-dir", dir2}, node.trustArgs(bad)...)...)
	r.wantCode(t, exitRefused)
}

// TestInitSecret checks that the init secret file is sent without its
// trailing newline.
func TestInitSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	fake := &fakeInitServer{}
	node, pol := startInitNode(t, dir, fake)
	secretFile := filepath.Join(t.TempDir(), "init-secret")
	if err := os.WriteFile(secretFile, []byte("s3cret-words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, append([]string{"init", "--cluster-dir", dir, "--init-secret-file", secretFile}, node.trustArgs(pol)...)...)
	r.wantCode(t, exitOK)
	req, _, _, _ := fake.request()
	if string(req.GetInitSecret()) != "s3cret-words" {
		t.Fatalf("init secret sent = %q", req.GetInitSecret())
	}
}

func checkFile(t *testing.T, path, want string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), mode)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Errorf("%s = %q, %v; want %q", path, b, err, want)
	}
}
