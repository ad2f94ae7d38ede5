// Command demo-host walks through Cloister's main job on this machine, with
// real components where the host allows them (`make demo-host`): see
// e2e/internal/hostdemo, which also runs as a test in `make test`. It exits
// non-zero when any step, a refusal included, does not do what the
// walk-through says.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloister-dev/cloister/e2e/internal/hostdemo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e := &env{}
	err := e.guard(func() error {
		_, err := hostdemo.Run(ctx, e, os.Stdout)
		return err
	})
	e.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// env stands in for testing.TB (hostdemo.TB) outside a test. A fatal report
// unwinds to guard, which turns it into run's error; cleanups run last.
type env struct {
	cleanups []func()
}

var _ hostdemo.TB = (*env)(nil)

type fatal struct{ err error }

func (e *env) Helper()                        {}
func (e *env) Cleanup(f func())               { e.cleanups = append(e.cleanups, f) }
func (e *env) Errorf(format string, a ...any) { panic(fatal{fmt.Errorf(format, a...)}) }
func (e *env) Fatal(a ...any)                 { panic(fatal{errors.New(fmt.Sprint(a...))}) }
func (e *env) Fatalf(format string, a ...any) { panic(fatal{fmt.Errorf(format, a...)}) }
func (e *env) Skipf(format string, a ...any) {
	panic(fatal{fmt.Errorf(format+" (run `make deps` first)", a...)})
}

func (e *env) TempDir() string {
	d, err := os.MkdirTemp("", "cloister-demo-")
	if err != nil {
		e.Fatal(err)
	}
	e.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (e *env) guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			ft, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = ft.err
		}
	}()
	return f()
}

func (e *env) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}
