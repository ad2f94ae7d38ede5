package cryptsetup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// cliFormat formats path with the cryptsetup CLI: LUKS2 with fast pbkdf2
// keyslots unless args say otherwise.
func cliFormat(tb testing.TB, path string, key []byte, args ...string) {
	tb.Helper()
	base := []string{"luksFormat", "--batch-mode", "--key-file", keyFile(tb, key),
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "4096"}
	cli(tb, append(append(base, args...), path)...)
}

// cliAddKey adds a keyslot for a random key to path, proving key.
func cliAddKey(tb testing.TB, path string, key []byte, args ...string) {
	tb.Helper()
	base := []string{"luksAddKey", "--batch-mode", "--key-file", keyFile(tb, key)}
	cli(tb, append(append(base, args...), path, keyFile(tb, randomKey(tb)))...)
}

func cliImportToken(tb testing.TB, path string, id string, token string, args ...string) {
	tb.Helper()
	f := filepath.Join(tb.TempDir(), "token.json")
	if err := os.WriteFile(f, []byte(token), 0o600); err != nil {
		tb.Fatal(err)
	}
	cli(tb, append([]string{"token", "import", "--json-file", f, "--token-id", id}, append(args, path)...)...)
}

// rewriteMetadata edits the JSON metadata of a LUKS2 image in both header
// copies and fixes their checksums, as an attacker with the disk can. It
// crafts headers that libcryptsetup loads but the CLI refuses to create
// without device-mapper (cipher_null, a second segment).
func rewriteMetadata(tb testing.TB, path string, edit func(md map[string]any)) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	area := make([]byte, hdrSize)
	if _, err := f.ReadAt(area, 0); err != nil {
		tb.Fatal(err)
	}
	js := area[4096:]
	if i := indexByte(js, 0); i >= 0 {
		js = js[:i]
	}
	var md map[string]any
	if err := json.Unmarshal(js, &md); err != nil {
		tb.Fatalf("primary JSON: %v", err)
	}
	edit(md)
	out, err := json.Marshal(md)
	if err != nil {
		tb.Fatal(err)
	}
	if len(out) >= jsonSize {
		tb.Fatalf("edited JSON is %d bytes, does not fit", len(out))
	}
	for _, off := range []int64{0, hdrSize} {
		hdr := make([]byte, hdrSize)
		if _, err := f.ReadAt(hdr, off); err != nil {
			tb.Fatal(err)
		}
		clear(hdr[4096:])
		copy(hdr[4096:], out)
		if binary.BigEndian.Uint64(hdr[8:16]) != hdrSize {
			tb.Fatal("unexpected header size")
		}
		clear(hdr[0x1c0 : 0x1c0+64])
		sum := sha256.Sum256(hdr)
		copy(hdr[0x1c0:], sum[:])
		if _, err := f.WriteAt(hdr, off); err != nil {
			tb.Fatal(err)
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// seg0 returns segment 0 of decoded metadata.
func seg0(md map[string]any) map[string]any {
	return md["segments"].(map[string]any)["0"].(map[string]any)
}

// TestOpenRefusesHeaders builds malicious or unexpected headers on file
// images, with the cryptsetup CLI or by rewriting the metadata as an
// attacker would, and checks that Open refuses each one naming the field.
func TestOpenRefusesHeaders(t *testing.T) {
	requireCLI(t)
	tests := []struct {
		name      string
		build     func(t *testing.T, path string, key []byte)
		integrity bool
		wantField string
	}{
		{name: "no header at all", build: func(t *testing.T, p string, k []byte) {}, wantField: "header.magic"},
		{name: "LUKS1", wantField: "header.version", build: func(t *testing.T, p string, k []byte) {
			cli(t, "luksFormat", "--batch-mode", "--type", "luks1", "--key-file", keyFile(t, k),
				"--cipher", "aes-xts-plain64", "--key-size", "512", "--pbkdf-force-iterations", "1000", p)
		}},
		{name: "cipher_null segment", wantField: "segments.0.encryption", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			rewriteMetadata(t, p, func(md map[string]any) { seg0(md)["encryption"] = "cipher_null-ecb" })
		}},
		{name: "other cipher and mode aes-cbc-essiv", wantField: "segments.0.encryption", build: func(t *testing.T, p string, k []byte) {
			cliFormat(t, p, k, "--type", "luks2", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256")
		}},
		{name: "tiny key 256-bit xts", wantField: "keyslots.0.key_size", build: func(t *testing.T, p string, k []byte) {
			cliFormat(t, p, k, "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "256")
		}},
		{name: "512-byte sectors", wantField: "segments.0.sector_size", build: func(t *testing.T, p string, k []byte) {
			cliFormat(t, p, k, "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512", "--sector-size", "512")
		}},
		{name: "bigger metadata area", wantField: "header.hdr_size", build: func(t *testing.T, p string, k []byte) {
			cliFormat(t, p, k, "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512", "--luks2-metadata-size", "64k")
		}},
		{name: "data offset and keyslots area moved", wantField: "config.keyslots_size", build: func(t *testing.T, p string, k []byte) {
			cliFormat(t, p, k, "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512", "--offset", "65536")
		}},
		{name: "data offset moved past the header area", wantField: "segments.0.offset", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			rewriteMetadata(t, p, func(md map[string]any) { seg0(md)["offset"] = "20971520" })
		}},
		{name: "second segment", wantField: "segments", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			rewriteMetadata(t, p, func(md map[string]any) {
				s := map[string]any{}
				for k, v := range seg0(md) {
					s[k] = v
				}
				s["offset"] = "25165824"
				seg0(md)["size"] = "8388608"
				md["segments"].(map[string]any)["1"] = s
				md["digests"].(map[string]any)["0"].(map[string]any)["segments"] = []string{"0", "1"}
			})
		}},
		{name: "reencryption in progress", wantField: "config.requirements", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cli(t, "reencrypt", "--init-only", "--batch-mode", "--key-file", keyFile(t, k), p)
		}},
		{name: "extra keyslots", wantField: "keyslots", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cliAddKey(t, p, k, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
			cliAddKey(t, p, k, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
		}},
		{name: "argon2id keyslot", wantField: "keyslots.1.kdf.type", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cliAddKey(t, p, k, "--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "32")
		}},
		{name: "pbkdf2-sha1 keyslot", wantField: "keyslots.1.kdf.hash", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cliAddKey(t, p, k, "--pbkdf", "pbkdf2", "--hash", "sha1", "--pbkdf-force-iterations", "1000")
		}},
		{name: "slow keyslot", wantField: "keyslots.1.kdf.iterations", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cliAddKey(t, p, k, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "5000")
		}},
		{name: "keyslot priority prefer", wantField: "keyslots.0.priority", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cli(t, "config", "--priority", "prefer", "--key-slot", "0", p)
		}},
		{name: "foreign token", wantField: "tokens.1.type", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cliImportToken(t, p, "1", `{"type":"clevis","keyslots":["0"],"jwe":{"protected":"eyJhbGciOiJkaXIifQ"}}`)
		}},
		{name: "our token with an extra field", wantField: "tokens.0.evil", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cliImportToken(t, p, "0", `{"type":"cloister-state","keyslots":[],"keyed":true,"generation":1,"evil":"x"}`, "--token-replace")
		}},
		{name: "token removed", wantField: "tokens", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cli(t, "token", "remove", "--token-id", "0", p)
		}},
		{name: "label set", wantField: "header.label", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cli(t, "config", "--label", "evil", p)
		}},
		{name: "subsystem set", wantField: "header.subsystem", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			cli(t, "config", "--subsystem", "evil", p)
		}},
		{name: "integrity expected but absent", integrity: true, wantField: "segments.0.integrity", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
		}},
		{name: "integrity present but not expected", wantField: "segments.0.integrity", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			rewriteMetadata(t, p, func(md map[string]any) {
				seg0(md)["integrity"] = map[string]any{"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"}
			})
		}},
		{name: "truncated header", wantField: "header", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			if err := os.Truncate(p, 8192); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "truncated binary header", wantField: "header", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			if err := os.Truncate(p, 1000); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "both JSON areas corrupted", wantField: "header", build: func(t *testing.T, p string, k []byte) {
			mustFormat(t, p, k)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, off := range []int64{4096 + 10, hdrSize + 4096 + 10} {
				if _, err := f.WriteAt([]byte("XXXX"), off); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newImage(t)
			key := randomKey(t)
			tt.build(t, p, key)
			d, err := Open(p, FormatOptions{Integrity: tt.integrity})
			if err == nil {
				d.Close()
				t.Fatalf("Open accepted the header; want refused at %s", tt.wantField)
			}
			if d != nil {
				t.Fatal("Open returned a device with an error")
			}
			var he *HeaderError
			if !errors.As(err, &he) {
				t.Fatalf("Open: %v; want *HeaderError at %s", err, tt.wantField)
			}
			if he.Field != tt.wantField {
				t.Fatalf("refused field %q (%v); want %q", he.Field, err, tt.wantField)
			}
		})
	}
}

// TestOpenAcceptsRewrittenHeader checks that rewriteMetadata itself keeps
// a header valid, so the refusals above come from the edits.
func TestOpenAcceptsRewrittenHeader(t *testing.T) {
	key := randomKey(t)
	p := newImage(t)
	mustFormat(t, p, key)
	rewriteMetadata(t, p, func(map[string]any) {})
	d := openDevice(t, p)
	if _, err := d.CheckKey(key); err != nil {
		t.Fatalf("CheckKey after rewrite: %v", err)
	}
}

func mustFormat(tb testing.TB, path string, key []byte) {
	tb.Helper()
	if _, err := Format(tb.Context(), path, key, FormatOptions{}); err != nil {
		tb.Fatalf("Format: %v", err)
	}
}
