package tpmtest

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
)

// Swtpm is an swtpm process, out of process, manufactured with RSA and ECC
// endorsement keys whose certificates (in TPM NV) come from a local CA of its
// own.
type Swtpm struct {
	// RW talks to the TPM; go-tpm and go-tpm-tools work on it unchanged.
	RW io.ReadWriteCloser
	// EKRoots holds the local CA's root, for a validator's EKRoots.
	EKRoots *x509.CertPool
	// EKIntermediates holds the local CA's issuer certificate (DER), which
	// signed the EK certificates.
	EKIntermediates [][]byte

	ctrlSock string
}

// StartSwtpm manufactures a TPM with swtpm_setup (RSA and ECC EKs with
// certificates from a local CA in a temporary directory, so tests neither
// share nor touch /var/lib/swtpm-localca), starts swtpm on a Unix socket and
// connects to it. tb.Cleanup stops it. It needs swtpm, swtpm_setup and
// swtpm_localca (see RequireTool) and takes about two seconds.
func StartSwtpm(tb TB) *Swtpm {
	tb.Helper()
	swtpmBin := RequireTool(tb, "swtpm")
	setup := RequireTool(tb, "swtpm_setup")
	localca := RequireTool(tb, "swtpm_localca")
	dir := tb.TempDir()
	for _, d := range []string{"state", "ca"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	ca := filepath.Join(dir, "ca")
	writeFile(tb, filepath.Join(dir, "localca.conf"), fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca))
	writeFile(tb, filepath.Join(dir, "localca.options"), "--platform-manufacturer Cloister\n--platform-version 2.1\n--platform-model test\n")
	writeFile(tb, filepath.Join(dir, "setup.conf"), fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s/localca.conf\ncreate_certs_tool_options = %s/localca.options\nactive_pcr_banks = sha256\n", localca, dir, dir))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, setup, "--tpm2", "--tpmstate", filepath.Join(dir, "state"),
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--config", filepath.Join(dir, "setup.conf")).CombinedOutput()
	if err != nil {
		tb.Fatalf("swtpm_setup: %v\n%s", err, out)
	}

	sock := filepath.Join(dir, "tpm.sock")
	cmd := exec.Command(swtpmBin, "socket", "--tpm2",
		"--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--tpmstate", "dir="+filepath.Join(dir, "state"),
		"--flags", "not-need-init,startup-clear")
	logf, err := os.Create(filepath.Join(dir, "swtpm.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("starting swtpm: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		logf.Close()
	})

	var conn net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err = net.Dial("unix", sock)
		if err == nil {
			break
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
			tb.Fatalf("swtpm exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("swtpm socket never came up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Cleanup(func() { conn.Close() })
	s := &Swtpm{RW: &swtpmConn{Conn: conn}, EKRoots: x509.NewCertPool(), ctrlSock: filepath.Join(dir, "ctrl.sock")}
	s.EKRoots.AddCert(readPEMCert(tb, filepath.Join(ca, "swtpm-localca-rootca-cert.pem")))
	s.EKIntermediates = [][]byte{readPEMCert(tb, filepath.Join(ca, "issuercert.pem")).Raw}
	return s
}

// Reboot power-cycles the TPM, as a reboot of its machine would: PCRs go
// back to their reset values, keys and NV (EK certificates) stay. It sends
// swtpm's CMD_INIT on the control socket, then TPM2_Startup(CLEAR) as
// firmware would.
func (s *Swtpm) Reboot() error {
	c, err := net.Dial("unix", s.ctrlSock)
	if err != nil {
		return fmt.Errorf("swtpm control socket: %w", err)
	}
	defer c.Close()
	const cmdInit = 2
	var req [8]byte // command, then init flags (none)
	binary.BigEndian.PutUint32(req[:4], cmdInit)
	if _, err := c.Write(req[:]); err != nil {
		return fmt.Errorf("swtpm CMD_INIT: %w", err)
	}
	var resp [4]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		return fmt.Errorf("swtpm CMD_INIT: %w", err)
	}
	if rc := binary.BigEndian.Uint32(resp[:]); rc != 0 {
		return fmt.Errorf("swtpm CMD_INIT: result %#x", rc)
	}
	if err := tpm2.Startup(s.RW, tpm2.StartupClear); err != nil {
		return fmt.Errorf("TPM2_Startup after reboot: %w", err)
	}
	return nil
}

// swtpmConn adapts swtpm's data socket, which speaks raw TPM commands (not
// the Microsoft simulator's framing), to go-tpm, which expects each Read to
// return exactly one whole response.
type swtpmConn struct{ net.Conn }

// responseHeaderSize is a TPM response header: tag, size, response code.
const responseHeaderSize = 10

func (c *swtpmConn) Read(p []byte) (int, error) {
	if len(p) < responseHeaderSize {
		return 0, io.ErrShortBuffer
	}
	if _, err := io.ReadFull(c.Conn, p[:responseHeaderSize]); err != nil {
		return 0, err
	}
	size := int(binary.BigEndian.Uint32(p[2:6]))
	if size < responseHeaderSize || size > len(p) {
		return 0, fmt.Errorf("swtpm response of %d bytes does not fit %d", size, len(p))
	}
	if _, err := io.ReadFull(c.Conn, p[responseHeaderSize:size]); err != nil {
		return 0, err
	}
	return size, nil
}

func writeFile(tb TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func readPEMCert(tb TB, path string) *x509.Certificate {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("%s: no PEM block", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return cert
}
