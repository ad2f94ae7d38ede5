// Command demo is Cloister's main job, on this machine: two confidential-
// style VMs (QEMU, OVMF measured boot, a swtpm vTPM with EK certificates, a
// dm-crypt state disk) booted from the node image (make image) become a
// Kubernetes cluster. `cloister init` attests the control plane and starts
// it (real kubeadm init); the worker attests to the control plane's join
// service, gets its disk key and kubelet credentials and joins (real
// kubeadm join); the worker reboots, gets its key back by itself and passes
// `cloister verify` (measurements, cluster-ID latch). The
// demo prints each step, then a summary (cluster ID, nodes, logs), and
// stops every VM.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e, err := newEnv(os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
	done := make(chan error, 1)
	go func() { done <- e.guard(func() error { return run(e) }) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = errors.New("interrupted")
	}
	e.finish()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n  details: %s\n", err, e.logsDir)
		os.Exit(1)
	}
}

// env is the harness's TB for a program: fatal reports unwind to guard,
// which turns them into run's error; cleanups run at the end. Work files
// live under one directory that is removed at the end; the logs (serial
// consoles, QEMU and swtpm output, the demo's own detail log) are copied to
// logsDir first.
type env struct {
	out      io.Writer
	detail   *os.File
	work     string
	logsDir  string
	start    time.Time
	cleanups []func()
	failed   bool
}

type fatal struct{ err error }

func newEnv(out io.Writer) (*env, error) {
	work, err := os.MkdirTemp("", "cloister-demo-")
	if err != nil {
		return nil, err
	}
	logsDir, err := filepath.Abs(filepath.Join(".cache", "demo", time.Now().UTC().Format("20060102T150405Z")))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(logsDir, 0o755); err != nil {
		return nil, err
	}
	detail, err := os.Create(filepath.Join(logsDir, "demo.log"))
	if err != nil {
		return nil, err
	}
	return &env{out: out, detail: detail, work: work, logsDir: logsDir, start: time.Now()}, nil
}

func (e *env) Helper()          {}
func (e *env) Cleanup(f func()) { e.cleanups = append(e.cleanups, f) }
func (e *env) Failed() bool     { return e.failed }
func (e *env) Errorf(format string, a ...any) {
	e.failed = true
	e.Logf("ERROR: "+format, a...)
}
func (e *env) Fatal(a ...any) { e.failed = true; panic(fatal{errors.New(fmt.Sprint(a...))}) }
func (e *env) Fatalf(format string, a ...any) {
	e.failed = true
	panic(fatal{fmt.Errorf(format, a...)})
}
func (e *env) Skip(a ...any)                 { e.Fatal(append([]any{"cannot run: "}, a...)...) }
func (e *env) Skipf(format string, a ...any) { e.Fatalf("cannot run: "+format, a...) }

// Logf goes to the detail log: the harness's markers and timings.
func (e *env) Logf(format string, a ...any) {
	fmt.Fprintf(e.detail, "[%s] %s\n", e.elapsed(), fmt.Sprintf(format, a...))
}

func (e *env) TempDir() string {
	d, err := os.MkdirTemp(e.work, "t")
	if err != nil {
		e.Fatal(err)
	}
	return d
}

// step prints one line of progress.
func (e *env) step(format string, a ...any) {
	line := fmt.Sprintf(format, a...)
	fmt.Fprintf(e.out, "[%s] %s\n", e.elapsed(), line)
	e.Logf("STEP %s", line)
}

func (e *env) elapsed() string {
	d := time.Since(e.start).Round(time.Second)
	return fmt.Sprintf("%2d:%02d", int(d.Minutes()), int(d.Seconds())%60)
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

// finish stops what the run started (VMs, swtpm: their cleanups), keeps
// the logs and removes the work directory.
func (e *env) finish() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	_ = filepath.WalkDir(e.work, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		name := d.Name()
		if !strings.HasSuffix(name, ".log") && !strings.HasSuffix(name, ".out") && name != "qemu.args" {
			return nil
		}
		rel, err := filepath.Rel(e.work, path)
		if err != nil {
			return nil
		}
		// t1234/cp/boot-1/serial.log → cp/boot-1/serial.log
		if i := strings.IndexByte(rel, filepath.Separator); i >= 0 && strings.HasPrefix(rel, "t") {
			rel = rel[i+1:]
		}
		dst := filepath.Join(e.logsDir, rel)
		if os.MkdirAll(filepath.Dir(dst), 0o755) == nil {
			if b, err := os.ReadFile(path); err == nil {
				_ = os.WriteFile(dst, b, 0o644)
			}
		}
		return nil
	})
	e.detail.Close()
	os.RemoveAll(e.work)
}
