// Package clitest builds the real `cloister` binary of this checkout and
// runs it as an operator would, for the tests of the components the CLI
// talks to (bootstrapper, disk-mapper). It judges the CLI only by what an
// operator sees: exit code, stdout, stderr.
package clitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The CLI's exit codes (docs/cli.md), the contract scripts rely on.
const (
	ExitOK          = 0
	ExitUsage       = 1
	ExitUnavailable = 2
	ExitRefused     = 3 // the node's attestation failed the policy
	ExitLatch       = 4 // the node's cluster-ID latch is not this cluster's
	ExitNodeRefused = 5 // the node refused or failed the request
	ExitLocal       = 6 // a local problem: files, policy, cluster directory
)

// SecretsFile is the secrets file in a cluster directory.
const SecretsFile = "cluster-secrets.json"

// Build builds the cloister command with the go tool on PATH into a
// temporary directory. Without a go tool the test fails when CI=true and is
// skipped elsewhere.
func Build(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the go tool is required in CI to build the cloister CLI: %v", err)
		}
		t.Skipf("no go tool on PATH to build the cloister CLI: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "cloister")
	out, err := exec.Command(goTool, "build", "-o", bin, "github.com/cloister-dev/cloister/cli/cmd/cloister").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cloister: %v\n%s", err, out)
	}
	return bin
}

// Result is one finished run of the CLI.
type Result struct {
	Args           []string
	Code           int
	Stdout, Stderr string
}

func (r Result) String() string {
	return "cloister " + strings.Join(r.Args, " ") + "\nexit " + strconv.Itoa(r.Code) + "\nstdout:\n" + r.Stdout + "stderr:\n" + r.Stderr
}

// Run runs the CLI binary, at most 90 seconds.
func Run(t *testing.T, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r := Result{Args: args}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("running cloister %v: %v\n%s", args, err, stderr.String())
	}
	r.Stdout, r.Stderr = stdout.String(), stderr.String()
	return r
}

// DecodeJSON parses the run's -o json output strictly into v.
func DecodeJSON(t *testing.T, r Result, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.Stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding -o json output: %v\n%s", err, r)
	}
}
