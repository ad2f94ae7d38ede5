package tpmtest

// TB is the part of testing.TB this package uses. *testing.T and *testing.B
// satisfy it; so can a demo program that wants a real swtpm outside a test.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}
