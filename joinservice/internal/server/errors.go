package server

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/joinservice/internal/kube"
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

// csrError names the failed kubelet CSR check: a malformed CSR is invalid,
// one for another identity is denied, a signer that refuses is denied, and a
// cluster that does not answer is unavailable.
func csrError(err error) error {
	var ce *kube.CSRError
	check := "csr"
	if errors.As(err, &ce) {
		check = "csr-" + ce.Check
	}
	switch {
	case errors.Is(err, kube.ErrMalformedCSR), errors.Is(err, kube.ErrInvalidNodeName):
		return invalid(check, err)
	case errors.Is(err, kube.ErrForbiddenCSR), errors.Is(err, kube.ErrCSRDenied), errors.Is(err, kube.ErrBadCertificate):
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
