package tpmtest

import (
	"os"
	"os/exec"
)

// RequireTool returns the path of an external tool (swtpm, tpm2_checkquote,
// …). When it is missing the test fails if CI=true, so CI never passes by
// skipping, and is skipped elsewhere, with a hint on how to install it.
func RequireTool(tb TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s is required in CI: %v", name, err)
	}
	tb.Skipf("%s not installed (apt-get install swtpm swtpm-tools tpm2-tools): %v", name, err)
	return ""
}
