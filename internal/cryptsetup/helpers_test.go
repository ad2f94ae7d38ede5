package cryptsetup

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// imageSize is a 16 MiB header area plus 16 MiB of data.
const imageSize = 32 << 20

// requireCLI returns the path of the cryptsetup binary (Debian's
// cryptsetup-bin), the independent reader and writer of LUKS2 headers in
// these tests. Without it the test fails in CI and is skipped elsewhere.
func requireCLI(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("cryptsetup")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("cryptsetup CLI not found (apt-get install cryptsetup-bin): %v", err)
		}
		tb.Skipf("cryptsetup CLI not found (apt-get install cryptsetup-bin): %v", err)
	}
	return p
}

// newImage returns the path of a fresh sparse file image.
func newImage(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.Truncate(imageSize); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return p
}

func randomKey(tb testing.TB) []byte {
	tb.Helper()
	k := make([]byte, PassphraseSize)
	if _, err := rand.Read(k); err != nil {
		tb.Fatal(err)
	}
	return k
}

// keyFile writes key to a file the cryptsetup CLI can read.
func keyFile(tb testing.TB, key []byte) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "key")
	if err := os.WriteFile(p, key, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// cli runs the cryptsetup CLI and fails the test if it fails.
func cli(tb testing.TB, args ...string) []byte {
	tb.Helper()
	cmd := exec.Command(requireCLI(tb), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("cryptsetup %v: %v: %s", args, err, stderr.Bytes())
	}
	return out
}

// formatImage formats a fresh image with Format and returns its path.
func formatImage(tb testing.TB, key []byte) string {
	tb.Helper()
	p := newImage(tb)
	if _, err := Format(tb.Context(), p, key, FormatOptions{}); err != nil {
		tb.Fatalf("Format: %v", err)
	}
	return p
}

func openDevice(tb testing.TB, path string) *Device {
	tb.Helper()
	d, err := Open(path, FormatOptions{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil && !errors.Is(err, errClosed) {
			tb.Errorf("Close: %v", err)
		}
	})
	return d
}

// headerField returns the field of a *HeaderError, or "" for any other
// error.
func headerField(err error) string {
	var he *HeaderError
	if errors.As(err, &he) {
		return he.Field
	}
	return ""
}

// hasDeviceMapper reports whether the kernel has a device-mapper misc
// device. /dev/mapper/control may exist without one (as on the test hosts).
func hasDeviceMapper() bool {
	b, err := os.ReadFile("/proc/misc")
	return err == nil && bytes.Contains(b, []byte(" device-mapper\n"))
}
