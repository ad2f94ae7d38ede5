// Package verifier holds the join service's current attestation policy and
// the validators built from it, and swaps both atomically when the policy
// file changes. A policy that does not parse or does not build is refused and
// the one in force stays; validation itself never takes a lock.
package verifier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// BuildFunc turns a policy into validators. main supplies it, because only
// main knows the trust anchors (AMD/Intel roots, EK and AK CAs).
type BuildFunc func(*policy.Policy) (attestation.Validators, error)

// current is one consistent pair: the policy and the validators built from it.
type current struct {
	policy     *policy.Policy
	validators attestation.Validators
	digest     [32]byte
}

// Verifier validates evidence with the validators of the policy in force.
type Verifier struct {
	path  string
	build BuildFunc
	log   *slog.Logger
	cur   atomic.Pointer[current]
}

// New loads the policy at path and builds its validators. It fails if the
// first policy is bad: the join service must not start without one.
func New(path string, build BuildFunc, log *slog.Logger) (*Verifier, error) {
	v := &Verifier{path: path, build: build, log: log}
	if _, err := v.Reload(); err != nil {
		return nil, err
	}
	return v, nil
}

// Reload reads the policy file and, if it changed and is valid, puts it in
// force. It reports whether the policy in force changed. On error the policy
// in force stays.
func (v *Verifier) Reload() (bool, error) {
	doc, err := os.ReadFile(v.path)
	if err != nil {
		return false, fmt.Errorf("reading policy %s: %w", v.path, err)
	}
	digest := sha256.Sum256(doc)
	if old := v.cur.Load(); old != nil && bytes.Equal(old.digest[:], digest[:]) {
		return false, nil
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		return false, fmt.Errorf("parsing policy %s: %w", v.path, err)
	}
	validators, err := v.build(pol)
	if err != nil {
		return false, fmt.Errorf("building validators for policy %s: %w", v.path, err)
	}
	v.cur.Store(&current{policy: pol, validators: validators, digest: digest})
	return true, nil
}

// Watch rereads the policy file every interval until ctx ends. Polling the
// content (not inotify) also catches Kubernetes ConfigMap symlink swaps.
func (v *Verifier) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			changed, err := v.Reload()
			switch {
			case err != nil:
				v.log.Error("new policy refused; the previous policy stays in force", "error", err, "policy", v.Policy().String())
			case changed:
				v.log.Info("policy reloaded", "policy", v.Policy().String())
			}
		}
	}
}

// Policy is the policy in force.
func (v *Verifier) Policy() *policy.Policy { return v.cur.Load().policy }

// Validate validates ev with the validators of the policy in force.
func (v *Verifier) Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error) {
	return v.cur.Load().validators.Validate(ctx, ev, userData)
}

// Challenge asks the validator of ev's variant for an activation challenge.
func (v *Verifier) Challenge(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestationv1.ActivationChallenge, error) {
	return v.cur.Load().validators.Challenge(ctx, ev, userData)
}

// PolicyName names the policy in force for audit lines: its name and version.
func (v *Verifier) PolicyName() string {
	p := v.Policy()
	return fmt.Sprintf("%s/v%d", p.Name, p.Version)
}
