package platform

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
)

func mustPolicy(t *testing.T, doc string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	h32 = strings.Repeat("00", 32)
	h48 = strings.Repeat("00", 48)
)

func TestValidatorsBuildsWhatThePolicyAllows(t *testing.T) {
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := Validators(mustPolicy(t, "version: 1\ntdx: {mrtd: {value: \""+h48+"\"}}"), Anchors{TDXRoots: chain.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	if len(reg) != 1 || reg[attestation.VariantTDX] == nil {
		t.Errorf("registry %v, want exactly tdx", reg)
	}
}

func TestValidatorsRefusesMissingAnchorsAndUnconsentedInsecureDev(t *testing.T) {
	tests := []struct {
		name, doc, want string
		anchors         Anchors
	}{
		{"tpm without anchors", "version: 1\ntpm: {pcrs: {\"4\": {value: \"" + h32 + "\"}}}", "no TPM trust anchor", Anchors{}},
		{"insecure-dev without the flag", "version: 1\ninsecure-dev: {iUnderstandThisProvesNothing: true}", "--allow-insecure-dev", Anchors{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Validators(mustPolicy(t, tt.doc), tt.anchors)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
	reg, err := Validators(mustPolicy(t, "version: 1\ninsecure-dev: {iUnderstandThisProvesNothing: true}"), Anchors{AllowInsecureDev: true})
	if err != nil || reg[attestation.VariantInsecureDev] == nil {
		t.Errorf("insecure-dev with both switches: %v, %v", reg, err)
	}
}

func TestOpenIssuerRefusesInsecureDevWithoutFlag(t *testing.T) {
	if _, err := OpenIssuer(attestation.VariantInsecureDev, IssuerOptions{}); err == nil {
		t.Error("insecure-dev issuer opened without the flag")
	}
	if _, err := OpenIssuer("sgx", IssuerOptions{}); err == nil {
		t.Error("unknown variant accepted")
	}
}

func TestLoadCertPool(t *testing.T) {
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain.Root().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCertPool([]string{good})
	if err != nil || pool == nil {
		t.Fatalf("pool %v, err %v", pool, err)
	}
	if pool, err := LoadCertPool(nil); pool != nil || err != nil {
		t.Errorf("no files: pool %v, err %v", pool, err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCertPool([]string{empty}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("file without certificates: %v", err)
	}
}
