package rejoin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/retry"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// DefaultAttemptTimeout bounds one attempt: the attested handshake (a quote
// on each side) and the call.
const DefaultAttemptTimeout = 30 * time.Second

// maxResponseSize bounds a rejoin ticket: a key, a generation, a secret.
const maxResponseSize = 4 << 10

// reporter shows attempts and their errors in the status (status.Tracker).
type reporter interface {
	Attempt(err error)
}

// Options are the client's settings; the zero value is the production
// choice.
type Options struct {
	// Backoff between attempts; nil means retry.DefaultBackoff().
	Backoff *retry.Backoff
	// AttemptTimeout bounds each attempt (default DefaultAttemptTimeout).
	AttemptTimeout time.Duration
}

// Client asks join services for the disk key.
type Client struct {
	endpoints []string
	creds     credentials.TransportCredentials
	status    reporter
	log       *slog.Logger
	backoff   retry.Backoff
	timeout   time.Duration
}

// New returns a client for the join services at endpoints (host:port). creds
// must be mutual attested TLS with this node's issuer and the validators of
// the image's join-service policy. No endpoints is allowed: Run then returns
// at once and only recovery can deliver the key.
func New(endpoints []string, creds credentials.TransportCredentials, status reporter, log *slog.Logger, opts Options) (*Client, error) {
	for i, ep := range endpoints {
		if ep == "" {
			return nil, fmt.Errorf("rejoin: endpoints[%d] is empty: give host:port", i)
		}
	}
	if len(endpoints) > 0 && creds == nil {
		return nil, errors.New("rejoin: no transport credentials: pass attested TLS credentials")
	}
	b := retry.DefaultBackoff()
	if opts.Backoff != nil {
		b = *opts.Backoff
	}
	if opts.AttemptTimeout < 0 {
		return nil, fmt.Errorf("rejoin: Options.AttemptTimeout is %v: set it positive or zero for %v", opts.AttemptTimeout, DefaultAttemptTimeout)
	}
	if opts.AttemptTimeout == 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	return &Client{
		endpoints: append([]string(nil), endpoints...),
		creds:     creds,
		status:    status,
		log:       log.With("component", "rejoin"),
		backoff:   b,
		timeout:   opts.AttemptTimeout,
	}, nil
}

// Run asks the join services in turn until a delivered key opens the disk or
// another source's key did (nil), or ctx ends (ctx's error, wrapping the last
// attempt's).
func (c *Client) Run(ctx context.Context, ch *unlock.Checker) error {
	if len(c.endpoints) == 0 {
		c.log.Info("no join service endpoints configured: waiting for recovery only")
		return nil
	}
	n := 0
	var lastLogged string
	err := retry.Do(ctx, c.backoff, c.timeout, func(ctx context.Context) error {
		ep := c.endpoints[n%len(c.endpoints)]
		n++
		return c.attempt(ctx, ep, ch)
	}, func(attempt int, err error) {
		c.status.Attempt(err)
		// Rate-limited: a changed error, or attempts 1, 2, 4, 8, …
		if msg := err.Error(); msg != lastLogged || attempt&(attempt-1) == 0 {
			lastLogged = msg
			c.log.Warn("rejoin attempt failed", "attempt", attempt, "disk_uuid", ch.DiskUUID(), "error", err)
		}
	})
	return err
}

// attempt makes one call to one endpoint and offers what it gets.
func (c *Client) attempt(ctx context.Context, endpoint string, ch *unlock.Checker) error {
	select {
	case <-ch.Won():
		return nil
	default:
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(c.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseSize)))
	if err != nil {
		return retry.Permanent(fmt.Errorf("join service %s: %w", endpoint, err))
	}
	defer conn.Close()
	resp, err := joinv1.NewJoinServiceClient(conn).IssueRejoinTicket(ctx, &joinv1.IssueRejoinTicketRequest{DiskUuid: ch.DiskUUID()})
	if err != nil {
		// PermissionDenied, InvalidArgument and refused handshakes carry the
		// service's reason; all are retried, since the policy may change.
		return fmt.Errorf("join service %s: %w", endpoint, err)
	}
	cand := unlock.Candidate{
		DiskKey:           keys.Secret(resp.GetDiskKey()),
		Generation:        resp.GetDiskKeyGeneration(),
		MeasurementSecret: keys.Secret(resp.GetMeasurementSecret()),
		Source:            "rejoin",
	}
	defer cand.Zero()
	switch err := ch.Offer(ctx, cand); {
	case err == nil:
		c.status.Attempt(nil)
		c.log.Info("rejoin key opened the state disk", "endpoint", endpoint, "disk_uuid", ch.DiskUUID(), "generation", cand.Generation)
		return nil
	case errors.Is(err, unlock.ErrUnlocked):
		return nil
	default:
		return fmt.Errorf("join service %s gave generation %d: %w", endpoint, cand.Generation, err)
	}
}
