package main

import (
	"encoding/json"
	"flag"
	"strings"
	"testing"
)

// TestVerifyAgainstPlainPort runs verify against a REAL plain status.v1
// port: no evidence is exchanged, so it is a transport failure (exit 2)
// that says the port does not speak attested TLS, not a refused
// attestation (exit 3).
func TestVerifyAgainstPlainPort(t *testing.T) {
	addr, _ := startStatusPort(t)
	n := startTPMNode(t, nodeServices{})
	pol := writeTPMPolicy(t, "p", map[int]pcrPolicy{0: {value: n.pcrs(t)[0]}})
	for _, output := range []string{"text", "json"} {
		t.Run(output, func(t *testing.T) {
			// The node's trust arguments, but the plain port's address.
			args := append([]string{"verify"}, n.trustArgs(pol)...)
			args = append(args, "--node", addr, "--timeout", "10s", "-o", output)
			r := runCLI(t, args...)
			r.wantCode(t, exitUnavailable)
			if !strings.Contains(r.stderr, "did not speak attested TLS") {
				t.Fatalf("stderr does not say the port did not speak attested TLS: %s", r)
			}
			if output == "json" {
				got := decodeOne(t, r.stdout)
				if got["exit_code"] != float64(exitUnavailable) || !strings.Contains(got["error"].(string), "attested TLS") {
					t.Fatalf("JSON error report %v; want exit_code %d and the reason", got, exitUnavailable)
				}
			}
		})
	}
}

// decodeOne decodes stdout as exactly one JSON object.
func decodeOne(tb testing.TB, stdout string) map[string]any {
	tb.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		tb.Fatalf("stdout is not a JSON object: %v\n%s", err, stdout)
	}
	if dec.More() {
		tb.Fatalf("stdout holds more than one JSON document:\n%s", stdout)
	}
	return m
}

// TestJSONOnEveryFailure checks that every command with -o reports every
// failure as one JSON object on stdout, with the error and the exit code,
// in every accepted spelling of the flag.
func TestJSONOnEveryFailure(t *testing.T) {
	closed := closedAddr(t)
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"unknown command", []string{"frobnicate"}, exitUsage},
		{"unknown flag", []string{"status", "--bogus"}, exitUsage},
		{"status missing --node", []string{"status"}, exitUsage},
		{"status unreachable", []string{"status", "--node", closed, "--timeout", "2s"}, exitUnavailable},
		{"verify missing --policy", []string{"verify", "--node", "h:1"}, exitUsage},
		{"verify missing policy file", []string{"verify", "--node", "h:1", "--policy", "/nonexistent/p.yaml"}, exitLocal},
		{"policy show missing file", []string{"policy", "show", "--policy", "/nonexistent/p.yaml"}, exitLocal},
		{"policy without subcommand", []string{"policy"}, exitUsage},
		{"positional argument", []string{"version", "extra"}, exitUsage},
	}
	forms := [][]string{{"-o", "json"}, {"-o=json"}, {"-ojson"}, {"--output", "json"}, {"--output=json"}}
	for _, tt := range tests {
		for _, form := range forms {
			t.Run(tt.name+"/"+strings.Join(form, " "), func(t *testing.T) {
				r := runCLI(t, append(append([]string{}, tt.args...), form...)...)
				r.wantCode(t, tt.code)
				got := decodeOne(t, r.stdout)
				if got["exit_code"] != float64(tt.code) {
					t.Fatalf("exit_code %v; want %d\n%s", got["exit_code"], tt.code, r)
				}
				if msg, _ := got["error"].(string); msg == "" {
					t.Fatalf("no error in %v", got)
				}
				if !strings.HasPrefix(r.stderr, "cloister: ") {
					t.Errorf("stderr lost the error: %q", r.stderr)
				}
			})
		}
	}
}

