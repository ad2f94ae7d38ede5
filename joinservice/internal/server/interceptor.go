package server

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/ratelimit"
)

// handlerObserver records handler latency by method and code.
type handlerObserver interface {
	HandlerDone(method, code string, d time.Duration)
	Rejection(stage, reason string)
}

const (
	// MaxRequestSize is the largest request a handler accepts: a disk UUID,
	// a node name and a CSR fit many times over. A larger one is refused
	// with ResourceExhausted and counted (stage "request", reason
	// "request-size").
	MaxRequestSize = 64 << 10
	// maxWireMessage is gRPC's own cap, which bounds memory before any
	// decoding; gRPC drops larger messages without calling us, so they are
	// not counted.
	maxWireMessage = 1 << 20
)

// ServerOptions are the join service's gRPC server options: attested TLS,
// the message size cap, and the interceptor. main and jointest both use
// them, so tests run the service exactly as deployed.
func ServerOptions(creds credentials.TransportCredentials, limiter *ratelimit.Limiter, timeout time.Duration, obs handlerObserver) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(maxWireMessage),
		// A connection serves one ticket (Server.peer); idle or old ones go.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: time.Minute, MaxConnectionAge: 5 * time.Minute, MaxConnectionAgeGrace: 30 * time.Second}),
		grpc.UnaryInterceptor(UnaryInterceptor(limiter, timeout, obs)),
	}
}

// UnaryInterceptor applies, in order, the per-peer rate limit, the request
// size limit, the request deadline and the latency metric to every call.
func UnaryInterceptor(limiter *ratelimit.Limiter, timeout time.Duration, obs handlerObserver) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		var key string
		if p, ok := peer.FromContext(ctx); ok {
			key = ratelimit.HostKey(p.Addr)
		}
		if !limiter.Allow(key) {
			obs.Rejection("rate-limit", "calls")
			obs.HandlerDone(info.FullMethod, codes.ResourceExhausted.String(), time.Since(start))
			return nil, status.Error(codes.ResourceExhausted, "rate limit: too many calls from this peer; retry with backoff")
		}
		if m, ok := req.(proto.Message); !ok || proto.Size(m) > MaxRequestSize {
			obs.Rejection("request", "request-size")
			obs.HandlerDone(info.FullMethod, codes.ResourceExhausted.String(), time.Since(start))
			return nil, status.Errorf(codes.ResourceExhausted, "request-size: requests are at most %d bytes", MaxRequestSize)
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		resp, err := handler(ctx, req)
		obs.HandlerDone(info.FullMethod, status.Code(err).String(), time.Since(start))
		return resp, err
	}
}
