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
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/cloister-dev/cloister/internal/ratelimit"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// ServiceName is status.v1's gRPC service name, registered in the health
// service of every plain port.
var ServiceName = statusv1.StatusService_ServiceDesc.ServiceName

// maxPlainRequest bounds a request on the plain port: status, health and
// reflection requests are a few dozen bytes.
const maxPlainRequest = 4 << 10

// Bounds of the plain port, which anyone who can reach it may use. Its
// clients are probes and operators: a few at a time, one short call each.
const (
	// maxPlainConns caps open connections; more wait in the kernel's
	// accept queue until one closes (ratelimit.LimitConns).
	maxPlainConns = 32
	// maxPlainStreams caps concurrent calls per connection.
	maxPlainStreams = 8
	// maxPlainHeaders bounds a request's header list (gRPC's default is
	// 16 MiB).
	maxPlainHeaders = 8 << 10
	// plainConnTimeout closes a connection that has not completed the
	// HTTP/2 preface by then, so silent connections cannot keep slots.
	plainConnTimeout = 5 * time.Second
	// plainIdle closes a connection without calls; plainMaxAge closes
	// every connection eventually (a Health Watch stream is never idle),
	// after plainAgeGrace for calls in flight. Well-behaved clients
	// reconnect.
	plainIdle     = time.Minute
	plainMaxAge   = 10 * time.Minute
	plainAgeGrace = 10 * time.Second
)

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
	grpc     *grpc.Server
	health   *health.Server
	maxConns int
}

// NewPlainServer builds the plain port of t's daemon.
func NewPlainServer(t *Tracker) *PlainServer {
	return newPlainServer(t, maxPlainConns, plainConnTimeout)
}

// newPlainServer is NewPlainServer with the bounds a test shrinks.
func newPlainServer(t *Tracker, maxConns int, connTimeout time.Duration) *PlainServer {
	p := &PlainServer{
		grpc: grpc.NewServer(
			grpc.Creds(insecure.NewCredentials()),
			grpc.MaxRecvMsgSize(maxPlainRequest),
			grpc.MaxConcurrentStreams(maxPlainStreams),
			grpc.MaxHeaderListSize(maxPlainHeaders),
			grpc.ConnectionTimeout(connTimeout),
			grpc.KeepaliveParams(keepalive.ServerParameters{
				MaxConnectionIdle:     plainIdle,
				MaxConnectionAge:      plainMaxAge,
				MaxConnectionAgeGrace: plainAgeGrace,
			}),
		),
		health:   health.NewServer(),
		maxConns: maxConns,
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

// Serve serves on lis until Stop, with at most maxPlainConns connections
// open at once.
func (p *PlainServer) Serve(lis net.Listener) error {
	if err := p.grpc.Serve(ratelimit.LimitConns(lis, p.maxConns)); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
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
