package tpmtest

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"testing"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

func TestSimulatorPCRs(t *testing.T) {
	sim := Simulator(t)
	pcrs := PCRs(t, sim)
	if len(pcrs) != 24 {
		t.Fatalf("%d PCRs, want 24", len(pcrs))
	}
	if !bytes.Equal(pcrs[15], make([]byte, 32)) {
		t.Fatalf("fresh pcr[15] = %x, want 32 zero bytes", pcrs[15])
	}
	if err := tpm2.PCRExtend(sim, tpmutil.Handle(15), tpm2.AlgSHA256, bytes.Repeat([]byte{1}, 32), ""); err != nil {
		t.Fatal(err)
	}
	after := PCRs(t, sim)
	if bytes.Equal(after[15], pcrs[15]) || !bytes.Equal(after[0], pcrs[0]) {
		t.Fatalf("after extending pcr[15]: pcr[15] %x, pcr[0] %x", after[15], after[0])
	}
}

func TestFakePlatformCACertifiesTheAK(t *testing.T) {
	sim := Simulator(t)
	ca := NewFakePlatformCA(t, "fake platform CA")
	cert, err := x509.ParseCertificate(ca.CertifyAK(t, sim))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cert.PublicKey, AKPublicKey(t, sim)) {
		t.Fatal("certificate is not for the TPM's AK")
	}
	opts := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := cert.Verify(opts); err != nil {
		t.Fatalf("AK certificate does not chain to the CA: %v", err)
	}
	other := NewFakePlatformCA(t, "fake other CA")
	opts.Roots = other.Pool()
	if _, err := cert.Verify(opts); err == nil {
		t.Fatal("AK certificate chains to another fake CA")
	}
}

// response builds a raw TPM response of size bytes.
func response(size int) []byte {
	r := make([]byte, size)
	binary.BigEndian.PutUint16(r[0:2], 0x8001)
	binary.BigEndian.PutUint32(r[2:6], uint32(size))
	for i := responseHeaderSize; i < size; i++ {
		r[i] = byte(i)
	}
	return r
}

// TestSwtpmConnFraming drives swtpmConn with a fake swtpm peer over a pipe
// that delivers responses in pieces and back to back.
func TestSwtpmConnFraming(t *testing.T) {
	client, peer := net.Pipe()
	t.Cleanup(func() { client.Close(); peer.Close() })
	c := &swtpmConn{Conn: client}
	first, second := response(40), response(12)
	go func() {
		stream := append(bytes.Clone(first), second...)
		for _, cut := range [][2]int{{0, 3}, {3, 25}, {25, 45}, {45, len(stream)}} {
			if _, err := peer.Write(stream[cut[0]:cut[1]]); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 4096)
	for _, want := range [][]byte{first, second} {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("Read returned %d bytes %x, want one whole response %x", n, buf[:n], want)
		}
	}

	if _, err := c.Read(make([]byte, responseHeaderSize-1)); !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("Read into a short buffer: %v, want io.ErrShortBuffer", err)
	}
	go peer.Write(response(64))
	if _, err := c.Read(make([]byte, 32)); err == nil {
		t.Fatal("Read accepted a response larger than the buffer")
	}
}

func TestRequireToolFindsInstalledTool(t *testing.T) {
	if path := RequireTool(t, "sh"); path == "" {
		t.Fatal("RequireTool returned no path for sh")
	}
}

func TestSwtpmRebootResetsPCRsAndKeepsEKCertificates(t *testing.T) {
	sw := StartSwtpm(t)
	extend := func() {
		t.Helper()
		if err := tpm2.PCRExtend(sw.RW, tpmutil.Handle(15), tpm2.AlgSHA256, bytes.Repeat([]byte{7}, 32), ""); err != nil {
			t.Fatal(err)
		}
	}
	extend()
	if pcr15 := PCRs(t, sw.RW)[15]; bytes.Equal(pcr15, make([]byte, 32)) {
		t.Fatal("PCR 15 not extended before the reboot; the test would prove nothing")
	}
	if err := sw.Reboot(); err != nil {
		t.Fatal(err)
	}
	if pcr15 := PCRs(t, sw.RW)[15]; !bytes.Equal(pcr15, make([]byte, 32)) {
		t.Errorf("PCR 15 after reboot = %x, want the reset value", pcr15)
	}
	ek, err := client.EndorsementKeyRSA(sw.RW)
	if err != nil {
		t.Fatalf("EK after reboot: %v", err)
	}
	defer ek.Close()
	if ek.Cert() == nil {
		t.Error("EK certificate gone after reboot")
	}
}
