package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cloister-dev/cloister/internal/atomicfile"
	"github.com/cloister-dev/cloister/internal/strictyaml"
)

// ClusterSecrets are a cluster's root secrets. The CLI generates them at
// init; control planes hold them; workers never see them.
type ClusterSecrets struct {
	// MasterSecret and MasterSalt derive every disk key.
	MasterSecret Secret
	MasterSalt   []byte
	// MeasurementSecret and MeasurementSalt derive the cluster ID.
	MeasurementSecret Secret
	MeasurementSalt   []byte
}

// KeyProvider gives the cluster secrets to whoever derives keys. Errors are
// fatal for the caller's request; implementations never log secrets.
type KeyProvider interface {
	ClusterSecrets(ctx context.Context) (*ClusterSecrets, error)
}

// NewClusterSecrets draws fresh secrets from rand (crypto/rand.Reader in
// production).
func NewClusterSecrets(rnd io.Reader) (*ClusterSecrets, error) {
	s := &ClusterSecrets{
		MasterSecret:      make(Secret, SecretSize),
		MasterSalt:        make([]byte, SecretSize),
		MeasurementSecret: make(Secret, SecretSize),
		MeasurementSalt:   make([]byte, SecretSize),
	}
	for _, b := range [][]byte{s.MasterSecret, s.MasterSalt, s.MeasurementSecret, s.MeasurementSalt} {
		if _, err := io.ReadFull(rnd, b); err != nil {
			return nil, fmt.Errorf("keys: drawing cluster secrets: %w", err)
		}
	}
	return s, nil
}

// Validate checks every field's size.
func (s *ClusterSecrets) Validate() error {
	return errors.Join(
		checkSize("masterSecret", s.MasterSecret),
		checkSize("masterSalt", s.MasterSalt),
		checkSize("measurementSecret", s.MeasurementSecret),
		checkSize("measurementSalt", s.MeasurementSalt),
	)
}

// DiskKey derives the disk key of diskUUID at generation.
func (s *ClusterSecrets) DiskKey(diskUUID string, generation uint32) (Secret, error) {
	return DiskKey(s.MasterSecret, s.MasterSalt, diskUUID, generation)
}

// ClusterID derives the cluster ID.
func (s *ClusterSecrets) ClusterID() ([]byte, error) {
	return ClusterID(s.MeasurementSecret, s.MeasurementSalt)
}

// Zero overwrites the secret fields.
func (s *ClusterSecrets) Zero() {
	s.MasterSecret.Zero()
	s.MeasurementSecret.Zero()
}

// secretsFile is the on-disk form: JSON, base64 byte fields.
type secretsFile struct {
	Version           int    `json:"version"`
	MasterSecret      []byte `json:"masterSecret"`
	MasterSalt        []byte `json:"masterSalt"`
	MeasurementSecret []byte `json:"measurementSecret"`
	MeasurementSalt   []byte `json:"measurementSalt"`
}

const secretsFileVersion = 1

// maxSecretsFile bounds what ParseClusterSecrets reads.
const maxSecretsFile = 4096

// MarshalClusterSecrets encodes secrets for WriteClusterSecrets or a
// Kubernetes Secret.
func MarshalClusterSecrets(s *ClusterSecrets) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("keys: marshaling cluster secrets: %w", err)
	}
	return json.Marshal(secretsFile{
		Version:           secretsFileVersion,
		MasterSecret:      s.MasterSecret,
		MasterSalt:        s.MasterSalt,
		MeasurementSecret: s.MeasurementSecret,
		MeasurementSalt:   s.MeasurementSalt,
	})
}

// ParseClusterSecrets decodes and validates the encoded form strictly.
func ParseClusterSecrets(b []byte) (*ClusterSecrets, error) {
	if len(b) > maxSecretsFile {
		return nil, fmt.Errorf("keys: cluster secrets: %d bytes, limit %d", len(b), maxSecretsFile)
	}
	// strictyaml.DecodeJSON, not encoding/json alone, which would take
	// "MasterSecret" for masterSecret and keep the last of two spellings:
	// a file could carry two master secrets and tools reading it
	// differently would disagree on which one is in force. JSON only: the
	// file is written by MarshalClusterSecrets, never by hand.
	var f secretsFile
	if err := strictyaml.DecodeJSON(b, &f); err != nil {
		// Structural refusals name keys, never values; any other decoding
		// error is dropped on purpose: it may quote secret bytes.
		var fe *strictyaml.FieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("keys: cluster secrets: %w", fe)
		}
		return nil, fmt.Errorf("keys: cluster secrets: malformed JSON")
	}
	if f.Version != secretsFileVersion {
		return nil, fmt.Errorf("keys: cluster secrets: version: want %d, got %d", secretsFileVersion, f.Version)
	}
	s := &ClusterSecrets{MasterSecret: f.MasterSecret, MasterSalt: f.MasterSalt, MeasurementSecret: f.MeasurementSecret, MeasurementSalt: f.MeasurementSalt}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("keys: cluster secrets: %w", err)
	}
	return s, nil
}

// FileProvider reads the cluster secrets from a file that only its owner may
// read. It rereads the file on every call, so a rotated file takes effect.
type FileProvider struct {
	Path string
}

var _ KeyProvider = FileProvider{}

// ClusterSecrets implements KeyProvider. A file readable or writable by group
// or others is refused: its secrets may already be known to someone else.
func (p FileProvider) ClusterSecrets(_ context.Context) (*ClusterSecrets, error) {
	f, err := os.Open(p.Path)
	if err != nil {
		return nil, fmt.Errorf("keys: opening cluster secrets: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the checked file is the read one.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keys: checking cluster secrets %s: %w", p.Path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("keys: cluster secrets %s: not a regular file", p.Path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("keys: cluster secrets %s: mode %04o lets group or others read it; want 0600 (chmod 600 %s)", p.Path, perm, p.Path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretsFile+1))
	if err != nil {
		return nil, fmt.Errorf("keys: reading cluster secrets %s: %w", p.Path, err)
	}
	s, err := ParseClusterSecrets(b)
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, p.Path)
	}
	return s, nil
}

// WriteClusterSecrets writes secrets to path with mode 0600, atomically
// (atomicfile): a crash leaves either the old file or the new one.
func WriteClusterSecrets(path string, s *ClusterSecrets) error {
	b, err := MarshalClusterSecrets(s)
	if err != nil {
		return err
	}
	defer clear(b)
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
}
