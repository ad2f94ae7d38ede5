package cryptsetup

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// normalizeDump replaces the random values of a luksDump JSON (salts,
// digest) so the rest can be compared byte for byte.
func normalizeDump(tb testing.TB, dump []byte) []byte {
	tb.Helper()
	var v any
	if err := json.Unmarshal(dump, &v); err != nil {
		tb.Fatalf("luksDump output is not JSON: %v", err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	re := regexp.MustCompile(`"(salt|digest)": "[A-Za-z0-9+/=]+"`)
	return append(re.ReplaceAll(out, []byte(`"$1": "<random>"`)), '\n')
}

// TestFormatHeader reads the header Format wrote with the cryptsetup CLI,
// an independent LUKS2 reader, and compares it with the golden header:
// cipher, key size, sector size, offsets, pbkdf2 keyslot, digest, token.
func TestFormatHeader(t *testing.T) {
	requireCLI(t)
	key := randomKey(t)
	p := newImage(t)
	uuid, err := Format(t.Context(), p, key, FormatOptions{})
	if err != nil {
		t.Fatalf("Format: %v", err)
	}
	dump := cli(t, "luksDump", "--dump-json-metadata", p)
	got := normalizeDump(t, dump)
	golden := filepath.Join("testdata", "format.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("header differs from %s (rerun with -update and review the diff):\n%s", golden, got)
	}
	if err := ValidateMetadata(dump, FormatOptions{}); err != nil {
		t.Fatalf("ValidateMetadata(CLI dump): %v", err)
	}
	if cliUUID := strings.TrimSpace(string(cli(t, "luksUUID", p))); cliUUID != uuid || uuid == "" {
		t.Fatalf("Format returned UUID %q, CLI reads %q", uuid, cliUUID)
	}
	// The CLI agrees the key opens keyslot 0 and nothing else does.
	cli(t, "open", "--test-passphrase", "--key-slot", "0", "--key-file", keyFile(t, key), p)
	d := openDevice(t, p)
	if d.UUID() != uuid {
		t.Fatalf("Device.UUID() = %q, want %q", d.UUID(), uuid)
	}
}

// TestFormatIntegrity formats with dm-integrity, which needs
// device-mapper: skipped on hosts without it (the QEMU end-to-end tests
// cover it); integrity headers are validated from testdata fixtures.
func TestFormatIntegrity(t *testing.T) {
	if !hasDeviceMapper() {
		t.Skip("no device-mapper in this kernel: Format with integrity runs in the QEMU tests; testdata fixtures cover validation")
	}
	key := randomKey(t)
	p := newImage(t)
	if _, err := Format(t.Context(), p, key, FormatOptions{Integrity: true}); err != nil {
		t.Fatalf("Format with integrity: %v", err)
	}
	d, err := Open(p, FormatOptions{Integrity: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer d.Close()
	if _, err := Open(p, FormatOptions{}); headerField(err) != "segments.0.integrity" {
		t.Fatalf("Open without integrity: %v; want refused at segments.0.integrity", err)
	}
}

func TestFormatRefusesBadPassphrase(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := Format(t.Context(), newImage(t), make([]byte, n), FormatOptions{}); err == nil {
			t.Errorf("Format with a %d-byte passphrase succeeded", n)
		}
	}
}

func TestCheckKey(t *testing.T) {
	key := randomKey(t)
	d := openDevice(t, formatImage(t, key))
	slot, err := d.CheckKey(key)
	if err != nil || slot != 0 {
		t.Fatalf("CheckKey(right key) = %d, %v; want 0, nil", slot, err)
	}
	wrong := bytes.Clone(key)
	wrong[31] ^= 1
	if _, err := d.CheckKey(wrong); !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("CheckKey(key with one bit flipped) = %v; want ErrKeyRejected", err)
	}
	if _, err := d.CheckKey(key[:31]); err == nil || errors.Is(err, ErrKeyRejected) {
		t.Fatalf("CheckKey(31 bytes) = %v; want a length error", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CheckKey(key); !errors.Is(err, errClosed) {
		t.Fatalf("CheckKey after Close = %v; want errClosed", err)
	}
}

func TestState(t *testing.T) {
	key := randomKey(t)
	p := formatImage(t, key)
	d := openDevice(t, p)
	if s, err := d.ReadState(); err != nil || s != (State{}) {
		t.Fatalf("ReadState after Format = %+v, %v; want zero state", s, err)
	}
	want := State{Keyed: true, Generation: 7}
	if err := d.WriteState(want); err != nil {
		t.Fatalf("WriteState: %v", err)
	}
	if err := d.WriteState(State{Generation: 2}); err == nil {
		t.Fatal("WriteState(generation without keyed) succeeded")
	}
	d.Close()
	d = openDevice(t, p)
	if s, err := d.ReadState(); err != nil || s != want {
		t.Fatalf("ReadState after reopen = %+v, %v; want %+v", s, err, want)
	}
	// The CLI sees exactly one token, ours.
	var md struct {
		Tokens map[string]map[string]any `json:"tokens"`
	}
	if err := json.Unmarshal(cli(t, "luksDump", "--dump-json-metadata", p), &md); err != nil {
		t.Fatal(err)
	}
	tok, ok := md.Tokens["0"]
	if len(md.Tokens) != 1 || !ok || tok["type"] != tokenType || tok["keyed"] != true || tok["generation"] != float64(7) {
		t.Fatalf("CLI reads tokens %v", md.Tokens)
	}
}
