package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
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

// versionReport is version's output. Its json names are stable.
type versionReport struct {
	Module      string `json:"module"`
	Version     string `json:"version"`
	GoVersion   string `json:"goVersion"`
	VCS         string `json:"vcs,omitempty"`
	Revision    string `json:"revision,omitempty"`
	Time        string `json:"time,omitempty"`
	Modified    bool   `json:"modified,omitempty"`
	Unavailable bool   `json:"unavailable,omitempty"`
}

func buildVersion() *versionReport {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		// Only a binary built without module support lacks build info.
		return &versionReport{Module: "github.com/cloister-dev/cloister", Version: "unknown", Unavailable: true}
	}
	r := &versionReport{Module: info.Main.Path, Version: info.Main.Version, GoVersion: info.GoVersion}
	if r.Version == "" {
		r.Version = "(devel)"
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs":
			r.VCS = s.Value
		case "vcs.revision":
			r.Revision = s.Value
		case "vcs.time":
			r.Time = s.Value
		case "vcs.modified":
			r.Modified = s.Value == "true"
		}
	}
	return r
}

func runVersion(e *env, o versionOptions) error {
	r := buildVersion()
	return printData(e.stdout, o.output, r, func(w io.Writer) {
		fmt.Fprintf(w, "cloister %s (%s)", r.Version, r.GoVersion)
		if r.Revision != "" {
			fmt.Fprintf(w, " %s %s", r.VCS, r.Revision)
			if r.Modified {
				fmt.Fprint(w, " (modified)")
			}
		}
		fmt.Fprintln(w)
	})
}
