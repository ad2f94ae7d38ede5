// Command cloister is the operator's tool for a Cloister cluster: it
// initializes the first control-plane node, verifies a node's attestation
// and cluster-ID latch, recovers a rebooted node's state disk, shows a
// node's status and edits the cluster's reference values. Run
// `cloister --help` for the commands and the exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
