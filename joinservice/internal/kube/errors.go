package kube

import (
	"errors"
	"fmt"
)

// Sentinels for conditions the server acts on (maps to gRPC codes).
var (
	// ErrInvalidNodeName: a node name is not a DNS-1123 subdomain.
	ErrInvalidNodeName = errors.New("invalid node name")
	// ErrMalformedCSR: the kubelet CSR cannot be read (size, PEM, DER,
	// signature) — the request is broken.
	ErrMalformedCSR = errors.New("malformed kubelet csr")
	// ErrForbiddenCSR: the kubelet CSR is readable but asks for something
	// the node may not have (another identity, SANs, a weak key).
	ErrForbiddenCSR = errors.New("forbidden kubelet csr")
	// ErrCSRDenied: the CSR got a Denied or Failed condition.
	ErrCSRDenied = errors.New("kubelet csr denied or failed")
	// ErrCSRTimeout: no certificate was issued within Options.CSRTimeout.
	ErrCSRTimeout = errors.New("kubelet csr not signed in time")
	// ErrBadCertificate: the issued certificate does not match the CSR.
	ErrBadCertificate = errors.New("issued kubelet certificate does not match the csr")
)

// Checks of CheckKubeletCSR, in the order they run; CSRError.Check is one of
// them.
const (
	CheckNodeName     = "node-name"
	CheckSize         = "size"
	CheckPEM          = "pem"
	CheckParse        = "parse"
	CheckKey          = "key"
	CheckSignature    = "signature"
	CheckCommonName   = "common-name"
	CheckOrganization = "organization"
	CheckSubject      = "subject"
	CheckSANs         = "sans"
	CheckExtensions   = "extensions"
)

// CSRError is a kubelet CSR refused by one named check, with the expected
// and actual values:
//
//	kube: kubelet csr: organization: want ["system:nodes"], got ["system:masters"]
//
// It matches ErrMalformedCSR or ErrForbiddenCSR with errors.Is, and its
// cause (if any) too.
type CSRError struct {
	Check     string
	Want, Got string
	Err       error
	class     error
}

func (e *CSRError) Error() string {
	msg := "kube: kubelet csr: " + e.Check
	if e.Want != "" || e.Got != "" {
		msg += fmt.Sprintf(": want %s, got %s", e.Want, e.Got)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the error class sentinel and the cause.
func (e *CSRError) Unwrap() []error {
	errs := []error{e.class}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func malformed(check, want, got string, err error) *CSRError {
	return &CSRError{Check: check, Want: want, Got: got, Err: err, class: ErrMalformedCSR}
}

func forbidden(check, want, got string) *CSRError {
	return &CSRError{Check: check, Want: want, Got: got, class: ErrForbiddenCSR}
}
