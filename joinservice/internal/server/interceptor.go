package server

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/joinservice/internal/ratelimit"
)

// handlerObserver records handler latency by method and code.
type handlerObserver interface {
	HandlerDone(method, code string, d time.Duration)
	Rejection(stage, reason string)
}

// UnaryInterceptor applies, in order, the per-peer rate limit, the request
// deadline and the latency metric to every call.
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
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		resp, err := handler(ctx, req)
		obs.HandlerDone(info.FullMethod, status.Code(err).String(), time.Since(start))
		return resp, err
	}
}
