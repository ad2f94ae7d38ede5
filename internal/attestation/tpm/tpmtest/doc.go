// Package tpmtest is test support for code that talks to a TPM: the
// in-process TPM simulator, swtpm out of process with EK certificates from a
// local CA, a FAKE platform CA that certifies attestation keys, and a helper
// that fails in CI (skips elsewhere) when an external tool is missing.
//
// For tests only: import it from _test.go files, never from production code.
// FakePlatformCA is a FAKE CA with a key made up on the spot; nothing it
// signs proves anything about real hardware.
//
// It does not import package tpm, so that package's own tests can use it.
package tpmtest
