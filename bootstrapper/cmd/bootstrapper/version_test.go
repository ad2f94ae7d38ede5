package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: --version prints the build's version line and starts
// nothing: the --state-dir given here does not exist, and run would fail on it.
func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--version", "--state-dir", "/nonexistent/x"}, &out); err != nil {
		t.Fatalf("run(--version) = %v, want nil (exit 0)", err)
	}
	line := strings.TrimSpace(out.String())
	if !strings.HasPrefix(line, "bootstrapper ") || !strings.Contains(line, runtime.Version()) || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("--version printed %q, want one line \"bootstrapper <version> (%s) ...\"", out.String(), runtime.Version())
	}
}
