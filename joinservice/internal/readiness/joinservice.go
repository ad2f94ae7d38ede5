package readiness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/status"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// JoinServiceName is the join service's gRPC service name, as its health
// service knows it.
var JoinServiceName = joinv1.JoinService_ServiceDesc.ServiceName

// policyHolder is the verifier: the policy in force, nil if none.
type policyHolder interface {
	Policy() *policy.Policy
}

// caReader reads the cluster CA pins, as every join does: one GET of the
// cluster-info ConfigMap.
type caReader interface {
	CACertHashes(ctx context.Context) ([]string, error)
}

// JoinService returns the join service's checks, in order:
//  1. "policy": a policy is in force;
//  2. "cluster-secrets": the cluster secrets are readable (the file, or the
//     Kubernetes Secret);
//  3. "kubernetes": the Kubernetes API answers with the cluster CA, which
//     every join ticket carries.
func JoinService(pol policyHolder, secrets keys.KeyProvider, cluster caReader) []Check {
	return []Check{
		{Name: "policy", Probe: func(context.Context) error {
			if pol.Policy() == nil {
				return errors.New("no policy in force")
			}
			return nil
		}},
		{Name: "cluster-secrets", Probe: func(ctx context.Context) error {
			s, err := secrets.ClusterSecrets(ctx)
			if err != nil {
				return secretsError(err)
			}
			s.Zero()
			return nil
		}},
		{Name: "kubernetes", Probe: func(ctx context.Context) error {
			if _, err := cluster.CACertHashes(ctx); err != nil {
				return fmt.Errorf("reading the cluster CA: %w", err)
			}
			return nil
		}},
	}
}

// secretsError says why the cluster secrets are unusable without their
// error's text: this answer is served without authentication (status.v1,
// /readyz), and a parse error could quote the secrets file.
func secretsError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("cluster secrets missing")
	case errors.Is(err, fs.ErrPermission):
		return errors.New("cluster secrets: permission denied")
	case errors.Is(err, context.DeadlineExceeded):
		return errors.New("cluster secrets: timed out")
	}
	return errors.New("cluster secrets unreadable or invalid")
}

// Publish returns the OnChange of the join service's Monitor: the health of
// JoinServiceName and of "" (the service overall) on p, and the phase of
// tracker ("serving", or "not-ready" with the failed check as its error).
func Publish(p *status.PlainServer, tracker *status.Tracker) func(error) {
	return func(err error) {
		p.SetServing(JoinServiceName, err == nil)
		p.SetServing("", err == nil)
		if err == nil {
			tracker.SetPhase("serving")
			return
		}
		tracker.SetPhase("not-ready")
		tracker.Attempt(err)
	}
}
