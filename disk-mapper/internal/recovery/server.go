package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/ratelimit"
	recoveryv1 "github.com/cloister-dev/cloister/proto/recovery/v1"
)

// maxRequestSize bounds a request: two 32-byte fields and a generation.
const maxRequestSize = 1 << 10

// logInterval is how often each kind of refusal is logged at most; the
// refusals in between are counted on one line per interval.
const logInterval = time.Minute

// shutdownGrace lets a winning Recover call's answer reach the CLI before
// the server stops.
const shutdownGrace = 5 * time.Second

// reporter records refused keys in the status (status.Tracker).
type reporter interface {
	Attempt(err error)
}

// Server serves recovery.v1 on one listener while the flow waits for a key.
type Server struct {
	lis    net.Listener
	creds  credentials.TransportCredentials
	status reporter
	log    *slog.Logger
	now    func() time.Time
}

// New returns a server for lis. creds must be attested TLS in which this
// node attests and accepts the CLI unattested.
func New(lis net.Listener, creds credentials.TransportCredentials, status reporter, log *slog.Logger) *Server {
	return &Server{lis: lis, creds: creds, status: status, log: log.With("component", "recovery"), now: time.Now}
}

// Run serves until ctx ends and returns nil then; it returns an error if the
// listener fails. It closes the listener.
func (s *Server) Run(ctx context.Context, c *unlock.Checker) error {
	g := grpc.NewServer(grpc.Creds(s.creds), grpc.MaxRecvMsgSize(maxRequestSize))
	recoveryv1.RegisterRecoveryServiceServer(g, &handler{checker: c, status: s.status, log: s.log, warn: ratelimit.NewLogger(s.log, logInterval), backoff: newBackoff(s.now)})
	served := make(chan error, 1)
	go func() { served <- g.Serve(s.lis) }()
	s.log.Info("serving recovery", "listen", s.lis.Addr().String(), "disk_uuid", c.DiskUUID())
	select {
	case err := <-served:
		return fmt.Errorf("serving recovery on %s: %w", s.lis.Addr(), err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(shutdownGrace):
		g.Stop()
		<-stopped
	}
	<-served
	return nil
}

var _ recoveryv1.RecoveryServiceServer = (*handler)(nil)

type handler struct {
	recoveryv1.UnimplementedRecoveryServiceServer
	checker *unlock.Checker
	status  reporter
	log     *slog.Logger
	warn    *ratelimit.Logger // refusals: at most one line per interval and kind
	backoff *backoff
}

// Recover implements recovery.v1.RecoveryService.
func (h *handler) Recover(ctx context.Context, req *recoveryv1.RecoverRequest) (*recoveryv1.RecoverResponse, error) {
	cand := unlock.Candidate{
		DiskKey:           keys.Secret(req.GetDiskKey()),
		Generation:        req.GetDiskKeyGeneration(),
		MeasurementSecret: keys.Secret(req.GetMeasurementSecret()),
		Source:            "recovery",
	}
	defer cand.Zero() // the request's own bytes
	from, ip := "unknown", "unknown"
	if p, ok := peer.FromContext(ctx); ok {
		from, ip = p.Addr.String(), ratelimit.HostKey(p.Addr)
	}
	if err := checkRequest(req); err != nil {
		h.warn.Warn("recovery request refused", "peer", from, "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if wait := h.backoff.admit(ip); wait > 0 {
		h.warn.Warn("recovery key not checked: too many wrong keys", "peer", from, "retry_in", wait.Round(time.Second))
		return nil, status.Errorf(codes.ResourceExhausted, "too many wrong recovery keys: retry in %v", wait.Round(time.Second))
	}
	err := h.checker.Offer(ctx, cand)
	h.backoff.done(ip, errors.Is(err, unlock.ErrWrongKey))
	switch {
	case err == nil:
		h.log.Info("recovery key opened the state disk", "peer", from, "disk_uuid", h.checker.DiskUUID(), "generation", cand.Generation)
		return &recoveryv1.RecoverResponse{DiskUuid: h.checker.DiskUUID()}, nil
	case errors.Is(err, unlock.ErrWrongKey):
		h.warn.Warn("recovery key refused", "peer", from, "disk_uuid", h.checker.DiskUUID(), "generation", cand.Generation, "error", err)
		h.status.Attempt(fmt.Errorf("recovery from %s: %w", from, err))
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, unlock.ErrUnlocked):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, unlock.ErrMalformed):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, status.FromContextError(err).Err()
	}
	h.log.Error("checking recovery key", "peer", from, "error", err)
	return nil, status.Error(codes.Internal, "checking key: internal error")
}

// checkRequest checks sizes before the key goes anywhere.
func checkRequest(req *recoveryv1.RecoverRequest) error {
	if n := len(req.GetDiskKey()); n != keys.SecretSize {
		return fmt.Errorf("disk_key: want %d bytes, got %d", keys.SecretSize, n)
	}
	if n := len(req.GetMeasurementSecret()); n != keys.SecretSize {
		return fmt.Errorf("measurement_secret: want %d bytes, got %d", keys.SecretSize, n)
	}
	return nil
}
