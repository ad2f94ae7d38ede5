package status

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	grpcstatus "google.golang.org/grpc/status"

	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// startPlain serves a PlainServer on 127.0.0.1 and dials it in plain gRPC,
// as grpc-health-probe and Kubernetes' gRPC probes do.
func startPlain(t *testing.T) (*PlainServer, *grpc.ClientConn) {
	t.Helper()
	p := NewPlainServer(New("bootstrapper", Options{}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(lis) }()
	t.Cleanup(func() {
		p.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return p, conn
}

func TestPlainServerHealth(t *testing.T) {
	_, conn := startPlain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := healthpb.NewHealthClient(conn)
	tests := []struct {
		service  string
		wantCode codes.Code
		want     healthpb.HealthCheckResponse_ServingStatus
	}{
		{"", codes.OK, healthpb.HealthCheckResponse_SERVING},
		{"cloister.status.v1.StatusService", codes.OK, healthpb.HealthCheckResponse_SERVING},
		{"cloister.join.v1.JoinService", codes.NotFound, 0}, // not served by a node daemon
	}
	for _, tt := range tests {
		resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: tt.service})
		if got := grpcstatus.Code(err); got != tt.wantCode {
			t.Errorf("Check(%q): code %v, want %v (%v)", tt.service, got, tt.wantCode, err)
			continue
		}
		if resp.GetStatus() != tt.want {
			t.Errorf("Check(%q): %v, want %v", tt.service, resp.GetStatus(), tt.want)
		}
	}
	if _, err := statusv1.NewStatusServiceClient(conn).Get(ctx, &statusv1.GetRequest{}); err != nil {
		t.Errorf("status.v1 Get on the plain port: %v", err)
	}
}

func TestPlainServerWatchSeesChangesAndShutdown(t *testing.T) {
	p, conn := startPlain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatal(err)
	}
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		return resp.GetStatus()
	}
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first: %v, want SERVING", got)
	}
	p.SetServing("", false)
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after SetServing(false): %v, want NOT_SERVING", got)
	}
	p.SetServing("", true)
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch after SetServing(true): %v, want SERVING", got)
	}
	start := time.Now()
	go p.Stop()
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch during Stop: %v, want NOT_SERVING", got)
	}
	if _, err := w.Recv(); err == nil {
		t.Error("Watch stream still open after Stop")
	}
	if d := time.Since(start); d > 5*stopGrace {
		t.Errorf("Stop with an open Watch took %v, want about %v at most", d, stopGrace)
	}
}

func TestPlainServerReflection(t *testing.T) {
	_, conn := startPlain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"cloister.status.v1.StatusService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
}
