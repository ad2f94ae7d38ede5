package harness

// TB is what the harness reports through: the part of testing.TB it uses,
// declared here so that a program (the demo) can drive the harness too.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skip(args ...any)
	Skipf(format string, args ...any)
	TempDir() string
	Failed() bool
}
