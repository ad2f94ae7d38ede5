package kubeadm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
)

// DefaultPath is where the image installs kubeadm.
const DefaultPath = "/usr/bin/kubeadm"

// Runner runs the kubeadm binary.
type Runner struct {
	// Path is the binary (default DefaultPath).
	Path string
	// Output receives kubeadm's stdout and stderr, which may contain
	// tokens: a 0600 file, never the status endpoint. Nil discards it.
	Output io.Writer
}

// Join runs `kubeadm join --config configPath`.
func (r Runner) Join(ctx context.Context, configPath string) error {
	return r.run(ctx, "join", "--config", configPath)
}

// Init runs `kubeadm init --config configPath --upload-certs`: the
// control-plane certificates are uploaded encrypted with the configuration's
// certificate key, so later control planes join without CA keys shipped.
func (r Runner) Init(ctx context.Context, configPath string) error {
	return r.run(ctx, "init", "--config", configPath, "--upload-certs")
}

// Reset runs `kubeadm reset -f`, undoing what a failed init or join left.
func (r Runner) Reset(ctx context.Context) error {
	return r.run(ctx, "reset", "-f")
}

// Validate runs `kubeadm config validate --config configPath`.
func (r Runner) Validate(ctx context.Context, configPath string) error {
	return r.run(ctx, "config", "validate", "--config", configPath)
}

func (r Runner) run(ctx context.Context, args ...string) error {
	path := r.Path
	if path == "" {
		path = DefaultPath
	}
	cmd := exec.CommandContext(ctx, path, args...)
	out := r.Output
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	// kubeadm's output is the record of what it did to the node: on disk
	// before anyone acts on the result (a power cut right after must not
	// leave the log empty).
	if f, ok := out.(interface{ Sync() error }); ok {
		_ = f.Sync()
	}
	if err != nil {
		// The output stays out of the error: it may hold tokens.
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return fmt.Errorf("kubeadm %s: exit code %d (output in the kubeadm log)", args[0], exit.ExitCode())
		}
		return fmt.Errorf("kubeadm %s: %w", args[0], err)
	}
	return nil
}
