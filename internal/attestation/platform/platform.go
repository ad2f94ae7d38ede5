// Package platform wires the attestation variants for a daemon: it builds
// the validator registry a policy allows, from configured trust anchors, and
// opens the issuer of the platform the daemon runs on. main calls it; the
// variant packages stay unaware of each other.
package platform

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/snp"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
)

// Anchors are the trust anchors of every variant. A variant the policy allows
// but whose anchors are missing is an error at build time, not a silent skip.
type Anchors struct {
	// TPMEKRoots and TPMAKRoots certify TPM endorsement and attestation keys.
	TPMEKRoots, TPMAKRoots *x509.CertPool
	// SNPCertGetter supplies VCEKs missing from evidence (an offline
	// snp.CertCache); nil refuses such evidence.
	SNPCertGetter trust.HTTPSGetter
	// SNPRoots replaces AMD's roots (tests); nil means AMD's.
	SNPRoots map[string][]*trust.AMDRootCerts
	// TDXRoots replaces Intel's SGX root (tests); nil means Intel's.
	TDXRoots *x509.CertPool
	// TDXCollateral enables TCB-status checks from Intel PCS collateral.
	TDXCollateral *tdx.CollateralCache
	// AllowInsecureDev must be set, on top of the policy's own consent, to
	// build the insecure-dev validator: two independent switches.
	AllowInsecureDev bool
	// ActivationSeed keeps the TPM credential-activation key the same across
	// policy reloads, so a challenge issued before a reload still verifies
	// after it. 32 random bytes drawn once per process.
	ActivationSeed []byte
}

// Validators builds the registry of validators the policy allows.
func Validators(pol *policy.Policy, a Anchors) (attestation.Validators, error) {
	var vs []attestation.Validator
	if pol.TPM != nil {
		if a.TPMEKRoots == nil && a.TPMAKRoots == nil {
			return nil, errors.New("policy allows tpm, but no TPM trust anchor is configured: set the EK or AK roots")
		}
		opts := tpm.ValidatorOptions{EKRoots: a.TPMEKRoots, AKRoots: a.TPMAKRoots}
		if a.ActivationSeed != nil {
			opts.Rand = bytes.NewReader(a.ActivationSeed)
		}
		v, err := tpm.NewValidator(pol.TPM, opts)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	if pol.SNP != nil {
		v, err := snp.NewValidator(pol.SNP, snp.ValidatorOptions{TrustedRoots: a.SNPRoots, Getter: a.SNPCertGetter})
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	if pol.TDX != nil {
		v, err := tdx.NewValidator(pol.TDX, tdx.ValidatorOptions{TrustedRoots: a.TDXRoots, Collateral: a.TDXCollateral})
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	if pol.InsecureDev != nil {
		if !a.AllowInsecureDev {
			return nil, errors.New("policy allows insecure-dev, but this daemon was not started with --allow-insecure-dev")
		}
		v, err := insecuredev.NewInsecureValidator(pol.InsecureDev)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return attestation.NewValidators(vs...)
}

// IssuerOptions select and configure the local issuer.
type IssuerOptions struct {
	// TPMDevice is the TPM to quote with; default tpm.DevicePath.
	TPMDevice string
	// TPMEventLog is the event log file; default tpm.EventLogPath.
	TPMEventLog string
	// AllowInsecureDev permits the insecure-dev issuer.
	AllowInsecureDev bool
}

// Issuer is an attestation issuer the caller must close.
type Issuer interface {
	attestation.Issuer
	io.Closer
}

// OpenIssuer opens the issuer of variant on this machine.
func OpenIssuer(variant attestation.Variant, opts IssuerOptions) (Issuer, error) {
	switch variant {
	case attestation.VariantTPM:
		if opts.TPMDevice == "" {
			opts.TPMDevice = tpm.DevicePath
		}
		if opts.TPMEventLog == "" {
			opts.TPMEventLog = tpm.EventLogPath
		}
		log, err := tpm.ReadEventLog(opts.TPMEventLog)
		if err != nil {
			return nil, fmt.Errorf("opening tpm issuer: %w", err)
		}
		i, err := tpm.OpenIssuer(opts.TPMDevice, tpm.IssuerOptions{EventLog: log})
		if err != nil {
			return nil, fmt.Errorf("opening tpm issuer on %s: %w", opts.TPMDevice, err)
		}
		return i, nil
	case attestation.VariantSNP:
		i, err := snp.OpenIssuer(snp.IssuerOptions{})
		if err != nil {
			return nil, fmt.Errorf("opening sev-snp issuer: %w", err)
		}
		return nopCloser{i}, nil
	case attestation.VariantTDX:
		i, err := tdx.OpenIssuer(tdx.IssuerOptions{})
		if err != nil {
			return nil, fmt.Errorf("opening tdx issuer: %w", err)
		}
		return nopCloser{i}, nil
	case attestation.VariantInsecureDev:
		if !opts.AllowInsecureDev {
			return nil, errors.New("the insecure-dev issuer needs --allow-insecure-dev")
		}
		return nopCloser{insecuredev.NewIssuer()}, nil
	}
	return nil, fmt.Errorf("unknown attestation variant %q (known: tpm, sev-snp, tdx, insecure-dev)", variant)
}

type nopCloser struct{ attestation.Issuer }

func (nopCloser) Close() error { return nil }

// LoadCertPool reads PEM certificates from files into one pool. No files
// gives a nil pool ("not configured").
func LoadCertPool(paths []string) (*x509.CertPool, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading trust anchors: %w", err)
		}
		n := 0
		for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
			if block.Type != "CERTIFICATE" {
				continue
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("trust anchors %s: certificate %d: %w", p, n+1, err)
			}
			pool.AddCert(cert)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("trust anchors %s: no PEM certificate found", p)
		}
	}
	return pool, nil
}