// TestOutputFlagForms checks that every standard spelling of -o is
// accepted and means the same.
func TestOutputFlagForms(t *testing.T) {
	for _, form := range [][]string{{"-o", "json"}, {"-o=json"}, {"-ojson"}, {"--output", "json"}, {"--output=json"}, {"-output", "json"}, {"--o", "json"}} {
		r := runCLI(t, append([]string{"version"}, form...)...)
		r.wantCode(t, exitOK)
		got := decodeOne(t, r.stdout)
		if got["module"] != "github.com/cloister-dev/cloister" && got["module"] != "" {
			t.Errorf("%v: module %v", form, got["module"])
		}
		if _, ok := got["version"]; !ok {
			t.Errorf("%v: no version in %v", form, got)
		}
	}
	// A value that merely starts like -o is a value, not the flag.
	if got := splitShortValues(mustFlagSet(t, "status"), []string{"--node", "-ojson"}); strings.Join(got, " ") != "--node -ojson" {
		t.Errorf("split a flag's value: %q", got)
	}
}

func mustFlagSet(tb testing.TB, name string) *flag.FlagSet {
	tb.Helper()
	c := findCommand(commands(), strings.Fields(name))
	if c == nil {
		tb.Fatalf("no command %q", name)
	}
	fs, _ := newFlagSet(&env{}, c)
	return fs
}

// TestHelpEverywhere checks --help, -h and help on every command and
// command group: usage on stdout, nothing on stderr, exit 0.
func TestHelpEverywhere(t *testing.T) {
	var invocations [][]string
	for _, h := range []string{"--help", "-h", "help"} {
		invocations = append(invocations, []string{h}, []string{"policy", h})
		for _, c := range commands() {
			invocations = append(invocations, append(strings.Fields(c.name), h))
		}
	}
	invocations = append(invocations, []string{"help", "policy"}, []string{"help", "version"})
	for _, args := range invocations {
		r := runCLI(t, args...)
		if r.code != exitOK || r.stderr != "" || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v: want usage on stdout and exit 0, got %s", args, r)
		}
	}
}

// TestVersion checks cloister version and --version, in text and JSON.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := runCLI(t, args...)
		r.wantCode(t, exitOK)
		if !strings.HasPrefix(r.stdout, "cloister ") || !strings.Contains(r.stdout, "go1.") {
			t.Errorf("%v: stdout %q; want \"cloister VERSION (goX)\"", args, r.stdout)
		}
	}
	r := runCLI(t, "--version", "-o", "json")
	r.wantCode(t, exitOK)
	got := decodeOne(t, r.stdout)
	if v, _ := got["goVersion"].(string); !strings.HasPrefix(v, "go1.") {
		t.Errorf("goVersion %v", got["goVersion"])
	}
}

// TestHelpPortsMatchTheImage checks every port in the help texts against
// the ports the node image serves: 9100 attested, 9101 status.
func TestHelpPortsMatchTheImage(t *testing.T) {
	var all strings.Builder
	all.WriteString(runCLI(t, "--help").stdout)
	for _, c := range commands() {
		all.WriteString(runCLI(t, append(strings.Fields(c.name), "--help")...).stdout)
	}
	for _, line := range strings.Split(all.String(), "\n") {
		if strings.Contains(line, "HOST:PORT") {
			continue // a synopsis
		}
		for _, bad := range []string{":9000", ":9001"} {
			if strings.Contains(line, bad) {
				t.Errorf("help names port %s (the join service's or none the image serves): %q", bad, line)
			}
		}
		if strings.Contains(line, "cloister status --node") && !strings.Contains(line, ":9101") {
			t.Errorf("status example not on the status port 9101: %q", line)
		}
		for _, cmd := range []string{"cloister verify --node", "cloister init --node", "cloister recover --node", "cloister policy from-node --node"} {
			if strings.Contains(line, cmd) && !strings.Contains(line, ":9100") {
				t.Errorf("attested-port example not on 9100: %q", line)
			}
		}
	}
}
