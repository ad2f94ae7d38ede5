package joinclient

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cloister-dev/cloister/bootstrapper/internal/discovery"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/retry"
	"github.com/cloister-dev/cloister/internal/status"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// DefaultAttemptTimeout bounds one attempt: the attested handshake (a quote
// on each side), CSR signing and the call. It is longer than the join
// service's own bound on CSR signing (2 minutes): a busy control plane,
// just after kubeadm init, can take most of that, and an attempt cut short
// only makes the service start over.
const DefaultAttemptTimeout = 3 * time.Minute

// maxResponseSize bounds a join ticket: keys, a token, a certificate.
const maxResponseSize = 64 << 10

// reporter shows attempts and their errors in the status (status.Tracker).
type reporter interface {
	Attempt(err error)
}

var _ reporter = (*status.Tracker)(nil)

// Request is what the node asks for.
type Request struct {
	// DiskUUID is the state disk's LUKS2 UUID.
	DiskUUID string
	// NodeName is the Kubernetes node name.
	NodeName string
	// Role is the role asked for.
	Role discovery.Role
}

// Options are the client's settings; the zero value is the production
// choice.
type Options struct {
	// Backoff between attempts; nil means retry.DefaultBackoff().
	Backoff *retry.Backoff
	// AttemptTimeout bounds each attempt (default DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// Now is the clock for the ticket's validity checks (default time.Now).
	Now func() time.Time
	// Rand is the source of the kubelet key (default crypto/rand.Reader).
	Rand io.Reader
}

// Client asks join services for a join ticket.
type Client struct {
	endpoints []string
	creds     credentials.TransportCredentials
	req       Request
	status    reporter
	log       *slog.Logger
	backoff   retry.Backoff
	opts      Options
}

// New returns a client for the join services at endpoints (host:port). creds
// must be mutual attested TLS with this node's issuer and the validators of
// the image's join-service policy.
func New(endpoints []string, creds credentials.TransportCredentials, req Request, status reporter, log *slog.Logger, opts Options) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("joinclient: no join service endpoints: configure cloister.join")
	}
	if creds == nil {
		return nil, errors.New("joinclient: no transport credentials: pass attested TLS credentials")
	}
	if err := keys.CheckDiskUUID(req.DiskUUID); err != nil {
		return nil, fmt.Errorf("joinclient: disk UUID: %w", err)
	}
	if req.Role != discovery.RoleWorker && req.Role != discovery.RoleControlPlane {
		return nil, fmt.Errorf("joinclient: role: want worker or control-plane, got %q", req.Role)
	}
	if opts.AttemptTimeout < 0 {
		return nil, fmt.Errorf("joinclient: Options.AttemptTimeout is %v: set it positive or zero for %v", opts.AttemptTimeout, DefaultAttemptTimeout)
	}
	if opts.AttemptTimeout == 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	b := retry.DefaultBackoff()
	if opts.Backoff != nil {
		b = *opts.Backoff
	}
	return &Client{
		endpoints: append([]string(nil), endpoints...),
		creds:     creds,
		req:       req,
		status:    status,
		log:       log.With("component", "joinclient"),
		backoff:   b,
		opts:      opts,
	}, nil
}

// Run asks the join services in turn until one delivers a valid ticket, and
// returns it; or until ctx ends (ctx's error, wrapping the last attempt's).
// The caller zeroes the ticket after use.
func (c *Client) Run(ctx context.Context) (*provision.Ticket, error) {
	n := 0
	var (
		ticket     *provision.Ticket
		lastLogged string
	)
	err := retry.Do(ctx, c.backoff, c.opts.AttemptTimeout, func(ctx context.Context) error {
		ep := c.endpoints[n%len(c.endpoints)]
		n++
		t, err := c.attempt(ctx, ep)
		if err != nil {
			return err
		}
		ticket = t
		return nil
	}, func(attempt int, err error) {
		c.status.Attempt(err)
		// Rate-limited: a changed error, or attempts 1, 2, 4, 8, …
		if msg := err.Error(); msg != lastLogged || attempt&(attempt-1) == 0 {
			lastLogged = msg
			c.log.Warn("join attempt failed", "attempt", attempt, "disk_uuid", c.req.DiskUUID, "node", c.req.NodeName, "error", err)
		}
	})
	if err != nil {
		return nil, err
	}
	c.status.Attempt(nil)
	c.log.Info("join ticket accepted", "disk_uuid", c.req.DiskUUID, "node", c.req.NodeName, "generation", ticket.DiskKeyGeneration)
	return ticket, nil
}

// attempt makes one call to one endpoint and validates what it gets.
func (c *Client) attempt(ctx context.Context, endpoint string) (*provision.Ticket, error) {
	key, csrPEM, err := newKubeletKey(c.opts.Rand, c.req.NodeName)
	if err != nil {
		return nil, retry.Permanent(fmt.Errorf("generating the kubelet key: %w", err))
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(c.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseSize)))
	if err != nil {
		return nil, retry.Permanent(fmt.Errorf("join service %s: %w", endpoint, err))
	}
	defer conn.Close()
	role := joinv1.Role_ROLE_WORKER
	if c.req.Role == discovery.RoleControlPlane {
		role = joinv1.Role_ROLE_CONTROL_PLANE
	}
	resp, err := joinv1.NewJoinServiceClient(conn).IssueJoinTicket(ctx, &joinv1.IssueJoinTicketRequest{
		DiskUuid:   c.req.DiskUUID,
		KubeletCsr: csrPEM,
		Role:       role,
		NodeName:   c.req.NodeName,
	})
	if err != nil {
		// Refusals carry the service's reason; all are retried, since the
		// policy may change.
		return nil, fmt.Errorf("join service %s: %w", endpoint, err)
	}
	t, err := CheckTicket(resp, key, c.req.NodeName, c.req.Role, c.opts.Now())
	if err != nil {
		return nil, fmt.Errorf("join service %s: %w", endpoint, err)
	}
	return t, nil
}

// newKubeletKey generates the kubelet's key and its CSR.
func newKubeletKey(rnd io.Reader, nodeName string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rnd, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
	}, crypto.Signer(key))
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
