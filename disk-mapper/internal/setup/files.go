package setup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cloister-dev/cloister/internal/atomicfile"
	"github.com/cloister-dev/cloister/internal/keys"
)

// writeSecretFile writes b to path with mode 0600 in a directory it creates
// or tightens to 0700, atomically (atomicfile).
func writeSecretFile(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// MkdirAll keeps an existing directory's mode; a wider one would let
	// others list and race our files.
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// readSalt reads the measurement salt: exactly keys.SecretSize bytes, from a
// regular file (not a symlink).
func readSalt(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist", path)
	}
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: want a regular file, got %v", path, fi.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(f, keys.SecretSize+1)); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if buf.Len() != keys.SecretSize {
		return nil, fmt.Errorf("%s: want %d bytes, got %d", path, keys.SecretSize, buf.Len())
	}
	return buf.Bytes(), nil
}
