// Command demo walks through Cloister's main job on this machine, with real
// components where the host allows them: a node with a real TPM 2.0 (swtpm,
// EK certificate from its manufacturer CA) attests over mutually attested TLS
// to the real join service, gets the key of its LUKS2 state disk (real
// libcryptsetup on a file image), re-keys the disk, extends its cluster-ID
// latch, is refused a second join, reboots, is refused with a modified boot
// chain, and gets its key back with the genuine one.
//
// What is not real yet, and the output says so: the Kubernetes API behind
// the join service is client-go's fake clientset, and the disk is a file
// image (the host kernel has no device-mapper to open it). The QEMU
// end-to-end tests replace both.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e := &env{out: os.Stdout}
	err := e.guard(func() error { return run(ctx, e) })
	e.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// env stands in for testing.TB: the test-support packages the demo borrows
// (swtpm, the in-process join service) report through it. A fatal report
// unwinds to guard, which turns it into run's error; cleanups run last.
type env struct {
	out      *os.File
	cleanups []func()
}

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
