package nodestate

import "github.com/cloister-dev/cloister/internal/atomicfile"

// WriteFile writes b to path with mode 0600, atomically (a crash leaves the
// old file or the new one). The directory must exist.
func WriteFile(path string, b []byte) error { return atomicfile.Write(path, b, 0o600) }
