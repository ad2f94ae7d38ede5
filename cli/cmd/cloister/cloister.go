package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// env is what every command depends on. run builds the real one; nothing is
// global, so a test runs any command on its own.
type env struct {
	stdout, stderr io.Writer
	// rand draws the cluster secrets.
	rand io.Reader
	// now stamps bootstrap policies.
	now func() time.Time
}

// command is one subcommand. setup registers its flags on fs, into variables
// local to the command, and returns the action that runs after parsing.
type command struct {
	name    string // as typed: "verify", "policy set"
	summary string // one line for `cloister --help`
	usage   string // synopsis, description and examples for --help
	setup   func(e *env, fs *flag.FlagSet) func(ctx context.Context) error
}

// commands is the command set. It is built on every run, from the
// dependencies in e; there is no global command tree.
func commands() []*command {
	return []*command{
		initCommand(),
		verifyCommand(),
		recoverCommand(),
		statusCommand(),
		policyShowCommand(),
		policySetCommand(),
		policyFromNodeCommand(),
		versionCommand(),
	}
}

const topUsage = `cloister: initialize, verify and recover Cloister cluster nodes

Usage:
  cloister <command> [flags]
  cloister <command> --help
  cloister --version

Commands:
%s
Every command that talks to a node verifies the node's attestation against
a policy (--policy) before it sends or believes anything; the operator's
machine itself does not attest.

Examples:
  cloister init --node 10.0.0.5:9100 --policy policy.yaml --tpm-ak-roots gce-ak-ca.pem
  cloister verify --node 10.0.0.5:9100 --policy policy.yaml --tpm-ak-roots gce-ak-ca.pem --cluster-dir ./cloister-cluster
  cloister status --node 10.0.0.5:9101 -o json

` + exitCodesHelp

// run parses args, runs one command and returns the exit code. It prints
// errors on stderr by the rules in tui.go.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, rand: rand.Reader, now: time.Now}
	return runEnv(ctx, e, args)
}

// runEnv runs args and reports the outcome. With -o json (or yaml) stdout
// always carries one document: the command's own output, or, when the
// command printed nothing there, {"error": ..., "exit_code": N, "hints":
// [...]}, for usage errors and unknown commands too.
func runEnv(ctx context.Context, e *env, args []string) int {
	format := requestedOutput(args)
	out := &writeTracker{w: e.stdout}
	e.stdout = out
	err := runArgs(ctx, e, args)
	if err == nil {
		return exitOK
	}
	code := report(e.stderr, err)
	if format != outputText && !out.wrote {
		if perr := printData(out, format, newErrorReport(err, code), nil); perr != nil {
			fmt.Fprintf(e.stderr, "cloister: writing the error report: %v\n", perr)
		}
	}
	return code
}

// runArgs finds the command, parses its flags and runs it. Help of any
// form (--help, -h, help before or after a command or a command group)
// prints usage on stdout and succeeds.
func runArgs(ctx context.Context, e *env, args []string) error {
	cmds := commands()
	if len(args) == 0 {
		return failf(exitUsage, []string{"see 'cloister --help'"}, "no command given")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			if c := findCommand(cmds, args[1:]); c != nil {
				fs, _ := newFlagSet(e, c)
				_, err := fmt.Fprint(e.stdout, commandHelp(c, fs))
				return err
			}
			if args[1] == "policy" {
				_, err := fmt.Fprint(e.stdout, groupHelp(cmds, "policy"))
				return err
			}
			return failf(exitUsage, []string{"see 'cloister --help'"}, "no help for unknown command %q", args[1])
		}
		_, err := fmt.Fprint(e.stdout, topHelp(cmds))
		return err
	case "-version", "--version":
		return runVersion(e, versionOptions{output: requestedOutput(args)})
	}
	c := findCommand(cmds, args)
	if c == nil {
		if args[0] == "policy" {
			if len(args) > 1 && isHelp(args[1]) {
				_, err := fmt.Fprint(e.stdout, groupHelp(cmds, "policy"))
				return err
			}
			return failf(exitUsage, []string{"cloister policy show|set|from-node --help"}, "policy needs a subcommand: show, set or from-node")
		}
		return failf(exitUsage, []string{"see 'cloister --help'"}, "unknown command %q", args[0])
	}
	fs, act := newFlagSet(e, c)
	rest := splitShortValues(fs, args[len(strings.Fields(c.name)):])
	if len(rest) == 1 && rest[0] == "help" {
		_, err := fmt.Fprint(e.stdout, commandHelp(c, fs))
		return err
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, err := fmt.Fprint(e.stdout, commandHelp(c, fs))
			return err
		}
		return usageErrorf(c.name, "%s", flagErrorText(err))
	}
	if fs.NArg() > 0 {
		return usageErrorf(c.name, "unexpected argument %q", fs.Arg(0))
	}
	if err := act(ctx); err != nil {
		if ctx.Err() != nil && !isExitError(err) {
			return fail(exitInterrupted, fmt.Errorf("%s: interrupted: %w", c.name, err))
		}
		return err
	}
	return nil
}

