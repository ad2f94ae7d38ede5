package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	info := &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Path: "github.com/cloister-dev/cloister", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "a9820a6f"},
			{Key: "vcs.time", Value: "2026-12-01T00:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	got := fromBuildInfo(info)
	want := Info{Module: "github.com/cloister-dev/cloister", Version: "v1.2.3", GoVersion: "go1.26.0", VCS: "git", Revision: "a9820a6f", Time: "2026-12-01T00:00:00Z", Modified: true}
	if got != want {
		t.Fatalf("fromBuildInfo = %+v, want %+v", got, want)
	}
	if line := got.Line("bootstrapper"); line != "bootstrapper v1.2.3 (go1.26.0) git a9820a6f (modified)" {
		t.Errorf("Line = %q", line)
	}
	devel := fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "m"}})
	if line := devel.Line("x"); line != "x (devel) (go1.26.0)" {
		t.Errorf("Line without version or revision = %q", line)
	}
}

func TestReadInATestBinary(t *testing.T) {
	// A test binary carries build info; its Go version is this toolchain's.
	if got := Read(); got.Unavailable || !strings.HasPrefix(got.GoVersion, "go") {
		t.Errorf("Read = %+v", got)
	}
}
