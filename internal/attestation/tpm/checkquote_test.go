package tpm

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	attestpb "github.com/google/go-tpm-tools/proto/attest"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// TestSwtpmQuoteVerifiesWithTpm2Checkquote checks a quote our issuer made on
// swtpm with an independent verifier, tpm2-tools' tpm2_checkquote: the AK
// public key, the TPMS_ATTEST message, the TPMT_SIGNATURE, the PCR values and
// the nonce (userData). A flipped nonce must make it fail.
func TestSwtpmQuoteVerifiesWithTpm2Checkquote(t *testing.T) {
	checkquote := tpmtest.RequireTool(t, "tpm2_checkquote")
	tpm := tpmtest.StartSwtpm(t)
	iss, err := NewIssuer(tpm.RW, IssuerOptions{EKIntermediates: tpm.EKIntermediates})
	if err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	t.Cleanup(func() { iss.Close() })
	userData := userDataFor("checkquote")
	ev := mustIssue(t, iss, userData)

	att := &attestpb.Attestation{}
	if err := proto.Unmarshal(ev.GetTpm(), att); err != nil {
		t.Fatal(err)
	}
	d, err := decode(ev)
	if err != nil {
		t.Fatal(err)
	}
	q := att.GetQuotes()[sha256Quote(t, att)]

	dir := t.TempDir()
	pkix, err := x509.MarshalPKIXPublicKey(d.akKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	akPEM := write("ak.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}))
	msg := write("quote.msg", q.GetQuote())
	sig := write("quote.sig", q.GetRawSig())
	pcrs := write("pcrs.bin", checkquotePCRFile(t, q.GetPcrs().GetPcrs()))

	run := func(nonce []byte) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return exec.CommandContext(ctx, checkquote, "-u", akPEM, "-m", msg, "-s", sig, "-f", pcrs, "-g", "sha256", "-q", hex.EncodeToString(nonce)).CombinedOutput()
	}
	if out, err := run(userData); err != nil {
		t.Fatalf("tpm2_checkquote refused our quote: %v\n%s", err, out)
	}
	flipped := bytes.Clone(userData)
	flipped[0] ^= 1
	if out, err := run(flipped); err == nil {
		t.Fatalf("tpm2_checkquote accepted the quote with a flipped nonce:\n%s", out)
	}
}

// checkquotePCRFile writes PCR values in tpm2-tools' "serialized" PCR file
// format (what tpm2_quote -o writes): the in-memory layout of
// TPML_PCR_SELECTION, a UINT32 count of digest lists, then that many
// TPML_DIGEST, all little endian. (tpm2-tools 5.4 mishandles more than seven
// PCRs in the selection-less "values" format, and the quote covers 24.)
func checkquotePCRFile(tb testing.TB, pcrs map[uint32][]byte) []byte {
	tb.Helper()
	const (
		numBanks      = 16 // TPM2_NUM_PCR_BANKS
		selectMax     = 4  // TPM2_PCR_SELECT_MAX
		digestsPerLst = 8  // TPML_DIGEST capacity
		haSize        = 64 // sizeof(TPMU_HA)
	)
	var sel [selectMax]byte
	var idx []uint32
	for i := uint32(0); i < 32; i++ {
		if _, ok := pcrs[i]; ok {
			sel[i/8] |= 1 << (i % 8)
			idx = append(idx, i)
		}
	}
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write(le.AppendUint32(nil, 1))
	// TPMS_PCR_SELECTION: hash, sizeofSelect, pcrSelect[4], one byte of padding.
	b.Write(le.AppendUint16(nil, 0x000b)) // TPM2_ALG_SHA256
	b.WriteByte(3)
	b.Write(sel[:])
	b.WriteByte(0)
	b.Write(make([]byte, 8*(numBanks-1)))
	lists := (len(idx) + digestsPerLst - 1) / digestsPerLst
	b.Write(le.AppendUint32(nil, uint32(lists)))
	for l := 0; l < lists; l++ {
		chunk := idx[l*digestsPerLst : min(len(idx), (l+1)*digestsPerLst)]
		b.Write(le.AppendUint32(nil, uint32(len(chunk))))
		for k := 0; k < digestsPerLst; k++ {
			var d [haSize]byte
			var n int
			if k < len(chunk) {
				n = copy(d[:], pcrs[chunk[k]])
			}
			b.Write(le.AppendUint16(nil, uint16(n)))
			b.Write(d[:])
		}
	}
	return b.Bytes()
}
