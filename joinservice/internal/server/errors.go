package server

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
)

// requestError is a refusal by one named check with its gRPC code.
type requestError struct {
	check string
	code  codes.Code
	err   error
}

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

func invalid(check string, err error) error {
	return &requestError{check: check, code: codes.InvalidArgument, err: err}
}

func denied(check string, err error) error {
	return &requestError{check: check, code: codes.PermissionDenied, err: err}
}

func unavailable(check string, err error) error {
	return &requestError{check: check, code: codes.Unavailable, err: err}
}

func internal(check string, err error) error {
	return &requestError{check: check, code: codes.Internal, err: err}
}

// ErrInvalidCSR is wrapped by a cluster's SignKubeletCSR when the CSR itself
// is refused (another identity, SANs, weak key), as opposed to the cluster
// being unreachable.
var ErrInvalidCSR = errors.New("kubelet CSR refused")

// classifyCluster tells a refused CSR from a cluster that did not answer.
func classifyCluster(check string, err error) error {
	if errors.Is(err, ErrInvalidCSR) {
		return denied(check, err)
	}
	return unavailable(check, fmt.Errorf("kubernetes: %w", err))
}

// classify is the one place that turns an error into a metric reason and a
// gRPC code.
func classify(err error) (check string, code codes.Code) {
	var re *requestError
	if errors.As(err, &re) {
		return re.check, re.code
	}
	var ce *attestation.CheckError
	if errors.As(err, &ce) {
		return ce.Check, codes.PermissionDenied
	}
	return "error", atls.Code(err)
}
