package atls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/internal/attestation"
)

// ErrUnattestedPeer is wrapped by the handshake error of a side that requires
// attestation when the peer sent no_evidence.
var ErrUnattestedPeer = errors.New("peer sent no evidence")

// tlsError is a failed TLS handshake: the peer offered a version, cipher or
// certificate this package refuses, or the connection broke (Code looks at
// the cause first).
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// maxReasonDisplay bounds how much of a peer's refusal reason an error shows.
const maxReasonDisplay = 1024

// RefusedError is the handshake error of an attesting side whose evidence
// the peer refused. Its text carries the peer's reason, so a client's RPC
// error says which check failed on the server.
type RefusedError struct {
	// Peer is the refusing side: "client" or "server".
	Peer string
	// UntrustedReason is the peer's reason as it sent it. It is shown quoted
	// and bounded by Error, never interpreted.
	UntrustedReason string
	// Busy is set when the peer refused for its own load, not for our
	// evidence (atls.v1 Verdict.busy): worth a retry later. The error then
	// wraps ErrBusy.
	Busy bool
}

// Unwrap returns ErrBusy for a refusal for load, so that errors.Is and
// Code treat it as a retry, not a verdict.
func (e *RefusedError) Unwrap() error {
	if e.Busy {
		return ErrBusy
	}
	return nil
}

func (e *RefusedError) Error() string {
	reason := e.UntrustedReason
	if len(reason) > maxReasonDisplay {
		reason = fmt.Sprintf("%s… (%d more bytes)", reason[:maxReasonDisplay], len(reason)-maxReasonDisplay)
	}
	if e.Busy {
		return fmt.Sprintf("atls: %s is busy, retry later: %q", e.Peer, reason)
	}
	return fmt.Sprintf("atls: %s refused our attestation: %q", e.Peer, reason)
}

// Code maps an error of this package or of attestation validation to a gRPC
// code, the one rule every service uses:
//   - malformed input (attestation.ErrMalformed, an undecodable frame) →
//     InvalidArgument;
//   - a server over one of its Limits (ErrBusy, a *RefusedError for load
//     included) → Unavailable (retry);
//   - a rejection (*attestation.CheckError, attestation.ErrWrongVariant,
//     ErrUnattestedPeer, *RefusedError) → PermissionDenied;
//   - a TLS handshake the peer got wrong (TLS 1.2, a bad certificate) →
//     PermissionDenied;
//   - a cancelled context → Canceled;
//   - a deadline or broken connection → Unavailable (retry);
//   - anything else is our bug → Internal.
//
// An error that already carries a gRPC status keeps its code.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	var (
		checkErr   *attestation.CheckError
		refusedErr *RefusedError
		tlsErr     *tlsError
		netErr     net.Error
	)
	switch {
	case errors.Is(err, ErrBusy):
		return codes.Unavailable
	case errors.Is(err, attestation.ErrMalformed), errors.Is(err, errMalformedFrame):
		return codes.InvalidArgument
	case errors.As(err, &checkErr), errors.Is(err, attestation.ErrWrongVariant),
		errors.Is(err, ErrUnattestedPeer), errors.As(err, &refusedErr):
		return codes.PermissionDenied
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.As(err, &tlsErr) && !brokenConnection(err):
		return codes.PermissionDenied
	case brokenConnection(err), errors.As(err, &netErr):
		return codes.Unavailable
	}
	return codes.Internal
}

// brokenConnection reports a deadline or a connection that broke: worth a
// retry, unlike a peer that speaks a TLS this package refuses.
func brokenConnection(err error) bool {
	for _, target := range []error{
		context.DeadlineExceeded, os.ErrDeadlineExceeded, io.EOF, io.ErrUnexpectedEOF,
		net.ErrClosed, syscall.ECONNRESET, syscall.EPIPE,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
