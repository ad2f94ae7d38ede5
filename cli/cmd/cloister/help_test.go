package main

import (
	"flag"
	"strings"
	"testing"
	"unicode"
)

// TestHelpListsEveryFlag checks that --help of every command exits 0 on
// stdout, lists every flag of the command's flag set, gives examples and
// the exit codes.
func TestHelpListsEveryFlag(t *testing.T) {
	e := &env{}
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			fs, _ := newFlagSet(e, c)
			for _, help := range [][]string{append(strings.Fields(c.name), "--help"), append(strings.Fields(c.name), "-h"), append([]string{"help"}, strings.Fields(c.name)...)} {
				r := runCLI(t, help...)
				r.wantCode(t, exitOK)
				if r.stderr != "" {
					t.Errorf("%v: stderr not empty: %s", help, r.stderr)
				}
				n := 0
				fs.VisitAll(func(f *flag.Flag) {
					n++
					if !strings.Contains(r.stdout, "\n  "+dashed(f.Name)+" ") && !strings.Contains(r.stdout, "\n  "+dashed(f.Name)+"\n") {
						t.Errorf("%v does not list %s", help, dashed(f.Name))
					}
					if f.Usage == "" {
						t.Errorf("%s has no usage text", dashed(f.Name))
					}
				})
				if n == 0 {
					t.Fatal("no flags")
				}
				for _, want := range []string{"Usage:\n  cloister " + c.name, "Examples:\n", "Exit codes:\n", "\nFlags:\n"} {
					if !strings.Contains(r.stdout, want) {
						t.Errorf("%v lacks %q", help, want)
					}
				}
				if _, examples, _ := strings.Cut(r.stdout, "Examples:\n"); !strings.Contains(examples, "  cloister "+c.name+" ") {
					t.Errorf("%v has no example of %q", help, c.name)
				}
			}
		})
	}
}

func TestTopLevelHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := runCLI(t, args...)
		r.wantCode(t, exitOK)
		for _, c := range commands() {
			if !strings.Contains(r.stdout, "\n  "+c.name+" ") {
				t.Errorf("%v does not list %q", args, c.name)
			}
		}
		for _, code := range []string{"\n  0 ", "\n  1 ", "\n  2 ", "\n  3 ", "\n  4 ", "\n  5 ", "\n  6 ", "\n  130 "} {
			if !strings.Contains(r.stdout, code) {
				t.Errorf("%v does not document exit code %q", args, strings.TrimSpace(code))
			}
		}
	}
}

// TestUsageErrors checks the error style: "cloister: " and a lowercase
// message without final period, then a hint, exit 1.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no command", args: nil, want: "cloister: no command given\n"},
		{name: "unknown command", args: []string{"frobnicate"}, want: `cloister: unknown command "frobnicate"` + "\n"},
		{name: "policy without subcommand", args: []string{"policy"}, want: "cloister: policy needs a subcommand"},
		{name: "unknown flag", args: []string{"verify", "--bogus"}, want: "cloister: unknown flag -bogus\n"},
		{name: "flag without value", args: []string{"status", "--node"}, want: "cloister: --node needs a value\n"},
		{name: "bad output format", args: []string{"status", "--node", "h:1", "-o", "xml"}, want: `cloister: -o: want text, json or yaml, got "xml"` + "\n"},
		{name: "missing --node", args: []string{"verify", "--policy", "p.yaml"}, want: "cloister: --node is required\n"},
		{name: "missing --policy", args: []string{"verify", "--node", "h:1"}, want: "cloister: --policy is required\n"},
		{name: "positional argument", args: []string{"status", "--node", "h:1", "extra"}, want: `cloister: unexpected argument "extra"` + "\n"},
		{name: "negative timeout", args: []string{"status", "--node", "h:1", "--timeout", "-1s"}, want: "cloister: --timeout must be positive"},
		{name: "latch in from-node pcrs", args: []string{"policy", "from-node", "--node", "h:1", "--pcrs", "0-15"}, want: "pcr[15] is the cluster-ID latch"},
		{name: "sev-snp from-node", args: []string{"policy", "from-node", "--node", "h:1", "--variant", "sev-snp"}, want: "from-node supports tpm and tdx"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			r.wantCode(t, exitUsage)
			if !strings.HasPrefix(r.stderr, "cloister: ") || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("stderr = %q, want %q", r.stderr, tc.want)
			}
			first, _, _ := strings.Cut(strings.TrimPrefix(r.stderr, "cloister: "), "\n")
			if strings.HasSuffix(first, ".") || unicode.IsUpper([]rune(first)[0]) {
				t.Errorf("message %q: want lowercase, no final period", first)
			}
			if !strings.Contains(r.stderr, "\nhint: ") {
				t.Errorf("no hint in %q", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
		})
	}
}
