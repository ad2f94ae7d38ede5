package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClusterSecretsFileRoundTrip(t *testing.T) {
	s, err := NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cluster-secrets.json")
	if err := WriteClusterSecrets(path, s); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode %04o, want 0600", perm)
	}
	got, err := FileProvider{Path: path}.ClusterSecrets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.MasterSecret, s.MasterSecret) || !bytes.Equal(got.MeasurementSalt, s.MeasurementSalt) {
		t.Error("secrets changed on the way through the file")
	}
	k1, _ := s.DiskKey(diskUUID, 0)
	k2, _ := got.DiskKey(diskUUID, 0)
	if !bytes.Equal(k1, k2) {
		t.Error("disk keys differ after the round trip")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestFileProviderRefuses(t *testing.T) {
	s, err := NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good, err := MarshalClusterSecrets(s)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"readable by group", string(good), 0o640, "mode 0640"},
		{"readable by others", string(good), 0o604, "mode 0604"},
		{"not json", "master=abc", 0o600, "malformed JSON"},
		{"unknown field", strings.Replace(string(good), `"version"`, `"extra":1,"version"`, 1), 0o600, `(document): unknown field "extra"`},
		// encoding/json alone took the case variant for masterSecret and
		// kept the last of the two: the file said two master secrets.
		{"case variant of a field", strings.Replace(string(good), `"version"`, `"MasterSecret":"`+strings.Repeat("A", 43)+`=","version"`, 1), 0o600, `unknown field "MasterSecret" (field names are case-sensitive: did you mean "masterSecret"?)`},
		{"duplicate key", strings.Replace(string(good), `"version":1`, `"version":1,"version":1`, 1), 0o600, `(document): duplicate key "version"`},
		{"YAML, not JSON", "version: 1\n", 0o600, "malformed JSON"},
		{"wrong version", strings.Replace(string(good), `"version":1`, `"version":2`, 1), 0o600, "version: want 1, got 2"},
		{"short master secret", `{"version":1,"masterSecret":"AAAA","masterSalt":"","measurementSecret":"","measurementSalt":""}`, 0o600, "masterSecret: want 32 bytes, got 3"},
		{"oversized", strings.Repeat(" ", maxSecretsFile+1), 0o600, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.json")
			if err := os.WriteFile(path, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil { // umask may have masked bits
				t.Fatal(err)
			}
			got, err := FileProvider{Path: path}.ClusterSecrets(context.Background())
			if err == nil || got != nil {
				t.Fatalf("accepted: %v", got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			// The error must not echo secret material from the file.
			if strings.Contains(err.Error(), string(good[20:40])) {
				t.Errorf("error quotes the file: %v", err)
			}
		})
	}
	if _, err := (FileProvider{Path: filepath.Join(t.TempDir(), "missing")}).ClusterSecrets(context.Background()); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := (FileProvider{Path: t.TempDir()}).ClusterSecrets(context.Background()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

func FuzzParseClusterSecrets(f *testing.F) {
	s, err := NewClusterSecrets(bytes.NewReader(bytes.Repeat([]byte{7}, 128)))
	if err != nil {
		f.Fatal(err)
	}
	good, err := MarshalClusterSecrets(s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseClusterSecrets(b)
		if (s == nil) == (err == nil) {
			t.Fatalf("secrets %v with error %v", s, err)
		}
		if err == nil && s.Validate() != nil {
			t.Fatal("accepted secrets that do not validate")
		}
	})
}
