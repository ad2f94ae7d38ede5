package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// TPMCA is the local CA that signs the EK certificates of a test's vTPMs,
// standing in for a TPM manufacturer. Nodes and the CLI trust RootPEM.
type TPMCA struct {
	// RootPEM is the CA's root certificate (PEM file): the EK root to trust.
	RootPEM string
	// IssuerPEM is the intermediate that signed the EK certificates.
	IssuerPEM string

	dir string
}

// NewTPMCA prepares a CA in a temporary directory; swtpm_localca creates its
// keys when the first TPM is manufactured (so RootPEM exists only after
// NewTPM). Tests never share or touch /var/lib/swtpm-localca.
func NewTPMCA(t TB) *TPMCA {
	t.Helper()
	localca := RequireTool(t, "swtpm_localca")
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	mkdirAll(t, ca)
	writeFile(t, filepath.Join(dir, "localca.conf"), fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca))
	writeFile(t, filepath.Join(dir, "localca.options"), "--platform-manufacturer Cloister\n--platform-version 2.1\n--platform-model e2e\n")
	writeFile(t, filepath.Join(dir, "setup.conf"), fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %[2]s/localca.conf\ncreate_certs_tool_options = %[2]s/localca.options\nactive_pcr_banks = sha256\n", localca, dir))
	return &TPMCA{
		RootPEM:   filepath.Join(ca, "swtpm-localca-rootca-cert.pem"),
		IssuerPEM: filepath.Join(ca, "issuercert.pem"),
		dir:       dir,
	}
}

// TPM is one node's vTPM: its state directory is the TPM's NV (EKs, their
// certificates, persistent handles) and is kept across the node's reboots;
// a fresh swtpm process serves it for each boot.
type TPM struct {
	// StateDir is swtpm's --tpmstate directory (absolute).
	StateDir string
}

// NewTPM manufactures a vTPM (RSA and ECC EKs, certificates in NV signed by
// ca, NV locked) in dir. It takes about two seconds.
func NewTPM(t TB, ca *TPMCA, dir string) *TPM {
	t.Helper()
	setup := RequireTool(t, "swtpm_setup")
	RequireTool(t, "swtpm")
	state, err := filepath.Abs(filepath.Join(dir, "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	mkdirAll(t, state)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, setup, "--tpm2", "--tpmstate", state,
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram",
		"--config", filepath.Join(ca.dir, "setup.conf")).CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	return &TPM{StateDir: state}
}

// start runs swtpm for one boot, in the foreground under timeout(1), with
// its control channel (which QEMU's tpm-emulator speaks) on a Unix socket in
// runDir. --terminate ends it when QEMU disconnects; stop ends it by PID
// otherwise. It returns once the socket exists.
func (p *TPM) start(t TB, runDir string, limit time.Duration) (sock string, stop func()) {
	t.Helper()
	swtpm := RequireTool(t, "swtpm")
	// Absolute paths: relative ones fail in swtpm ("CMD_INIT: 0x9").
	runDir, err := filepath.Abs(runDir)
	if err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(runDir, "swtpm.sock")
	// A Unix socket's path has at most 107 bytes; long test names make
	// longer temporary directories.
	if len(sock) > 100 {
		short, err := os.MkdirTemp("", "tpm")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(short) })
		sock = filepath.Join(short, "swtpm.sock")
	}
	logPath := filepath.Join(runDir, "swtpm.log")
	proc := startProcess(t, filepath.Join(runDir, "swtpm.out"), limit, swtpm, "socket", "--tpm2",
		"--tpmstate", "dir="+p.StateDir,
		"--ctrl", "type=unixio,path="+sock,
		"--log", "file="+logPath+",level=2",
		"--terminate")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock, proc.stop
		}
		select {
		case <-proc.done:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("swtpm exited before its socket appeared: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			proc.stop()
			t.Fatal("swtpm: control socket never appeared")
		}
	}
}

func writeFile(t TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
}
