package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"

	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

func TestRunExitsAtOnceForFailedNodes(t *testing.T) {
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

// TestRunServesAJoinedNodesStatusWithInsecureDevAttestation: a node that
// joined before serves its status, plain and over attested TLS (the
// insecure-dev issuer stands in for the TPM), until it is stopped; it needs
// no state device.
func TestRunServesAJoinedNodesStatusWithInsecureDevAttestation(t *testing.T) {
	dir := t.TempDir()
	st, _ := nodestate.Open(dir, nodestate.Options{})
	if err := errors.Join(st.Lock(nodestate.PathJoin), st.Advance(nodestate.Keyed), st.Advance(nodestate.Configured), st.Advance(nodestate.KubeadmStarted), st.Advance(nodestate.Joined)); err != nil {
		t.Fatal(err)
	}
	attestedAddr, plainAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--state-dir", dir, "--state-device", "/nonexistent", "--attest", "insecure-dev", "--allow-insecure-dev",
			"--init-listen", attestedAddr, "--status-listen", plainAddr}, io.Discard)
	}()

	// The operator's CLI: verifies the node, attests nothing itself.
	cliCreds, err := atls.NewCredentials(atls.Config{Verifier: mustValidators(t, []byte("version: 1\ninsecure-dev:\n  iUnderstandThisProvesNothing: true\n"), platform.Anchors{AllowInsecureDev: true})})
	if err != nil {
		t.Fatal(err)
	}
	attested := getStatus(t, attestedAddr, grpc.WithTransportCredentials(cliCreds))
	if attested.status.GetPhase() != string(nodestate.Joined) || attested.claims == nil || attested.claims.Variant != attestation.VariantInsecureDev {
		t.Errorf("attested port: phase %q, claims %+v; want %q and the node's verified claims", attested.status.GetPhase(), attested.claims, nodestate.Joined)
	}
	if plain := getStatus(t, plainAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); plain.status.GetPhase() != string(nodestate.Joined) {
		t.Errorf("plain status port: phase %q, want %q", plain.status.GetPhase(), nodestate.Joined)
	}
	select {
	case err := <-done:
		t.Fatalf("run returned while serving: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil || exitCode(err) != exitJoined {
			t.Fatalf("run after stop = %v (exit %d), want exit 0", err, exitCode(err))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
}

type statusSeen struct {
	status *statusv1.GetResponse
	claims *attestation.Claims
}

// getStatus calls status.v1 Get on addr until the server is up (10 s).
func getStatus(t *testing.T, addr string, opts ...grpc.DialOption) statusSeen {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var p peer.Peer
		resp, err := statusv1.NewStatusServiceClient(conn).Get(ctx, &statusv1.GetRequest{}, grpc.Peer(&p))
		cancel()
		if err == nil {
			claims, _ := atls.ClaimsFromPeer(&p)
			return statusSeen{resp, claims}
		}
		if time.Now().After(deadline) {
			t.Fatalf("status.v1 Get on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr is a 127.0.0.1 address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
