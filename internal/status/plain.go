package status

import (
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// ServiceName is status.v1's gRPC service name, registered in the health
// service of every plain port.
var ServiceName = statusv1.StatusService_ServiceDesc.ServiceName

// maxPlainRequest bounds a request on the plain port: status, health and
// reflection requests are a few dozen bytes.
const maxPlainRequest = 4 << 10

// stopGrace is how long Stop waits for calls in flight (a status Get, a
// reflection stream) before it closes every connection. Health Watch
// streams never end by themselves, so it must be short.
const stopGrace = time.Second

// PlainServer is a daemon's plain (unattested, read-only) gRPC port, the one
// standard tools can reach: status.v1 (the Tracker), the standard
// grpc.health.v1 service and gRPC server reflection, so that
// grpc-health-probe, grpcurl and Kubernetes' gRPC probes work without
// attested TLS. Health names "" (the daemon overall) and ServiceName, both
// SERVING from the start; a daemon with more to say (the join service) sets
// more names with SetServing. Nothing served here is secret: see the package
// doc's # Trust.
type PlainServer struct {
	grpc   *grpc.Server
	health *health.Server
}

// NewPlainServer builds the plain port of t's daemon.
func NewPlainServer(t *Tracker) *PlainServer {
	p := &PlainServer{
		grpc:   grpc.NewServer(grpc.Creds(insecure.NewCredentials()), grpc.MaxRecvMsgSize(maxPlainRequest)),
		health: health.NewServer(),
	}
	statusv1.RegisterStatusServiceServer(p.grpc, t)
	healthpb.RegisterHealthServer(p.grpc, p.health)
	reflection.Register(p.grpc)
	p.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	p.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	return p
}

// Health is the port's health service, for a daemon that serves the same
// answers on another port too (the join service's attested port).
func (p *PlainServer) Health() healthpb.HealthServer { return p.health }

// SetServing sets service's health ("" is the daemon overall); Watch
// streams see the change.
func (p *PlainServer) SetServing(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	p.health.SetServingStatus(service, st)
}

// Serve serves on lis until Stop.
func (p *PlainServer) Serve(lis net.Listener) error {
	if err := p.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving status on %s: %w", lis.Addr(), err)
	}
	return nil
}

// Stop reports every service NOT_SERVING (Watch streams see it), lets calls
// in flight finish for at most a second, and closes the port.
func (p *PlainServer) Stop() {
	p.health.Shutdown()
	t := time.AfterFunc(stopGrace, p.grpc.Stop)
	defer t.Stop()
	p.grpc.GracefulStop()
}
