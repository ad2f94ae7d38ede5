package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm-tools/client"
	attestpb "github.com/google/go-tpm-tools/proto/attest"
	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// realEventLog was captured on a GCE Ubuntu 24.04 SEV-SNP VM (see
// testdata/README.md).
//
//go:embed testdata/eventlog-ubuntu-2404-amd-sevsnp.bin
var realEventLog []byte

// requireTool returns the path of an external tool. When it is missing the
// test fails in CI and is skipped elsewhere.
func requireTool(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s is required in CI: %v", name, err)
	}
	tb.Skipf("%s not installed (apt-get install swtpm swtpm-tools tpm2-tools): %v", name, err)
	return ""
}

// newSimulator returns the in-process TPM simulator (one per process: tests
// that use it never run in parallel), with the SHA-256 digests of the real
// event log extended into its PCRs, as firmware would have done.
func newSimulator(tb testing.TB, eventLog []byte) *simulator.Simulator {
	tb.Helper()
	sim, err := simulator.Get()
	if err != nil {
		tb.Fatalf("starting TPM simulator: %v", err)
	}
	tb.Cleanup(func() {
		if err := sim.Close(); err != nil {
			tb.Errorf("closing TPM simulator: %v", err)
		}
	})
	if len(eventLog) > 0 {
		el, err := tcg.ParseEventLog(eventLog, tcg.ParseOpts{})
		if err != nil {
			tb.Fatalf("parsing test event log: %v", err)
		}
		for _, e := range el.Events(register.HashSHA256) {
			if e.Type == 0x03 || len(e.Digest) == 0 { // EV_NO_ACTION extends nothing
				continue
			}
			if err := tpm2.PCRExtend(sim, tpmutil.Handle(e.Index), tpm2.AlgSHA256, e.Digest, ""); err != nil {
				tb.Fatalf("extending pcr[%d]: %v", e.Index, err)
			}
		}
	}
	return sim
}

// akPublicKey returns the public key of the TPM's AK (the key NewIssuer
// loads), so a CA can certify it before the issuer is built.
func akPublicKey(tb testing.TB, rw io.ReadWriter) crypto.PublicKey {
	tb.Helper()
	ak, err := client.AttestationKeyECC(rw)
	if err != nil {
		tb.Fatalf("loading AK: %v", err)
	}
	defer ak.Close()
	return ak.PublicKey()
}

// fakePlatformCA is a fake of a cloud's AK-certifying CA (no cloud here).
type fakePlatformCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newFakePlatformCA(tb testing.TB, name string) *fakePlatformCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &fakePlatformCA{cert: cert, key: key}
}

