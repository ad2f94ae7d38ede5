package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/disk-mapper/internal/setup"
	"github.com/cloister-dev/cloister/disk-mapper/internal/statedisk"
)

func TestHelpDocumentsExitCodesAndFlags(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"--help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run(--help) = %v", err)
	}
	for _, want := range []string{"Exit codes", "3  no usable state disk", "4  LUKS header refused", "5  no key opened",
		"-state-disk-label", "-state-disk-by-id", "-join-endpoints", "-node-config", "-join-policy", "-recovery-listen", "-status-listen", "-allow-insecure-dev", ":9100", ":9101"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"extra-argument"},
		{"--mount", "relative"},
		{"--join-endpoints", "10.0.0.1"},
		{"--node-config", "/nonexistent/node.yaml"},
		{"--attest", "sgx"},
		{"--attest", "insecure-dev"},
		{"--latch", "pcr7"},
	} {
		err := run(context.Background(), append(args, "--status-listen", ""), &bytes.Buffer{})
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("run(%q) = %v; want a usage error (exit %d)", args, err, setup.ExitUsage)
		}
	}
}

func TestMissingStateDiskExitCode(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"--state-disk-label", "cloister-test-no-such-label", "--status-listen", "127.0.0.1:0"}, &out)
	if !errors.Is(err, statedisk.ErrNotFound) || setup.ExitCode(err) != setup.ExitDiskMissing {
		t.Fatalf("run = %v (exit %d); want ErrNotFound, exit %d", err, setup.ExitCode(err), setup.ExitDiskMissing)
	}
	if !strings.Contains(err.Error(), "/dev/disk/by-partlabel/cloister-test-no-such-label") {
		t.Errorf("error %q does not name what was looked for", err)
	}
}
