package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// EnableEnv is the environment variable that turns the end-to-end tests on.
const EnableEnv = "CLOISTER_E2E"

// Enabled skips t unless CLOISTER_E2E=1: booting VMs under TCG takes
// minutes, so `go test ./...` (and make test) leave them out; make e2e sets it.
func Enabled(t TB) {
	t.Helper()
	if os.Getenv(EnableEnv) != "1" {
		t.Skipf("QEMU end-to-end test: set %s=1 or run 'make e2e'", EnableEnv)
	}
	if testing.Short() {
		t.Skip("QEMU end-to-end test: skipped in -short mode")
	}
}

// RequireTool returns the path of an external tool. When it is missing the
// test fails if CI=true, so CI never passes by skipping, and is skipped
// elsewhere, with the command that installs it.
func RequireTool(t TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	// sbin is not on every PATH (sgdisk, depmod, mkfs.ext4).
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI: %v (run hack/e2e-deps.sh)", name, err)
	}
	t.Skipf("%s not installed (run hack/e2e-deps.sh): %v", name, err)
	return ""
}

// RequireFile is RequireTool for a file a package installs (OVMF firmware).
func RequireFile(t TB, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return path
	} else if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI: %v (apt-get install %s)", path, err, pkg)
	} else {
		t.Skipf("%s missing (apt-get install %s): %v", path, pkg, err)
	}
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// HealthProbeEnv names the grpc-health-probe binary the Makefile builds
// (hack/tools/grpc-health-probe.sh) for the health tests.
const HealthProbeEnv = "CLOISTER_GRPC_HEALTH_PROBE"

// HealthProbe returns grpc-health-probe: $CLOISTER_GRPC_HEALTH_PROBE, else
// the one on PATH. Missing, it fails the test if CI=true and skips it
// otherwise, like RequireTool.
func HealthProbe(t TB) string {
	t.Helper()
	if p := os.Getenv(HealthProbeEnv); p != "" && isExecutable(p) {
		return p
	}
	return RequireTool(t, "grpc-health-probe")
}
