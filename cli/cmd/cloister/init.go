package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/cloister-dev/cloister/internal/keys"
	initv1 "github.com/cloister-dev/cloister/proto/init/v1"
)

// maxInitSecret bounds the init secret file.
const maxInitSecret = 4096

const initUsage = `Usage:
  cloister init --node HOST:PORT --policy FILE [flags]

Make a node the first control plane of a new cluster:
  1. attest the node against the policy (the node must pass before anything
     is sent);
  2. generate the cluster secrets (master secret, measurement secret, salts)
     and save them 0600 in the cluster directory BEFORE sending them, so
     nothing is lost if the connection drops;
  3. send them to the node, which runs kubeadm init; its progress is shown
     on stderr;
  4. save the admin kubeconfig (0600) in the cluster directory and print the
     cluster ID on stdout.

The cluster directory (0700) is the only copy of the secrets outside the
cluster: 'cloister recover' and 'cloister verify --cluster-dir' need it.
Keep it safe and back it up. init refuses a directory that already holds
secrets, and never deletes secrets, even when the node refuses them.

--node is the node's attested port, where its bootstrapper waits for init.
The init secret file, if the node asks for one, is sent without its
trailing newline. The node's bootstrapper checks it against its
--init-secret-sha256, the SHA-256 of exactly those bytes:
  printf %s "$(cat init-secret.txt)" | sha256sum

Examples:
  # A TPM node on a cloud that certifies its attestation keys:
  cloister init --node 10.0.0.5:9100 --policy policy.yaml --tpm-ak-roots ak-ca.pem

  # Keep the cluster directory elsewhere, name the cluster:
  cloister init --node 10.0.0.5:9100 --policy policy.yaml --tpm-ek-roots ek-ca.pem \
      --cluster-dir ~/clusters/prod --name prod --init-secret-file init-secret.txt
`

type initOptions struct {
	node              nodeFlags
	trust             trustFlags
	clusterDir        string
	initSecretFile    string
	name              string
	kubernetesVersion string
	controlPlaneEP    string
}

func initCommand() *command {
	return &command{
		name:    "init",
		summary: "make a node the first control plane of a new cluster",
		usage:   initUsage,
		setup: func(e *env, fs *flag.FlagSet) func(context.Context) error {
			var o initOptions
			o.node.register(fs, "its attested port, where the bootstrapper waits for init", 30*time.Minute)
			o.trust.register(fs)
			fs.StringVar(&o.clusterDir, "cluster-dir", defaultClusterDir, "`directory` for the new cluster's secrets and kubeconfig (created 0700)")
			fs.StringVar(&o.initSecretFile, "init-secret-file", "", "`file` with the init secret the node's configuration expects, if any")
			fs.StringVar(&o.name, "name", "cloister", "cluster `name` in the kubeconfig")
			fs.StringVar(&o.kubernetesVersion, "kubernetes-version", "v1.37.2", "Kubernetes `version` to initialize")
			fs.StringVar(&o.controlPlaneEP, "control-plane-endpoint", "", "stable `host:port` of the API server for every node (load balancer, DNS name); empty: the node's configuration or address")
			return func(ctx context.Context) error { return runInit(ctx, e, o) }
		},
	}
}

