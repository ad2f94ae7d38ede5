package cryptsetup

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// ErrKeyRejected means no keyslot opens with the given passphrase. Callers
// waiting for a key report it and keep waiting; any other error is fatal.
var ErrKeyRejected = errors.New("cryptsetup: key rejected")

// HeaderError is a refused LUKS header: Field is the JSON path of the first
// value that differs from what Format writes (for example
// "segments.0.encryption"), Want what Format writes, Got what the header
// holds. Got comes from an untrusted header and is shortened and quoted
// when it is long or not printable. Reason, when set, is why libcryptsetup
// itself refused the header, in its own words (for example "Illegal area
// offset: 0"), without which Got would only say "invalid argument".
type HeaderError struct {
	Field, Want, Got string
	Reason           string
}

func (e *HeaderError) Error() string {
	s := "luks2: " + e.Field + ": want " + e.Want + ", got " + e.Got
	if e.Reason != "" {
		s += " (libcryptsetup: " + e.Reason + ")"
	}
	return s
}

// maxGot bounds how much of an untrusted value goes into an error message.
const maxGot = 64

func headerErr(field, want, got string) *HeaderError {
	return &HeaderError{Field: field, Want: want, Got: printable(got)}
}

func printable(s string) string {
	if len(s) > maxGot {
		cut := maxGot
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || r == '"' || r == '\\' {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}
