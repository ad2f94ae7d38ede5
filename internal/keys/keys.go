package keys

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"log/slog"
)

// SecretSize is the size of every secret and salt in the key schedule, and of
// every derived key.
const SecretSize = 32

// Secret is key material. It prints and logs as REDACTED so that a careless
// log line cannot leak it.
type Secret []byte

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value {
	return slog.StringValue(fmt.Sprintf("REDACTED(%d bytes)", len(s)))
}

// String implements fmt.Stringer with the same redaction.
func (s Secret) String() string { return s.LogValue().String() }

// GoString keeps %#v from printing the bytes.
func (s Secret) GoString() string { return s.String() }

// Format keeps every fmt verb (%x, %v, %s, %q) from printing the bytes.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// Zero overwrites the secret in place.
func (s Secret) Zero() { clear(s) }

const (
	diskInfoPrefix = "cloister/disk/v1/"
	clusterIDInfo  = "cloister/cluster-id/v1"
)

// FirstGeneration is the generation of a disk's first derived key.
// Generation 0 is reserved: it names the one-time passphrase a fresh disk is
// formatted with, so no derived key can be confused with it.
const FirstGeneration = 1

// DiskKey derives the key of the state disk diskUUID at generation (at least
// FirstGeneration).
func DiskKey(masterSecret, masterSalt []byte, diskUUID string, generation uint32) (Secret, error) {
	if generation < FirstGeneration {
		return nil, fmt.Errorf("keys: disk key generation %d: generations start at %d (0 is the one-time passphrase)", generation, FirstGeneration)
	}
	if err := checkSize("master secret", masterSecret); err != nil {
		return nil, err
	}
	if err := checkSize("master salt", masterSalt); err != nil {
		return nil, err
	}
	if err := CheckDiskUUID(diskUUID); err != nil {
		return nil, err
	}
	info := fmt.Sprintf("%s%s/%d", diskInfoPrefix, diskUUID, generation)
	return derive(masterSecret, masterSalt, info)
}

// ClusterID derives the value every node of the cluster extends into its
// cluster-ID latch (PCR 15 or RTMR 3).
func ClusterID(measurementSecret, measurementSalt []byte) ([]byte, error) {
	if err := checkSize("measurement secret", measurementSecret); err != nil {
		return nil, err
	}
	if err := checkSize("measurement salt", measurementSalt); err != nil {
		return nil, err
	}
	return derive(measurementSecret, measurementSalt, clusterIDInfo)
}

func derive(secret, salt []byte, info string) (Secret, error) {
	k, err := hkdf.Key(sha256.New, secret, salt, info, SecretSize)
	if err != nil {
		return nil, fmt.Errorf("keys: deriving %q: %w", info, err)
	}
	return k, nil
}

func checkSize(what string, b []byte) error {
	if len(b) != SecretSize {
		return fmt.Errorf("keys: %s: want %d bytes, got %d", what, SecretSize, len(b))
	}
	return nil
}

// CheckDiskUUID accepts only the canonical form of a UUID: 36 characters,
// lowercase hex, hyphens at 8, 13, 18 and 23 (RFC 4122's 8-4-4-4-12 text,
// as LUKS2 writes it). It is the one check for a disk UUID wherever one
// crosses a boundary: read from a LUKS2 header (internal/cryptsetup.Open),
// sent or received on the wire (join, rejoin, recovery, init) and typed by
// the operator (cloister recover --disk-uuid), and before key derivation
// (DiskKey). One spelling per disk matters because the UUID is an HKDF
// input: "ABC…" and "abc…" would be two disks with two keys. The message
// quotes at most 40 bytes of s, which is untrusted.
func CheckDiskUUID(s string) error {
	if len(s) != 36 {
		return fmt.Errorf("keys: disk UUID %s: want 36 characters (8-4-4-4-12 lowercase hex), got %d", quoteUUID(s), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return fmt.Errorf("keys: disk UUID %s: want '-' at position %d, got %q", quoteUUID(s), i, c)
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return fmt.Errorf("keys: disk UUID %s: want lowercase hex at position %d, got %q", quoteUUID(s), i, c)
			}
		}
	}
	return nil
}

// quoteUUID quotes an untrusted would-be UUID for an error message, cut to
// 40 bytes so a megabyte of request cannot flood a log line.
func quoteUUID(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
