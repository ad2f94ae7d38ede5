package cryptsetup

import (
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"
)

// rewriteUUID writes uuid into the binary header of both LUKS2 header
// copies (offset 0xa8, 40 bytes) and fixes their checksums, as an attacker
// with the disk can. libcryptsetup loads such a header.
func rewriteUUID(tb testing.TB, path, uuid string) {
	tb.Helper()
	if len(uuid) >= 40 {
		tb.Fatalf("uuid %q does not fit the 40-byte field", uuid)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, hdrSize} {
		hdr := make([]byte, hdrSize)
		if _, err := f.ReadAt(hdr, off); err != nil {
			tb.Fatal(err)
		}
		clear(hdr[0xa8 : 0xa8+40])
		copy(hdr[0xa8:], uuid)
		clear(hdr[0x1c0 : 0x1c0+64])
		sum := sha256.Sum256(hdr)
		copy(hdr[0x1c0:], sum[:])
		if _, err := f.WriteAt(hdr, off); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestOpenRefusesNonCanonicalUUID checks that a header whose UUID is not
// in canonical form is refused at Open, before the UUID can reach the join
// service or key derivation. libcryptsetup itself loads each of these.
func TestOpenRefusesNonCanonicalUUID(t *testing.T) {
	tests := []struct{ name, uuid string }{
		{"uppercase", "0F4A2C1E-6B7D-4E8F-9A0B-1C2D3E4F5A6B"},
		{"empty", ""},
		{"path-like", "../../../../etc/cloister/secret"},
		{"no hyphens", "0f4a2c1e6b7d4e8f9a0b1c2d3e4f5a6b"},
		{"braces", "{0f4a2c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6}"},
		{"trailing newline", "0f4a2c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newImage(t)
			mustFormat(t, p, randomKey(t))
			rewriteUUID(t, p, tt.uuid)
			d, err := Open(p, FormatOptions{})
			if err == nil {
				got := d.UUID()
				d.Close()
				t.Fatalf("Open accepted UUID %q (UUID() = %q); want refused at header.uuid", tt.uuid, got)
			}
			if f := headerField(err); f != "header.uuid" {
				t.Fatalf("Open: %v; want *HeaderError at header.uuid, got field %q", err, f)
			}
		})
	}
}

// TestOpenNamesLibcryptsetupReason crafts headers with valid checksums that
// libcryptsetup itself refuses to load, and checks that the refusal carries
// libcryptsetup's own reason, not only "invalid argument".
func TestOpenNamesLibcryptsetupReason(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(md map[string]any)
		corrupt    bool
		wantReason string
	}{
		{name: "digest names a missing segment", wantReason: `Segments section "" is missing "7"`, edit: func(md map[string]any) {
			md["digests"].(map[string]any)["0"].(map[string]any)["segments"] = []string{"7"}
		}},
		{name: "keyslot area over the header", wantReason: "Illegal area offset: 0", edit: func(md map[string]any) {
			ks := md["keyslots"].(map[string]any)["0"].(map[string]any)
			ks["area"].(map[string]any)["offset"] = "0"
		}},
		{name: "segment size not a number", wantReason: `size "abc" is not in numbered form`, edit: func(md map[string]any) {
			seg0(md)["size"] = "abc"
		}},
		{name: "both checksums wrong", corrupt: true, wantReason: "LUKS2 header checksum error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newImage(t)
			mustFormat(t, p, randomKey(t))
			if tt.edit != nil {
				rewriteMetadata(t, p, tt.edit)
			}
			if tt.corrupt {
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				for _, off := range []int64{4096 + 10, hdrSize + 4096 + 10} {
					if _, err := f.WriteAt([]byte("XXXX"), off); err != nil {
						t.Fatal(err)
					}
				}
				f.Close()
			}
			d, err := Open(p, FormatOptions{})
			if err == nil {
				d.Close()
				t.Fatal("Open accepted the header")
			}
			var he *HeaderError
			if !errors.As(err, &he) || he.Field != "header" {
				t.Fatalf("Open: %v; want *HeaderError at header", err)
			}
			if !strings.Contains(he.Reason, tt.wantReason) {
				t.Fatalf("reason %q; want libcryptsetup's %q", he.Reason, tt.wantReason)
			}
			if !strings.Contains(err.Error(), tt.wantReason) {
				t.Fatalf("error %q does not name libcryptsetup's reason %q", err, tt.wantReason)
			}
			// Progress chatter is left out.
			if strings.Contains(he.Reason, "Trying to read") || strings.Contains(he.Reason, "Checksum:") {
				t.Errorf("reason carries progress lines: %q", he.Reason)
			}
		})
	}
}

// TestKeyErrorsCarryNoDebugLines checks that a wrong passphrase, the one
// call where key material is in play, reports no debug-level line, only
// ErrKeyRejected.
func TestKeyErrorsCarryNoDebugLines(t *testing.T) {
	p := formatImage(t, randomKey(t))
	d := openDevice(t, p)
	wrong := randomKey(t)
	_, err := d.CheckKey(wrong)
	if !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("CheckKey(wrong key): %v; want ErrKeyRejected", err)
	}
	if strings.Contains(err.Error(), "Trying") || strings.Contains(err.Error(), "keyslot") && strings.Contains(err.Error(), "PBKDF") {
		t.Errorf("key error carries debug lines: %v", err)
	}
}

func TestLibReasons(t *testing.T) {
	raw := []byte("DTrying to read primary LUKS2 header at offset 0x0\nDIllegal area offset: 0\nDRepairing JSON metadata\nDIllegal area offset: 0\nDERROR: LUKS2 validation failed\nEDevice busy\x1b[2J\n")
	got := libReasons(raw, 0)
	want := "Illegal area offset: 0; LUKS2 validation failed; Device busy?[2J"
	if got != want {
		t.Fatalf("libReasons = %q; want %q", got, want)
	}
	long := []byte("D" + strings.Repeat("x", 2*maxReason) + "\n")
	if got := libReasons(long, 3); len(got) > maxReason+len("...") {
		t.Fatalf("libReasons kept %d bytes; want at most %d", len(got), maxReason+3)
	}
}
