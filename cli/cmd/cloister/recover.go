package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/internal/keys"
	recoveryv1 "github.com/cloister-dev/cloister/proto/recovery/v1"
)

const recoverUsage = `Usage:
  cloister recover --node HOST:PORT --disk-uuid UUID --policy FILE [--cluster-dir DIR]

Unlock the state disk of a rebooted node that cannot reach a join service.
The node's disk-mapper waits for its key on its attested port. recover:
  1. attests the node against the policy;
  2. derives that one disk's key locally from the master secret in the
     cluster directory (the master secret never leaves this machine);
  3. sends only that key, its generation and the measurement secret (which
     the node needs for its cluster-ID latch).
The node accepts the key only if it opens the disk, and answers with the
disk's UUID, which recover prints on stdout.

The disk UUID is the LUKS2 UUID of the node's state disk; the node reports
it in 'cloister status'. If the attested node reports another disk, recover
refuses to send the key.

Examples:
  cloister status --node 10.0.0.7:9101          # shows "disk UUID"
  cloister recover --node 10.0.0.7:9100 --disk-uuid 2f1c0a8e-5b7d-4c1e-9a3f-6d2b8e4c1a70 \
      --policy policy.yaml --tpm-ak-roots ak-ca.pem --cluster-dir ./cloister-cluster
`

type recoverOptions struct {
	node       nodeFlags
	trust      trustFlags
	clusterDir string
	diskUUID   string
	generation uint
}

func recoverCommand() *command {
	return &command{
		name:    "recover",
		summary: "send a rebooted node the key of its state disk",
		usage:   recoverUsage,
		setup: func(e *env, fs *flag.FlagSet) func(context.Context) error {
			var o recoverOptions
			o.node.register(fs, "its attested port, where disk-mapper waits for a key", time.Minute)
			o.trust.register(fs)
			fs.StringVar(&o.clusterDir, "cluster-dir", defaultClusterDir, "the cluster's `directory` (from 'cloister init')")
			fs.StringVar(&o.diskUUID, "disk-uuid", "", "`UUID` of the node's state disk (canonical lowercase)")
			fs.UintVar(&o.generation, "generation", keys.FirstGeneration, "disk key `generation` (the join service's diskKeyGeneration)")
			return func(ctx context.Context) error { return runRecover(ctx, e, o) }
		},
	}
}

func runRecover(ctx context.Context, e *env, o recoverOptions) error {
	if err := o.node.check("recover"); err != nil {
		return err
	}
	if o.diskUUID == "" {
		return usageErrorf("recover", "--disk-uuid is required")
	}
	if err := keys.CheckDiskUUID(o.diskUUID); err != nil {
		return usageErrorf("recover", "--disk-uuid: %v", err)
	}
	if o.generation > 1<<32-1 {
		return usageErrorf("recover", "--generation %d is too large", o.generation)
	}
	generation := uint32(o.generation)
	_, validators, err := o.trust.load("recover", e)
	if err != nil {
		return err
	}
	secrets, err := clusterDir(o.clusterDir).secrets(ctx)
	if err != nil {
		return err
	}
	defer secrets.Zero()
	diskKey, err := secrets.DiskKey(o.diskUUID, generation)
	if err != nil {
		return fail(exitLocal, fmt.Errorf("deriving the disk key: %w", err))
	}
	defer diskKey.Zero()

	ctx, cancel := context.WithTimeout(ctx, o.node.timeout)
	defer cancel()
	node, err := dialAttested(o.node.node, validators)
	if err != nil {
		return err
	}
	defer node.Close()
	claims, st, err := node.attest(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "node %s attested: %s, hardware ID %s\n", o.node.node, claims.Variant, shortHex(claims.HardwareID))
	for _, w := range claims.Warnings {
		warnf(e.stderr, "policy warning: %s", w)
	}
	if reported := st.GetDiskUuid(); reported != "" && reported != o.diskUUID {
		return failf(exitUsage, []string{"check --disk-uuid: 'cloister status' shows the node's disk"},
			"node %s reports state disk %s, not %s; not sending the key", o.node.node, untrusted(reported), o.diskUUID)
	}

	// Only this disk's key and the measurement secret: never the master
	// secret or its salt.
	req := &recoveryv1.RecoverRequest{
		DiskKey:           diskKey,
		DiskKeyGeneration: generation,
		MeasurementSecret: secrets.MeasurementSecret,
	}
	resp, err := recoveryv1.NewRecoveryServiceClient(node.conn).Recover(ctx, req)
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			return failf(exitNodeRefused, []string{
				"check --disk-uuid and --generation, and that --cluster-dir is this node's cluster",
			}, "node %s refused the key for disk %s (generation %d): it does not open the disk: %s",
				o.node.node, o.diskUUID, generation, untrusted(status.Convert(err).Message()))
		}
		return node.explain(err, "recovering")
	}
	if got := resp.GetDiskUuid(); got != o.diskUUID {
		warnf(e.stderr, "the node reports that the key opened disk %s, not %s", untrusted(got), o.diskUUID)
	}
	fmt.Fprintf(e.stderr, "disk %s unlocked\n", o.diskUUID)
	fmt.Fprintln(e.stdout, untrusted(resp.GetDiskUuid()))
	return nil
}
