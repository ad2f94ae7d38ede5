package main

// Output rules, as in age's tui.go:
//   - stdout carries only what a command was asked to print (claims, a
//     status, a policy, the cluster ID), in the -o format where it has one;
//   - everything else goes to stderr: progress, warnings and errors;
//   - errors read "cloister: <lowercase message>" with no final period,
//     followed by "hint: …" lines when a fix is known;
//   - text that comes from a node (progress lines, refusal reasons) is
//     untrusted: control characters are replaced before it reaches a
//     terminal, and its length is bounded.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Exit codes. They are part of the CLI's interface: scripts branch on them,
// `cloister --help` and docs/cli.md list them.
const (
	exitOK          = 0
	exitUsage       = 1   // bad flags or arguments
	exitUnavailable = 2   // the node could not be reached, timed out or spoke no attested TLS
	exitRefused     = 3   // the node's attestation failed the policy
	exitLatch       = 4   // the node's cluster-ID latch is not this cluster's
	exitNodeRefused = 5   // the node refused or failed the request
	exitLocal       = 6   // a local problem: files, policy, cluster directory
	exitInterrupted = 130 // interrupted (SIGINT or SIGTERM)
)

const exitCodesHelp = `Exit codes:
  0    success
  1    usage: bad flags or arguments
  2    the node could not be reached, timed out, or did not speak attested TLS
  3    attestation refused: the node's evidence failed the policy
  4    latch check failed: the node is not latched to this cluster
  5    the node refused or failed the request (init refused, key refused)
  6    a local problem: a file, the policy or the cluster directory
  130  interrupted
`

// exitError is an error that ends the command with a given exit code and
// hints. Commands return it; only run turns it into output and a code.
type exitError struct {
	code  int
	err   error
	hints []string
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// fail wraps err with an exit code and hints.
func fail(code int, err error, hints ...string) *exitError {
	return &exitError{code: code, err: err, hints: hints}
}

// failf is fail with a formatted message.
func failf(code int, hints []string, format string, args ...any) *exitError {
	return fail(code, fmt.Errorf(format, args...), hints...)
}

// usageErrorf is a usage error for command name, with a hint to its help.
func usageErrorf(name, format string, args ...any) *exitError {
	return failf(exitUsage, []string{fmt.Sprintf("see 'cloister %s --help'", name)}, format, args...)
}

// report prints err on stderr by the output rules and returns its exit
// code. An error that is no exitError is a local problem, unless the
// context was cancelled.
func report(stderr io.Writer, err error) int {
	var ee *exitError
	if !errors.As(err, &ee) {
		ee = fail(exitLocal, err)
		if errors.Is(err, context.Canceled) {
			ee = fail(exitInterrupted, err)
		}
	}
	msg := ee.err.Error()
	fmt.Fprintf(stderr, "cloister: %s\n", msg)
	for _, h := range ee.hints {
		fmt.Fprintf(stderr, "hint: %s\n", h)
	}
	return ee.code
}

// warnf prints a warning line on stderr.
func warnf(stderr io.Writer, format string, args ...any) {
	fmt.Fprintf(stderr, "cloister: warning: "+format+"\n", args...)
}

// maxUntrusted bounds how much of a node's text is shown.
const maxUntrusted = 512

// untrusted makes text from a node safe to print: invalid UTF-8 and control
// characters (terminal escape sequences, newlines) become U+FFFD, and the
// text is cut at maxUntrusted bytes with a note.
func untrusted(s string) string {
	var b strings.Builder
	n := 0
	for i, r := range s {
		if n >= maxUntrusted {
			fmt.Fprintf(&b, "… (%d more bytes)", len(s)-i)
			break
		}
		if r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r) {
			r = '\uFFFD'
		}
		b.WriteRune(r)
		n += utf8.RuneLen(r)
	}
	return b.String()
}