func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// writeTracker records whether a command wrote to stdout, so that an error
// report in JSON never follows a document the command already printed.
type writeTracker struct {
	w     io.Writer
	wrote bool
}

func (t *writeTracker) Write(p []byte) (int, error) {
	if len(p) > 0 {
		t.wrote = true
	}
	return t.w.Write(p)
}

// errorReport is what -o json and -o yaml print on stdout for a failed
// command. Its json names are stable.
type errorReport struct {
	Error    string   `json:"error"`
	ExitCode int      `json:"exit_code"`
	Hints    []string `json:"hints,omitempty"`
}

func newErrorReport(err error, code int) *errorReport {
	r := &errorReport{Error: err.Error(), ExitCode: code}
	var ee *exitError
	if errors.As(err, &ee) {
		r.Error = ee.err.Error()
		r.Hints = ee.hints
	}
	return r
}

func isExitError(err error) bool {
	var ee *exitError
	return errors.As(err, &ee)
}

// findCommand matches the longest command name at the start of args.
func findCommand(cmds []*command, args []string) *command {
	var best *command
	for _, c := range cmds {
		words := strings.Fields(c.name)
		if len(words) > len(args) {
			continue
		}
		match := true
		for i, w := range words {
			if args[i] != w {
				match = false
				break
			}
		}
		if match && (best == nil || len(words) > len(strings.Fields(best.name))) {
			best = c
		}
	}
	return best
}

// newFlagSet returns the command's flag set with its flags registered, and
// the command's action. Flag
// errors are reported by run, not by the flag package.
func newFlagSet(e *env, c *command) (*flag.FlagSet, func(context.Context) error) {
	fs := flag.NewFlagSet("cloister "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs, c.setup(e, fs)
}

// groupHelp lists the subcommands of a command group such as "policy".
func groupHelp(cmds []*command, group string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage:\n  cloister %s <subcommand> [flags]\n  cloister %s <subcommand> --help\n\nSubcommands:\n", group, group)
	for _, c := range cmds {
		if strings.HasPrefix(c.name, group+" ") {
			fmt.Fprintf(&b, "  %-18s %s\n", c.name, c.summary)
		}
	}
	b.WriteString("\n")
	b.WriteString(exitCodesHelp)
	return b.String()
}

func topHelp(cmds []*command) string {
	var b strings.Builder
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-18s %s\n", c.name, c.summary)
	}
	return fmt.Sprintf(topUsage, b.String())
}

// commandHelp is the command's hand-written usage, then every flag of fs
// with its default, then the exit codes.
func commandHelp(c *command, fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(c.usage)
	b.WriteString("\nFlags:\n")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		arg, text := flag.UnquoteUsage(f)
		head := dashed(f.Name)
		if arg != "" {
			head += " " + arg
		}
		fmt.Fprintf(&b, "  %s\n      %s", head, text)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	b.WriteString(exitCodesHelp)
	return b.String()
}

// flagErrorText rewords the flag package's errors in the CLI's style:
// "--name: problem".
func flagErrorText(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return "unknown flag " + name
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return dashed(strings.TrimLeft(name, "-")) + " needs a value"
	}
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		if _, after, ok := strings.Cut(rest, " for flag -"); ok {
			if name, problem, ok := strings.Cut(after, ": "); ok {
				return dashed(name) + ": " + problem
			}
		}
	}
	return msg
}

// dashed writes a flag name as the help does: -o, --node.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
