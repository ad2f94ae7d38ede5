package attestation

import (
	"encoding/hex"
	"fmt"
)

// CheckError is a rejection by one named check, with the expected and the
// actual value, so operators can see why a node was refused:
//
//	sev-snp: measurement: want 4f1c…, got 9a02…
type CheckError struct {
	Variant Variant
	// Check names the failed check: "pcr[4]", "measurement", "binding",
	// "ak-chain", "tcb", "debug", ….
	Check string
	Want  string
	Got   string
	// Err is the underlying cause, if any (a chain verification error).
	Err error
}

func (e *CheckError) Error() string {
	msg := fmt.Sprintf("%s: %s", e.Variant, e.Check)
	if e.Want != "" || e.Got != "" {
		msg += fmt.Sprintf(": want %s, got %s", e.Want, e.Got)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *CheckError) Unwrap() error { return e.Err }

// Hex formats a measurement for a CheckError; empty values read "(none)".
func Hex(b []byte) string {
	if len(b) == 0 {
		return "(none)"
	}
	return hex.EncodeToString(b)
}