func runInit(ctx context.Context, e *env, o initOptions) error {
	if err := o.node.check("init"); err != nil {
		return err
	}
	if o.name == "" {
		return usageErrorf("init", "--name must not be empty")
	}
	_, validators, err := o.trust.load("init", e)
	if err != nil {
		return err
	}
	var initSecret []byte
	if o.initSecretFile != "" {
		if initSecret, err = readInitSecret(o.initSecretFile); err != nil {
			return err
		}
		defer clear(initSecret)
	}
	// Fail before contacting the node if the directory is taken; reserve
	// it only once the node has passed.
	dir := clusterDir(o.clusterDir)
	if err := dir.checkFree(); err != nil {
		return err
	}

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
	if st != nil {
		fmt.Fprintf(e.stderr, "node status: %s %s\n", untrusted(st.GetComponent()), untrusted(st.GetPhase()))
	}

	if err := dir.reserve(); err != nil {
		return err
	}
	secrets, err := keys.NewClusterSecrets(e.rand)
	if err != nil {
		return fail(exitLocal, fmt.Errorf("generating cluster secrets: %w", err))
	}
	defer secrets.Zero()
	if err := dir.saveSecrets(secrets); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "cluster secrets saved in %s\n", dir.path(secretsFileName))
	clusterID, err := secrets.ClusterID()
	if err != nil {
		return fmt.Errorf("internal error: deriving the cluster ID: %w", err)
	}

	req := &initv1.InitRequest{
		MasterSecret:         secrets.MasterSecret,
		MasterSalt:           secrets.MasterSalt,
		MeasurementSecret:    secrets.MeasurementSecret,
		MeasurementSalt:      secrets.MeasurementSalt,
		InitSecret:           initSecret,
		ClusterName:          o.name,
		KubernetesVersion:    o.kubernetesVersion,
		ControlPlaneEndpoint: o.controlPlaneEP,
	}
	savedHint := fmt.Sprintf("the secrets stay in %s; if 'cloister status' shows the node still waits for init, remove that directory and run init again", dir)
	stream, err := initv1.NewInitServiceClient(node.conn).Init(ctx, req)
	if err != nil {
		return withHint(node.explain(err, "initializing"), savedHint)
	}
	success, err := followInit(e, stream)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return withHint(err, savedHint)
		}
		return withHint(node.explain(err, "initializing"), savedHint)
	}

	if len(success.GetKubeconfig()) == 0 {
		warnf(e.stderr, "the node returned an empty kubeconfig")
	}
	if err := dir.writeFile(kubeconfigFileName, success.GetKubeconfig()); err != nil {
		return err
	}
	if err := dir.writeFile(clusterIDFileName, []byte(hex.EncodeToString(clusterID)+"\n")); err != nil {
		return err
	}
	if got := success.GetClusterId(); !bytes.Equal(got, clusterID) {
		return failf(exitNodeRefused, []string{"the kubeconfig was saved, but do not trust this node: it did not derive the cluster ID from the secrets it was sent"},
			"node %s reports cluster ID %s, but the secrets give %s", o.node.node, untrusted(hex.EncodeToString(got)), hex.EncodeToString(clusterID))
	}
	fmt.Fprintf(e.stderr, "cluster %q initialized\n  kubeconfig: %s\n  secrets:    %s (keep them safe: they derive every disk key)\n",
		o.name, dir.path(kubeconfigFileName), dir.path(secretsFileName))
	fmt.Fprintln(e.stdout, hex.EncodeToString(clusterID))
	return nil
}

// initStream is the receiving side of an Init call.
type initStream interface {
	Recv() (*initv1.InitResponse, error)
}

// followInit shows the node's progress until the stream ends with a result.
func followInit(e *env, stream initStream) (*initv1.InitSuccess, error) {
	start := e.now()
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, failf(exitNodeRefused, nil, "the node ended init without a result")
		}
		if err != nil {
			return nil, err
		}
		switch k := resp.GetKind().(type) {
		case *initv1.InitResponse_Progress:
			fmt.Fprintf(e.stderr, "[%5.0fs] %s\n", e.now().Sub(start).Seconds(), untrusted(k.Progress))
		case *initv1.InitResponse_Success:
			return k.Success, nil
		case *initv1.InitResponse_Failure:
			return nil, failf(exitNodeRefused, nil, "the node failed init: %s", untrusted(k.Failure.GetReason()))
		default:
			return nil, failf(exitNodeRefused, nil, "the node sent an init response of unknown kind")
		}
	}
}

func readInitSecret(path string) ([]byte, error) {
	b, err := readLimited(path, maxInitSecret)
	if err != nil {
		return nil, fail(exitLocal, fmt.Errorf("reading --init-secret-file: %w", err))
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, failf(exitLocal, nil, "--init-secret-file %s is empty", path)
	}
	return b, nil
}

// withHint adds a hint to an exitError (other errors pass unchanged).
func withHint(err error, hint string) error {
	var ee *exitError
	if errors.As(err, &ee) {
		ee.hints = append(ee.hints, hint)
	}
	return err
}

// shortHex shows the first 8 bytes of an identifier.
func shortHex(b []byte) string {
	if len(b) > 8 {
		return hex.EncodeToString(b[:8]) + "…"
	}
	return hex.EncodeToString(b)
}
