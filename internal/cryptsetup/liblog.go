package cryptsetup

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"
)

// libError is a failed libcryptsetup call: the errno it returned and the
// reasons it logged. It unwraps to the errno (syscall.EINVAL,
// syscall.EPERM), which is what callers act on.
type libError struct {
	errno  error
	reason string
}

func (e *libError) Error() string { return e.errno.Error() + " (libcryptsetup: " + e.reason + ")" }
func (e *libError) Unwrap() error { return e.errno }

// libReason returns the reasons libcryptsetup gave for a failed call, or
// "" if it gave none.
func libReason(err error) string {
	var le *libError
	if errors.As(err, &le) {
		return le.reason
	}
	return ""
}

// maxReason bounds the reasons carried in an error: they come from an
// untrusted header (libcryptsetup quotes its values) and go into logs.
const maxReason = 512

// progressLines start libcryptsetup's debug lines that describe progress,
// not a reason: they are left out of errors. A line not listed is kept, so
// a reason a newer libcryptsetup words differently is never lost; at worst
// an error carries a progress line too.
var progressLines = []string{
	"Trying to ",
	"Loading LUKS",
	"LUKS2 header version ",
	"Checksum:",
	"Repairing JSON metadata",
	"Acquiring ",
	"Verifying ",
	"Device ",
	"Opening ",
	"Reusing ",
	"Releasing ",
	"Closing ",
	"Allocating ",
	"Initialising ",
	"Crypto backend ",
	"Detected kernel ",
	"Running command ",
	"Unblocking ",
	"Installing ",
}

// libReasons turns the lines collected by the log callback in luks.go
// (a level byte, 'E' or 'D', then the message) into one line: every
// error-level line, the debug lines that are not progress, each once and
// in order, made printable and cut to maxReason bytes.
func libReasons(raw []byte, dropped uint) string {
	var out []string
	seen := map[string]bool{}
	for line := range bytes.SplitSeq(raw, []byte{'\n'}) {
		if len(line) < 2 {
			continue
		}
		level, msg := line[0], strings.TrimSpace(string(line[1:]))
		msg = strings.TrimPrefix(msg, "ERROR: ")
		if msg == "" || seen[msg] {
			continue
		}
		if level == 'D' && isProgress(msg) {
			continue
		}
		seen[msg] = true
		out = append(out, sanitize(msg))
	}
	if dropped > 0 && len(out) > 0 {
		out = append(out, "more not kept")
	}
	s := strings.Join(out, "; ")
	if len(s) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func isProgress(msg string) bool {
	for _, p := range progressLines {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// sanitize replaces control characters, so an untrusted value quoted by
// libcryptsetup cannot forge log lines.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