func (ca *fakePlatformCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// certifyAK returns a DER AK certificate valid from notBefore to notAfter.
func (ca *fakePlatformCA) certifyAK(tb testing.TB, pub crypto.PublicKey, notBefore, notAfter time.Time) []byte {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "fake AK"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func (ca *fakePlatformCA) certifyAKNow(tb testing.TB, pub crypto.PublicKey) []byte {
	return ca.certifyAK(tb, pub, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// newAKCertIssuer returns an issuer in AK-certificate mode on rw, its AK
// certified by ca.
func newAKCertIssuer(tb testing.TB, rw io.ReadWriter, ca *fakePlatformCA, eventLog []byte) *Issuer {
	tb.Helper()
	iss, err := NewIssuer(rw, IssuerOptions{AKCertificate: ca.certifyAKNow(tb, akPublicKey(tb, rw)), EventLog: eventLog})
	if err != nil {
		tb.Fatalf("NewIssuer: %v", err)
	}
	tb.Cleanup(func() { iss.Close() })
	return iss
}

// userDataFor is what attested TLS binds: a hash of a label, the role and the
// session's exporter (here just a session name).
func userDataFor(session string) []byte {
	b := make([]byte, 32)
	copy(b, "session:"+session)
	return b
}

func mustIssue(tb testing.TB, iss *Issuer, userData []byte) *attestationv1.Evidence {
	tb.Helper()
	ev, err := iss.Issue(context.Background(), userData)
	if err != nil {
		tb.Fatalf("Issue: %v", err)
	}
	return ev
}

// mutateAttestation returns a copy of ev whose go-tpm-tools Attestation was
// changed by f.
func mutateAttestation(tb testing.TB, ev *attestationv1.Evidence, f func(*attestpb.Attestation)) *attestationv1.Evidence {
	tb.Helper()
	att := &attestpb.Attestation{}
	if err := proto.Unmarshal(ev.GetTpm(), att); err != nil {
		tb.Fatal(err)
	}
	f(att)
	raw, err := proto.Marshal(att)
	if err != nil {
		tb.Fatal(err)
	}
	out := proto.Clone(ev).(*attestationv1.Evidence)
	out.Report = &attestationv1.Evidence_Tpm{Tpm: raw}
	return out
}

// sha256Quote returns the index of the SHA-256 quote in att.
func sha256Quote(tb testing.TB, att *attestpb.Attestation) int {
	tb.Helper()
	for i, q := range att.GetQuotes() {
		if tpm2.Algorithm(q.GetPcrs().GetHash()) == tpm2.AlgSHA256 {
			return i
		}
	}
	tb.Fatal("no SHA-256 quote")
	return -1
}

// assertCheck fails unless err is a *attestation.CheckError for check.
func assertCheck(tb testing.TB, claims *attestation.Claims, err error, check string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("accepted, want rejection by check %q", check)
	}
	if claims != nil {
		tb.Errorf("claims returned together with error %v", err)
	}
	var ce *attestation.CheckError
	if !errors.As(err, &ce) {
		tb.Fatalf("error is not a *attestation.CheckError: %v", err)
	}
	if ce.Check != check {
		tb.Fatalf("failed check %q, want %q (%v)", ce.Check, check, err)
	}
}

// swtpm is an swtpm process out of process, with EK certificates from a
// local CA of its own.
type swtpm struct {
	conn io.ReadWriteCloser
	// ekRoots holds the local CA's root; ekIntermediates its issuer
	// certificate, which signed the EK certificates.
	ekRoots         *x509.CertPool
	ekIntermediates [][]byte
}

// startSwtpm manufactures a TPM with swtpm_setup (RSA and ECC EKs with
// certificates from a local CA in a temporary directory, so tests neither
// share nor touch /var/lib/swtpm-localca), starts swtpm on a Unix socket and
// connects to it. t.Cleanup stops it.
func startSwtpm(tb testing.TB) *swtpm {
	tb.Helper()
	swtpmBin := requireTool(tb, "swtpm")
	setup := requireTool(tb, "swtpm_setup")
	localca := requireTool(tb, "swtpm_localca")
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
	s := &swtpm{conn: &swtpmConn{Conn: conn}, ekRoots: x509.NewCertPool()}
	tb.Cleanup(func() { conn.Close() })
	s.ekRoots.AddCert(readPEMCert(tb, filepath.Join(ca, "swtpm-localca-rootca-cert.pem")))
	s.ekIntermediates = [][]byte{readPEMCert(tb, filepath.Join(ca, "issuercert.pem")).Raw}
	return s
}

// swtpmConn adapts swtpm's data socket, which speaks raw TPM commands, to
// go-tpm, which expects each Read to return exactly one whole response.
type swtpmConn struct{ net.Conn }

func (c *swtpmConn) Read(p []byte) (int, error) {
	const headerSize = 10 // tag, size, response code
	if len(p) < headerSize {
		return 0, io.ErrShortBuffer
	}
	if _, err := io.ReadFull(c.Conn, p[:headerSize]); err != nil {
		return 0, err
	}
	size := int(binary.BigEndian.Uint32(p[2:6]))
	if size < headerSize || size > len(p) {
		return 0, fmt.Errorf("swtpm response of %d bytes does not fit %d", size, len(p))
	}
	if _, err := io.ReadFull(c.Conn, p[headerSize:size]); err != nil {
		return 0, err
	}
	return size, nil
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func readPEMCert(tb testing.TB, path string) *x509.Certificate {
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
