package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// maxResponseSize bounds what a node may send in one message (a kubeconfig
// is the largest).
const maxResponseSize = 4 << 20

// attestedNode is a connection to a node's attested port: every handshake
// verifies the node (the CLI itself does not attest).
type attestedNode struct {
	addr  string
	conn  *grpc.ClientConn
	creds *recordingCredentials
}

// dialAttested prepares a connection to addr that verifies the node with
// validators. Nothing is sent until the first call.
func dialAttested(addr string, validators attestation.Validators) (*attestedNode, error) {
	if err := checkAddr(addr); err != nil {
		return nil, err
	}
	c, err := atls.NewCredentials(atls.Config{Verifier: validators})
	if err != nil {
		return nil, fmt.Errorf("building attested TLS credentials: %w", err)
	}
	rc := &recordingCredentials{TransportCredentials: c}
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(rc),
		// Reconnect within seconds when the node was busy (attest).
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: busyWait, Multiplier: 1.2, Jitter: 0.2, MaxDelay: 3 * busyWait}, MinConnectTimeout: 20 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseSize)))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return &attestedNode{addr: addr, conn: conn, creds: rc}, nil
}

func (n *attestedNode) Close() error { return n.conn.Close() }

// busyRetries and busyWait bound how long attest waits for a node that
// refused the handshake for its load (it limits the quotes it makes for
// unattested clients to a few per second and address).
const (
	busyRetries = 10
	busyWait    = time.Second
)

// attest runs the handshake (through a status.v1 Get on the attested port)
// and returns the node's verified claims and its status. A node that serves
// no status.v1 there is still attested; its status is nil then. A node that
// answers "busy" is asked again, a second apart, up to busyRetries times
// (gRPC reconnects on its own backoff, capped by dialAttested; a call in
// between fails at once with the same recorded error).
func (n *attestedNode) attest(ctx context.Context) (*attestation.Claims, *statusv1.GetResponse, error) {
	var (
		p   peer.Peer
		st  *statusv1.GetResponse
		err error
	)
	for try := 0; ; try++ {
		st, err = statusv1.NewStatusServiceClient(n.conn).Get(ctx, &statusv1.GetRequest{}, grpc.Peer(&p))
		if err == nil || try == busyRetries || !errors.Is(n.creds.lastError(), atls.ErrBusy) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, n.explain(err, "attesting")
		case <-time.After(busyWait):
		}
	}
	claims, ok := atls.ClaimsFromPeer(&p)
	if err != nil {
		if status.Code(err) == codes.Unimplemented && ok {
			return claims, nil, nil
		}
		return nil, nil, n.explain(err, "attesting")
	}
	if !ok {
		// Impossible with atls credentials that verify: a call succeeds only
		// after the node passed verification.
		return nil, nil, fmt.Errorf("internal error: node %s answered without verified claims", n.addr)
	}
	return claims, st, nil
}

// explain turns a failed call into an exitError: a refused attestation
// (exit 3, with the failed check), an unreachable node (exit 2), or the
// node's refusal of the request (exit 5).
func (n *attestedNode) explain(err error, doing string) error {
	if hsErr := n.creds.lastError(); hsErr != nil && status.Code(err) == codes.Unavailable {
		return explainHandshake(n.addr, hsErr)
	}
	return explainCall(n.addr, err, doing)
}

// explainHandshake classifies a failed attested TLS handshake.
func explainHandshake(addr string, err error) error {
	var (
		checkErr   *attestation.CheckError
		refusedErr *atls.RefusedError
		recordErr  tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, atls.ErrBusy):
		return fail(exitUnavailable, fmt.Errorf("node %s is busy: %w", addr, err),
			"the node limits the attestations it makes for unattested clients (a few per second): try again in a few seconds")
	case errors.As(err, &recordErr):
		// The port answered with something that is not TLS at all (a
		// plain gRPC port sends HTTP/2 frames): no evidence was exchanged,
		// so nothing was refused. It is the wrong port, a transport
		// failure.
		return fail(exitUnavailable, fmt.Errorf("node %s: the port did not speak attested TLS (it answered with something that is not TLS)", addr),
			"--node takes the node's attested port (9100 in the node image); its plain status port (9101) serves only 'cloister status'")
	case errors.As(err, &checkErr):
		return fail(exitRefused, &checkFailure{addr: addr, check: checkErr}, checkHints(checkErr.Check)...)
	case errors.Is(err, attestation.ErrWrongVariant):
		return fail(exitRefused, fmt.Errorf("node %s failed attestation: %w", addr, err),
			"the node attests with a variant the policy does not allow: add its section to the policy, or check --node")
	case errors.Is(err, attestation.ErrMalformed), errors.Is(err, atls.ErrUnattestedPeer):
		return fail(exitRefused, fmt.Errorf("node %s failed attestation: %w", addr, err))
	case errors.As(err, &refusedErr):
		return fail(exitNodeRefused, fmt.Errorf("node %s refused this unattested client: %s", addr, untrusted(refusedErr.UntrustedReason)),
			"is "+addr+" a node's init or recovery port? A join service requires attested nodes and does not talk to the CLI")
	case atls.Code(err) == codes.PermissionDenied || atls.Code(err) == codes.InvalidArgument:
		return fail(exitRefused, fmt.Errorf("node %s failed attestation: %w", addr, err))
	}
	return unreachable(addr, err)
}

