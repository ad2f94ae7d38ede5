package keys

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const diskUUID = "0f4a2c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, SecretSize) }

// TestDiskKeyVector pins the derivation: changing the info string or the
// argument order would lock every existing node out of its disk.
func TestDiskKeyVector(t *testing.T) {
	k, err := DiskKey(secret(1), secret(2), diskUUID, 1)
	if err != nil {
		t.Fatal(err)
	}
	want, err := hkdf.Key(sha256.New, secret(1), secret(2), "cloister/disk/v1/"+diskUUID+"/1", 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k, want) {
		t.Fatalf("disk key %x, want %x", []byte(k), want)
	}
	// Computed independently of Go (RFC 5869 by hand with Python's hmac):
	// PRK = HMAC(salt, secret); OKM = HMAC(PRK, info || 0x01).
	const golden = "984100aed951c96b0fe12a9b83c728ef7796129be34844bf96b096d1043d01e8"
	if got := hex.EncodeToString(k); got != golden {
		t.Errorf("disk key %s, want %s", got, golden)
	}
}

func TestDiskKeySeparatesInputs(t *testing.T) {
	base, err := DiskKey(secret(1), secret(2), diskUUID, 1)
	if err != nil {
		t.Fatal(err)
	}
	others := map[string]func() (Secret, error){
		"other generation": func() (Secret, error) { return DiskKey(secret(1), secret(2), diskUUID, 2) },
		"other disk": func() (Secret, error) {
			return DiskKey(secret(1), secret(2), strings.Replace(diskUUID, "0f", "1f", 1), 1)
		},
		"other secret": func() (Secret, error) { return DiskKey(secret(3), secret(2), diskUUID, 1) },
		"other salt":   func() (Secret, error) { return DiskKey(secret(1), secret(3), diskUUID, 1) },
	}
	for name, f := range others {
		k, err := f()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if bytes.Equal(k, base) {
			t.Errorf("%s gives the same key", name)
		}
	}
	again, _ := DiskKey(secret(1), secret(2), diskUUID, 1)
	if !bytes.Equal(again, base) {
		t.Error("derivation is not deterministic")
	}
}

func TestDiskKeyRejectsBadInput(t *testing.T) {
	tests := []struct {
		name   string
		secret []byte
		salt   []byte
		uuid   string
		want   string
	}{
		{"short master secret", secret(1)[:31], secret(2), diskUUID, "master secret: want 32 bytes, got 31"},
		{"empty salt", secret(1), nil, diskUUID, "master salt: want 32 bytes, got 0"},
		{"uppercase uuid", secret(1), secret(2), strings.ToUpper(diskUUID), "lowercase hex"},
		{"uuid without hyphens", secret(1), secret(2), strings.ReplaceAll(diskUUID, "-", "") + "0000", "want '-'"},
		{"uuid too short", secret(1), secret(2), diskUUID[:35], "want 36 characters"},
		{"uuid with path separator", secret(1), secret(2), "0f4a2c1e-6b7d-4e8f-9a0b-1c2d3e4f5a/b", "lowercase hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := DiskKey(tt.secret, tt.salt, tt.uuid, 1)
			if err == nil || k != nil {
				t.Fatalf("accepted: %v", k)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestDiskKeyRefusesGenerationZero(t *testing.T) {
	// Generation 0 names the one-time passphrase of a fresh disk.
	if k, err := DiskKey(secret(1), secret(2), diskUUID, 0); err == nil || !strings.Contains(err.Error(), "generations start at 1") {
		t.Errorf("generation 0: key %v, err %v", k, err)
	}
}

func TestClusterID(t *testing.T) {
	a, err := ClusterID(secret(5), secret(6))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ClusterID(secret(5), secret(7))
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Errorf("cluster IDs %x / %x", a, b)
	}
	if _, err := ClusterID(secret(5), nil); err == nil {
		t.Error("empty measurement salt accepted")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret(secret(0xab))
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "key", s)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%x %v %s %q %#v %+v", s, s, s, s, s, s), logs.String()} {
		if strings.Contains(strings.ToLower(out), "abab") || strings.Contains(out, "q6ur") {
			t.Errorf("secret leaked: %s", out)
		}
		if !strings.Contains(out, "REDACTED(32 bytes)") {
			t.Errorf("no redaction marker: %s", out)
		}
	}
	s.Zero()
	if !bytes.Equal(s, make([]byte, 32)) {
		t.Error("Zero left bytes behind")
	}
}

func FuzzCheckDiskUUID(f *testing.F) {
	f.Add(diskUUID)
	f.Add(strings.ToUpper(diskUUID))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if CheckDiskUUID(s) != nil {
			return
		}
		// Accepted means canonical: lowercase, 36 bytes, safe in a path.
		if len(s) != 36 || strings.ToLower(s) != s || strings.ContainsAny(s, "/.\x00 ") {
			t.Fatalf("accepted non-canonical %q", s)
		}
	})
}
