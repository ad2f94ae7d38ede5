package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// copyPolicy copies testdata/policy.yaml to a temporary file with mode.
func copyPolicy(t *testing.T, mode os.FileMode) string {
	t.Helper()
	b, err := os.ReadFile("testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s (go test -update rewrites it):\n%s", path, got)
	}
}

func TestPolicyShow(t *testing.T) {
	r := runCLI(t, "policy", "show", "--policy", "testdata/policy.yaml")
	r.wantCode(t, exitOK)
	golden(t, "policy-show.txt", r.stdout)

	r = runCLI(t, "policy", "show", "--policy", "testdata/policy.yaml", "-o", "json")
	r.wantCode(t, exitOK)
	golden(t, "policy-show.json", r.stdout)

	r = runCLI(t, "policy", "show", "--policy", "testdata/policy.yaml", "-o", "yaml")
	r.wantCode(t, exitOK)
	golden(t, "policy-show.yaml", r.stdout)
}

const (
	hex32 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	hex48 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// TestPolicySetRoundTrip edits a policy and reads it back through policy
// show: values, modes, comments and the file mode survive.
func TestPolicySetRoundTrip(t *testing.T) {
	path := copyPolicy(t, 0o640)
	r := runCLI(t, "policy", "set", "--policy", path,
		"--tpm-pcr", "4="+strings.ToUpper(hex32)+":warn", "--tpm-pcr", "9="+hex32, "--tpm-pcr", "7="+hex32,
		"--tdx-mrtd", hex48, "--tdx-rtmr", "1="+hex48+":warn", "--remove-tdx-rtmr", "2",
		"--snp-measurement", hex48+":warn", "--name", "prod-2026-12")
	r.wantCode(t, exitOK)

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, comment := range []string{"# Reference values of the prod cluster.", "# Firmware."} {
		if !strings.Contains(string(b), comment) {
			t.Errorf("comment %q lost:\n%s", comment, b)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("file mode %04o, want 0640 kept", fi.Mode().Perm())
	}

	r = runCLI(t, "policy", "show", "--policy", path, "-o", "json")
	r.wantCode(t, exitOK)
	var rep policyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	got := map[string]policyValueEntry{}
	for _, v := range rep.Values {
		got[v.Variant+" "+v.Register] = v
	}
	want := map[string]policyValueEntry{
		"tpm pcr[4]":          {Mode: "warn", Value: hex32},
		"tpm pcr[7]":          {Mode: "enforce", Value: hex32},
		"tpm pcr[9]":          {Mode: "enforce", Value: hex32},
		"tdx mrtd":            {Mode: "enforce", Value: hex48},
		"tdx rtmr[0]":         {Mode: "enforce", Value: strings.Repeat("ab", 48)},
		"tdx rtmr[1]":         {Mode: "warn", Value: hex48},
		"sev-snp measurement": {Mode: "warn", Value: hex48},
	}
	for k, w := range want {
		if g := got[k]; g.Mode != w.Mode || g.Value != w.Value {
			t.Errorf("%s = %s %s, want %s %s", k, g.Mode, g.Value, w.Mode, w.Value)
		}
	}
	if _, ok := got["tdx rtmr[2]"]; ok {
		t.Error("tdx rtmr[2] not removed")
	}
	if rep.Name != "prod-2026-12" {
		t.Errorf("name = %q", rep.Name)
	}
}

// TestPolicySetRefusesInvalid checks that invalid input is refused, names
// the field, and leaves the file unchanged: one bad input per case.
func TestPolicySetRefusesInvalid(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantField string
	}{
		{name: "pcr value one character short", args: []string{"--tpm-pcr", "4=" + hex32[1:]}, wantField: "tpm.pcrs[4].value: want 64 hex characters, got 63"},
		{name: "pcr value not hex", args: []string{"--tpm-pcr", "4=" + strings.Repeat("zz", 32)}, wantField: "tpm.pcrs[4].value: not hex"},
		{name: "pcr index out of range", args: []string{"--tpm-pcr", "24=" + hex32}, wantField: "tpm.pcrs[24]: index must be"},
		{name: "rtmr index out of range", args: []string{"--tdx-rtmr", "4=" + hex48}, wantField: "tdx.rtmrs[4]"},
		{name: "mrtd of pcr size", args: []string{"--tdx-mrtd", hex32}, wantField: "tdx.mrtd.value: want 96 hex characters, got 64"},
		{name: "snp measurement too long", args: []string{"--snp-measurement", hex48 + "00"}, wantField: "sev-snp.measurement.value"},
		{name: "no index", args: []string{"--tpm-pcr", hex32}, wantField: "--tpm-pcr"},
		{name: "unknown mode", args: []string{"--tpm-pcr", "4=" + hex32 + ":maybe"}, wantField: `mode "maybe": want warn or enforce`},
		{name: "remove a pcr the policy lacks", args: []string{"--remove-tpm-pcr", "11"}, wantField: "no tpm pcr[11]"},
		{name: "remove the last pcr", args: []string{"--remove-tpm-pcr", "4", "--remove-tpm-pcr", "7"}, wantField: "tpm.pcrs: no PCRs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := copyPolicy(t, 0o644)
			before, _ := os.ReadFile(path)
			r := runCLI(t, append([]string{"policy", "set", "--policy", path}, tc.args...)...)
			r.wantCode(t, exitUsage)
			if !strings.Contains(r.stderr, tc.wantField) {
				t.Errorf("stderr does not name %q:\n%s", tc.wantField, r.stderr)
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Error("the file changed")
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("temporary files left: %v", entries)
			}
		})
	}
}

// TestPolicySetNewAndJSON creates a policy from nothing and edits a JSON
// policy, which stays JSON.
func TestPolicySetNewAndJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.yaml")
	r := runCLI(t, "policy", "set", "--policy", path, "--tdx-rtmr", "1="+hex48)
	r.wantCode(t, exitUsage) // a tdx section needs an mrtd
	if !strings.Contains(r.stderr, "tdx.mrtd: missing") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("an invalid new policy was written")
	}
	r = runCLI(t, "policy", "set", "--policy", path, "--tdx-rtmr", "1="+hex48, "--tdx-mrtd", hex48, "--name", "new")
	r.wantCode(t, exitOK)
	b, _ := os.ReadFile(path)
	pol, err := policy.Parse(b)
	if err != nil || pol.TDX == nil || pol.Name != "new" {
		t.Fatalf("new policy: %v\n%s", err, b)
	}

	jsonPath := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(jsonPath, []byte(`{"version": 1, "name": "j", "tpm": {"pcrs": {"4": {"value": "`+hex32+`"}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "policy", "set", "--policy", jsonPath, "--tpm-pcr", "7="+hex32+":warn")
	r.wantCode(t, exitOK)
	b, _ = os.ReadFile(jsonPath)
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("JSON policy is no longer JSON: %v\n%s", err, b)
	}
	if pol, err := policy.Parse(b); err != nil || pol.TPM.PCRs[7].Mode != policy.Warn {
		t.Fatalf("edited JSON policy: %v", err)
	}
}
