package kubeadm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
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
	return r.runTo(ctx, nil, args...)
}

// runTo runs kubeadm with args; if stdout is not nil, kubeadm's stdout goes
// only there (it carries a secret) and its stderr to Output.
func (r Runner) runTo(ctx context.Context, stdout io.Writer, args ...string) error {
	path := r.Path
	if path == "" {
		path = DefaultPath
	}
	cmd := exec.CommandContext(ctx, path, args...)
	out := r.Output
	if out == nil {
		out = io.Discard
	}
	tail := &tailBuffer{}
	cmd.Stdout = io.MultiWriter(out, tail)
	cmd.Stderr = cmd.Stdout
	if stdout != nil {
		cmd.Stdout = stdout
	}
	err := cmd.Run()
	// kubeadm's output is the record of what it did to the node: on disk
	// before anyone acts on the result (a power cut right after must not
	// leave the log empty).
	if f, ok := out.(interface{ Sync() error }); ok {
		_ = f.Sync()
	}
	if err != nil {
		// The output stays out of the error, but for kubeadm's last error
		// line with anything secret-shaped redacted: it says which phase or
		// check failed.
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if line := tail.lastError(); line != "" {
				return fmt.Errorf("kubeadm %s: exit code %d: %s (full output in the kubeadm log)", args[0], exit.ExitCode(), line)
			}
			return fmt.Errorf("kubeadm %s: exit code %d (output in the kubeadm log)", args[0], exit.ExitCode())
		}
		return fmt.Errorf("kubeadm %s: %w", args[0], err)
	}
	return nil
}

// tailBuffer keeps the last tailSize bytes written to it.
type tailBuffer struct{ b []byte }

const tailSize = 8 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > tailSize {
		t.b = append(t.b[:0], t.b[len(t.b)-tailSize:]...)
	}
	return len(p), nil
}

var (
	// secretShaped matches what kubeadm may print that must not leave the
	// log: bootstrap tokens, certificate keys and CA hashes (hex runs of 32
	// or more), base64 runs (kubeconfig data).
	secretShaped = regexp.MustCompile(`[a-z0-9]{6}\.[a-z0-9]{16}|[0-9a-fA-F]{32,}|[A-Za-z0-9+/=]{40,}`)
	errorLine    = regexp.MustCompile(`(?i)\berror\b`)
)

// maxErrorLine bounds the line an error carries.
const maxErrorLine = 400

// lastError is the last output line that mentions an error, with
// secret-shaped strings replaced by REDACTED and cut to maxErrorLine bytes.
func (t *tailBuffer) lastError() string {
	lines := strings.Split(string(t.b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		// kubeadm ends a failure with a hint about --v=5 that says nothing.
		if !errorLine.MatchString(l) || strings.Contains(l, "To see the stack trace") {
			continue
		}
		l = secretShaped.ReplaceAllString(l, "REDACTED")
		l = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return -1
			}
			return r
		}, l)
		if len(l) > maxErrorLine {
			l = l[:maxErrorLine] + "…"
		}
		return l
	}
	return ""
}
