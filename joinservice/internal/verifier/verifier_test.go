package verifier

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// fakeTPMValidator accepts tpm evidence whose report equals the policy's
// PCR 4 value; it stands in for the real validator so the test is about
// swapping policies, not about TPMs.
type fakeTPMValidator struct{ want []byte }

func (f fakeTPMValidator) Variant() attestation.Variant { return attestation.VariantTPM }
func (f fakeTPMValidator) Validate(_ context.Context, ev *attestationv1.Evidence, _ []byte) (*attestation.Claims, error) {
	if err := attestation.CheckVariant(attestation.VariantTPM, ev); err != nil {
		return nil, err
	}
	if string(ev.GetTpm()) != string(f.want) {
		return nil, &attestation.CheckError{Variant: attestation.VariantTPM, Check: "pcr[4]"}
	}
	return &attestation.Claims{Variant: attestation.VariantTPM}, nil
}

func buildFake(p *policy.Policy) (attestation.Validators, error) {
	if p.TPM == nil {
		return nil, errors.New("fake build: no tpm section")
	}
	return attestation.NewValidators(fakeTPMValidator{want: p.TPM.PCRs[4].Want})
}

func writePolicy(t *testing.T, path string, pcr4 byte) {
	t.Helper()
	doc := "version: 1\ntpm:\n  pcrs:\n    \"4\": {value: \"" + strings.Repeat(string("0123456789abcdef"[pcr4>>4])+string("0123456789abcdef"[pcr4&15]), 32) + "\"}\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

func evidence(pcr4 byte) *attestationv1.Evidence {
	return &attestationv1.Evidence{Variant: "tpm", Report: &attestationv1.Evidence_Tpm{Tpm: []byte(strings.Repeat(string([]byte{pcr4}), 32))}}
}

func TestReloadSwapsPolicyAndKeepsOldOnBadPolicyWithFakeValidator(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, 0x11)
	v, err := New(path, buildFake, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := v.Validate(ctx, evidence(0x11), nil); err != nil {
		t.Fatalf("first policy: %v", err)
	}

	if changed, err := v.Reload(); changed || err != nil {
		t.Errorf("unchanged file: changed=%v err=%v", changed, err)
	}

	writePolicy(t, path, 0x22)
	if changed, err := v.Reload(); !changed || err != nil {
		t.Fatalf("new policy: changed=%v err=%v", changed, err)
	}
	if _, err := v.Validate(ctx, evidence(0x11), nil); err == nil {
		t.Error("old reference value still accepted after reload")
	}
	if _, err := v.Validate(ctx, evidence(0x22), nil); err != nil {
		t.Errorf("new reference value refused: %v", err)
	}

	for name, doc := range map[string]string{
		"syntax error":  "version: 1\ntpm: [",
		"malformed hex": "version: 1\ntpm: {pcrs: {\"4\": {value: \"zz\"}}}",
		"build fails":   "version: 1\ninsecure-dev: {iUnderstandThisProvesNothing: true}",
		"unknown field": "version: 1\ntpm: {pcrs: {}}\nextra: 1",
	} {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if changed, err := v.Reload(); changed || err == nil {
			t.Errorf("%s: bad policy took effect (changed=%v err=%v)", name, changed, err)
		}
		if _, err := v.Validate(ctx, evidence(0x22), nil); err != nil {
			t.Errorf("%s: policy in force lost: %v", name, err)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Reload(); err == nil {
		t.Error("missing policy file not reported")
	}
	if _, err := v.Validate(ctx, evidence(0x22), nil); err != nil {
		t.Errorf("policy in force lost after the file vanished: %v", err)
	}
}

func TestNewRefusesBadFirstPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("version: 1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(path, buildFake, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("started without a usable policy")
	}
}

// TestValidateDuringReloadsWithFakeValidator runs validations concurrently
// with reloads; with -race it shows the hot path needs no lock.
func TestValidateDuringReloadsWithFakeValidator(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, 0x33)
	v, err := New(path, buildFake, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if _, err := v.Validate(context.Background(), evidence(0x33), nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 50 {
		writePolicy(t, path, 0x33) // same content: must not disturb anything
		if _, err := v.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}
