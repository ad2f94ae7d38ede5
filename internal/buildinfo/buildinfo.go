// Package buildinfo reports which Cloister build a binary is: the module
// version and the VCS revision the Go toolchain recorded in it. The CLI's
// `cloister version` and every daemon's --version print it, so an operator
// can tell from any binary which source it was built from.
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Info is what the toolchain recorded. Its json names are stable (the CLI
// prints it with -o json).
type Info struct {
	Module    string `json:"module"`
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	VCS       string `json:"vcs,omitempty"`
	Revision  string `json:"revision,omitempty"`
	Time      string `json:"time,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	// Unavailable is set when the binary carries no build information
	// (built without module support).
	Unavailable bool `json:"unavailable,omitempty"`
}

// Read returns this binary's build information. A build outside a VCS
// checkout, or with -buildvcs=false, has no revision.
func Read() Info {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Module: "github.com/cloister-dev/cloister", Version: "unknown", Unavailable: true}
	}
	return fromBuildInfo(info)
}

func fromBuildInfo(info *debug.BuildInfo) Info {
	r := Info{Module: info.Main.Path, Version: info.Main.Version, GoVersion: info.GoVersion}
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

// Line is the one-line form every binary prints: "name version (go
// version) vcs revision (modified)".
func (i Info) Line(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s (%s)", name, i.Version, i.GoVersion)
	if i.Revision != "" {
		fmt.Fprintf(&b, " %s %s", i.VCS, i.Revision)
		if i.Modified {
			b.WriteString(" (modified)")
		}
	}
	return b.String()
}
