package jointest

// TB is the part of testing.TB this package uses. *testing.T and *testing.B
// satisfy it; so can a demo program that runs a join service outside a test.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}