// checkFailure shows a node's evidence rejected by one named check: the
// check, the expected and the actual value, one per line. It unwraps to the
// *attestation.CheckError.
type checkFailure struct {
	addr  string
	check *attestation.CheckError
}

func (e *checkFailure) Error() string {
	c := e.check
	msg := fmt.Sprintf("node %s failed attestation\n  variant: %s\n  check:   %s", e.addr, c.Variant, c.Check)
	if c.Want != "" || c.Got != "" {
		msg += fmt.Sprintf("\n  want:    %s\n  got:     %s", c.Want, c.Got)
	}
	if c.Err != nil {
		msg += fmt.Sprintf("\n  cause:   %v", c.Err)
	}
	return msg
}

func (e *checkFailure) Unwrap() error { return e.check }

func checkHints(check string) []string {
	switch check {
	case "ak-chain", "ek-chain", "ak-trust", "ak-pub", "activation":
		return []string{"the node's attestation key does not chain to the configured roots: check --tpm-ak-roots / --tpm-ek-roots"}
	case "binding":
		return []string{"the evidence was not made for this connection: something between you and the node relays or replays it"}
	}
	return []string{"if the node was changed on purpose (a new image), review its values and update the policy with 'cloister policy set'"}
}

// explainCall classifies a call that failed after (or without) a handshake.
func explainCall(addr string, err error, doing string) error {
	s, _ := status.FromError(err)
	switch s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return unreachable(addr, err)
	case codes.Canceled:
		return fail(exitInterrupted, fmt.Errorf("%s node %s: interrupted", doing, addr))
	case codes.Unimplemented:
		return fail(exitNodeRefused, fmt.Errorf("%s node %s: the node does not serve this (%s)", doing, addr, untrusted(s.Message())),
			"check the port: the attested port serves init before a node is initialized and recovery while a rebooted node waits for its key")
	}
	return fail(exitNodeRefused, fmt.Errorf("%s node %s: node refused: %s: %s", doing, addr, s.Code(), untrusted(s.Message())))
}

func unreachable(addr string, err error) error {
	msg := err.Error()
	if s, ok := status.FromError(err); ok {
		msg = s.Message()
	}
	if status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
		msg = "no answer within --timeout: " + msg
	}
	return fail(exitUnavailable, fmt.Errorf("node %s unreachable: %s", addr, untrusted(msg)),
		"is the node up, and is "+addr+" its port? 'cloister status --node HOST:STATUS-PORT' shows what the node is doing")
}

// recordingCredentials keep the last client handshake error: gRPC reports
// a failed handshake only as text inside an Unavailable status, and the CLI
// needs the failed check itself.
type recordingCredentials struct {
	credentials.TransportCredentials
	mu  sync.Mutex
	err error
}

func (r *recordingCredentials) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := r.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
	}
	return conn, ai, err
}

// Clone returns r itself, so that every handshake is recorded in one place.
func (r *recordingCredentials) Clone() credentials.TransportCredentials { return r }

func (r *recordingCredentials) lastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// dialPlain prepares a connection to a node's plain (unauthenticated)
// status port.
func dialPlain(addr string) (*grpc.ClientConn, error) {
	if err := checkAddr(addr); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseSize)))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return conn, nil
}

// checkAddr accepts HOST:PORT.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return failf(exitUsage, []string{"--node takes HOST:PORT, e.g. 10.0.0.5:9100"}, "--node %q: want HOST:PORT", addr)
	}
	return nil
}
