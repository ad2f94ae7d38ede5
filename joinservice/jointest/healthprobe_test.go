package jointest_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/status"
	"github.com/cloister-dev/cloister/joinservice/jointest"
)

// healthProbeEnv names the grpc-health-probe binary make unit builds
// (hack/tools/grpc-health-probe.sh).
const healthProbeEnv = "CLOISTER_GRPC_HEALTH_PROBE"

// grpc-health-probe's exit codes.
const (
	probeServing    = 0
	probeNotServing = 4
)

// healthProbe returns the grpc-health-probe binary: $CLOISTER_GRPC_HEALTH_PROBE,
// else the one on PATH. Missing, it fails the test under CI=true and skips
// it elsewhere.
func healthProbe(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(healthProbeEnv); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("grpc-health-probe")
	if err == nil {
		return p
	}
	msg := "grpc-health-probe not found ($" + healthProbeEnv + " or PATH): run make unit, which builds it (hack/tools/grpc-health-probe.sh)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// probe runs grpc-health-probe against addr for service and returns its
// exit code.
func probe(t *testing.T, bin, addr, service string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-addr=" + addr, "-connect-timeout=5s", "-rpc-timeout=5s"}
	if service != "" {
		args = append(args, "-service="+service)
	}
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		t.Logf("grpc-health-probe %v: exit %d: %s", args, exit.ExitCode(), out)
		return exit.ExitCode()
	}
	t.Fatalf("running grpc-health-probe: %v", err)
	return -1
}

// eventually probes until want or the deadline, and reports the last code.
func eventually(t *testing.T, bin, addr, service string, want int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = probe(t, bin, addr, service); got == want {
			return
		}
	}
	t.Errorf("grpc-health-probe -service=%q against %s: exit %d, want %d", service, addr, got, want)
}

// TestGRPCHealthProbeOnTheJoinServiceStatusPort runs the real
// grpc-health-probe against the join service's plain status port: SERVING
// while it can serve joins, NOT_SERVING for cloister.join.v1.JoinService
// and "" while its (FAKE) Kubernetes API is unreachable, SERVING again after.
func TestGRPCHealthProbeOnTheJoinServiceStatusPort(t *testing.T) {
	bin := healthProbe(t)
	svc := jointest.Start(t, jointest.Options{
		Issuer: insecuredev.NewIssuer(),
		Build: func(p *policy.Policy) (attestation.Validators, error) {
			return platform.Validators(p, platform.Anchors{AllowInsecureDev: true})
		},
		Policy:                    []byte("version: 1\ninsecure-dev: {iUnderstandThisProvesNothing: true}\n"),
		AllowVariantsWithoutLatch: true,
	})
	const join = "cloister.join.v1.JoinService"
	for _, service := range []string{"", join, status.ServiceName} {
		if got := probe(t, bin, svc.StatusAddr, service); got != probeServing {
			t.Errorf("reachable API: grpc-health-probe -service=%q: exit %d, want %d (SERVING)", service, got, probeServing)
		}
	}
	if got := probe(t, bin, svc.StatusAddr, "cloister.nope.v1.Nope"); got == probeServing {
		t.Errorf("unknown service: exit %d, want a failure", got)
	}

	svc.SetKubernetesReachable(false)
	eventually(t, bin, svc.StatusAddr, join, probeNotServing)
	eventually(t, bin, svc.StatusAddr, "", probeNotServing)
	if got := probe(t, bin, svc.StatusAddr, status.ServiceName); got != probeServing {
		t.Errorf("status.v1 while the API is unreachable: exit %d, want %d (it still tells why)", got, probeServing)
	}

	svc.SetKubernetesReachable(true)
	eventually(t, bin, svc.StatusAddr, join, probeServing)
}

// TestGRPCHealthProbeOnANodeStatusPort runs the real grpc-health-probe
// against a node daemon's plain status port, assembled as the bootstrapper
// and disk-mapper assemble it.
func TestGRPCHealthProbeOnANodeStatusPort(t *testing.T) {
	bin := healthProbe(t)
	srv := status.NewPlainServer(status.New("bootstrapper", status.Options{}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for _, service := range []string{"", status.ServiceName} {
		if got := probe(t, bin, lis.Addr().String(), service); got != probeServing {
			t.Errorf("grpc-health-probe -service=%q: exit %d, want %d (SERVING)", service, got, probeServing)
		}
	}
	srv.SetServing("", false)
	if got := probe(t, bin, lis.Addr().String(), ""); got != probeNotServing {
		t.Errorf("after SetServing(\"\", false): exit %d, want %d (NOT_SERVING)", got, probeNotServing)
	}
}
