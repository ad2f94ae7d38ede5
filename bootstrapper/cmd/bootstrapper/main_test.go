package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
)

func TestRunExitsAtOnceForFinishedNodes(t *testing.T) {
	t.Run("joined before: exit 0 without touching any device", func(t *testing.T) {
		dir := t.TempDir()
		st, _ := nodestate.Open(dir, nodestate.Options{})
		if err := errors.Join(st.Lock(nodestate.PathJoin), st.Advance(nodestate.Keyed), st.Advance(nodestate.Configured), st.Advance(nodestate.KubeadmStarted), st.Advance(nodestate.Joined)); err != nil {
			t.Fatal(err)
		}
		// The device paths do not exist: a joined node must not need them.
		err := run(context.Background(), []string{"--state-dir", dir, "--state-device", "/nonexistent", "--attest", "tpm"}, &bytes.Buffer{})
		if err != nil || exitCode(err) != exitJoined {
			t.Fatalf("run = %v (exit %d), want exit 0", err, exitCode(err))
		}
	})
	t.Run("failed before: exit 3 with the reason", func(t *testing.T) {
		dir := t.TempDir()
		st, _ := nodestate.Open(dir, nodestate.Options{})
		if err := errors.Join(st.Lock(nodestate.PathJoin), st.Fail("latch: not reset")); err != nil {
			t.Fatal(err)
		}
		err := run(context.Background(), []string{"--state-dir", dir}, &bytes.Buffer{})
		if !errors.Is(err, provision.ErrFailed) || exitCode(err) != exitFailed {
			t.Fatalf("run = %v (exit %d), want exit 3", err, exitCode(err))
		}
	})
}

func TestRunUsageErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown flag":        {"--no-such-flag"},
		"positional argument": {"extra"},
		"bad log level":       {"--log-level", "loud"},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(context.Background(), args, &bytes.Buffer{})
			if exitCode(err) != exitUsage {
				t.Fatalf("run = %v (exit %d), want exit 2", err, exitCode(err))
			}
		})
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) || exitCode(err) != 0 || !bytes.Contains(out.Bytes(), []byte("-init-listen")) {
		t.Fatalf("--help: %v\n%s", err, out.String())
	}
}

func TestRunRefusesCorruptState(t *testing.T) {
	dir := t.TempDir()
	if err := nodestate.WriteFile(dir+"/"+nodestate.FileName, []byte(`{"phase":"sideways"}`)); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"--state-dir", dir}, &bytes.Buffer{}); err == nil || exitCode(err) != exitError {
		t.Fatalf("run = %v, want an error (exit 1)", err)
	}
}

func TestDiscoverFallsBackToHostName(t *testing.T) {
	dir := t.TempDir()
	cmdline := dir + "/cmdline"
	if err := nodestate.WriteFile(cmdline, []byte("root=/dev/vda quiet\n")); err != nil {
		t.Fatal(err)
	}
	f := flags{smbiosRoot: t.TempDir(), cmdline: cmdline, nodeConfig: dir + "/missing.yaml"}
	cfg, err := discover(context.Background(), f)
	host, _ := os.Hostname()
	if kubeadm.CheckNodeName(strings.ToLower(host)) != nil {
		if err == nil {
			t.Fatalf("host name %q is no node name, but discover accepted it", host)
		}
		return
	}
	if err != nil || cfg.NodeName != strings.ToLower(host) || len(cfg.JoinEndpoints) != 0 || cfg.Source != "host name" {
		t.Fatalf("discover = %+v, %v", cfg, err)
	}
	// A source that says something wrong is an error, not a fallback.
	if err := nodestate.WriteFile(cmdline, []byte("cloister.role=boss cloister.node=x\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := discover(context.Background(), f); err == nil {
		t.Fatal("a bad kernel command line fell back to the host name")
	}
}
