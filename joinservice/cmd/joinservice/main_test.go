package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHelpDocumentsEveryConfigField(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"--help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"listen:", "metricsListen:", "statusListen:", "policy:", "clusterSecrets:", "bootstrapTokenTTL:", "rateLimit:", "trust:", "allowControlPlaneJoins:", "-allow-insecure-dev", "-attest", "-config"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}

func TestRunFailsEarlyWithAClearError(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined"},
		{"stray argument", []string{"--config", write("ok.yaml", ""), "extra"}, "unexpected arguments"},
		{"missing config file", []string{"--config", filepath.Join(dir, "nope.yaml")}, "reading config"},
		{"config with unknown field", []string{"--config", write("bad.yaml", "listn: :1")}, `unknown field "listn"`},
		{"missing policy", []string{"--config", write("nopolicy.yaml", "policy: "+filepath.Join(dir, "missing-policy.yaml"))}, "loading policy"},
		{"insecure-dev policy without the flag", []string{"--config", write("dev.yaml", "policy: "+write("dev-policy.yaml", "version: 1\ninsecure-dev: {iUnderstandThisProvesNothing: true}"))}, "--allow-insecure-dev"},
		{"tpm policy without trust anchors", []string{"--config", write("tpm.yaml", "policy: "+write("tpm-policy.yaml", "version: 1\ntpm: {pcrs: {\"4\": {value: \""+strings.Repeat("00", 32)+"\"}}}"))}, "no TPM trust anchor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to say %q", err, tt.want)
			}
		})
	}
}
