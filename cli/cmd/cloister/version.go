package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/cloister-dev/cloister/internal/buildinfo"
)

const versionUsage = `Usage:
  cloister version [-o text|json|yaml]
  cloister --version

Print the CLI's module version and the VCS revision it was built from, as
the Go toolchain recorded them in the binary. A build outside a VCS
checkout, or with -buildvcs=false, has no revision.

Examples:
  cloister version
  cloister version -o json
`

type versionOptions struct {
	output outputFormat
}

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the CLI's version and VCS revision",
		usage:   versionUsage,
		setup: func(e *env, fs *flag.FlagSet) func(context.Context) error {
			var o versionOptions
			registerOutput(fs, &o.output)
			return func(context.Context) error { return runVersion(e, o) }
		},
	}
}

func runVersion(e *env, o versionOptions) error {
	// buildinfo.Info's json names are the output's stable names.
	r := buildinfo.Read()
	return printData(e.stdout, o.output, &r, func(w io.Writer) {
		fmt.Fprintln(w, r.Line("cloister"))
	})
}
