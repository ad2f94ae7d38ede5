package setup

import (
	"errors"

	"github.com/cloister-dev/cloister/disk-mapper/internal/statedisk"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
)

var (
	// ErrNoHeader is wrapped by headers.Open for a disk that carries no LUKS
	// header at all: a fresh disk.
	ErrNoHeader = errors.New("no LUKS header")
	// ErrHeaderInvalid is wrapped when a LUKS header exists but is not what
	// disk-mapper formats.
	ErrHeaderInvalid = errors.New("LUKS header refused")
	// ErrNoKey is wrapped when the wait for a keyed disk's key ended without
	// a key that opens it.
	ErrNoKey = errors.New("no key opened the state disk")
)

// Exit codes of disk-mapper; see the package documentation.
const (
	ExitReady         = 0
	ExitInternal      = 1
	ExitUsage         = 2
	ExitDiskMissing   = 3
	ExitHeaderInvalid = 4
	ExitNoKey         = 5
)

// ExitCode maps an error of Run (or of finding the disk) to the exit code.
func ExitCode(err error) int {
	var he *cryptsetup.HeaderError
	switch {
	case err == nil:
		return ExitReady
	case errors.Is(err, statedisk.ErrNotFound), errors.Is(err, statedisk.ErrBootDisk):
		return ExitDiskMissing
	case errors.Is(err, ErrHeaderInvalid), errors.As(err, &he):
		return ExitHeaderInvalid
	case errors.Is(err, ErrNoKey):
		return ExitNoKey
	}
	return ExitInternal
}
