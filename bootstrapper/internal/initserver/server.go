package initserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodelock"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
	"github.com/cloister-dev/cloister/internal/keys"
	initv1 "github.com/cloister-dev/cloister/proto/init/v1"
)

// DiskKeyGeneration is the generation of the first control plane's own disk
// key, the join service's default generation.
const DiskKeyGeneration = keys.FirstGeneration

// RunFunc runs the provisioning steps after the lock, sending progress
// lines (the Provisioner's Run, built with the line sink).
type RunFunc func(ctx context.Context, progress func(line string)) (*provision.Result, error)

// Options are the server's settings.
type Options struct {
	// InitSecretHash is SHA-256 of the init secret; nil accepts any Init
	// (the CLI's attestation check is then the only gate).
	InitSecretHash []byte
	// ControlPlaneEndpoint is a stable host:port for the control planes, if
	// any (kubeadm's controlPlaneEndpoint).
	ControlPlaneEndpoint string
	// Rand draws the kubeadm certificate key (default crypto/rand.Reader).
	Rand io.Reader
	// OnDone is called once the init path ended, with Run's error.
	OnDone func(err error)
}

// Server implements initv1.InitServiceServer.
type Server struct {
	initv1.UnimplementedInitServiceServer

	lock     *nodelock.Lock
	store    *nodestate.Store
	diskUUID string
	nodeName string
	run      RunFunc
	log      *slog.Logger
	opts     Options
}

var _ initv1.InitServiceServer = (*Server)(nil)

// New returns the init server of the node whose state disk is diskUUID.
func New(lock *nodelock.Lock, store *nodestate.Store, diskUUID, nodeName string, run RunFunc, log *slog.Logger, opts Options) (*Server, error) {
	if lock == nil || store == nil || run == nil || log == nil {
		return nil, errors.New("initserver: New needs the node lock, the state store, a RunFunc and a logger")
	}
	if err := keys.CheckDiskUUID(diskUUID); err != nil {
		return nil, fmt.Errorf("initserver: disk UUID: %w", err)
	}
	if err := kubeadm.CheckNodeName(nodeName); err != nil {
		return nil, fmt.Errorf("initserver: node name: %w", err)
	}
	if opts.InitSecretHash != nil && len(opts.InitSecretHash) != sha256.Size {
		return nil, fmt.Errorf("initserver: Options.InitSecretHash: want %d bytes (SHA-256), got %d", sha256.Size, len(opts.InitSecretHash))
	}
	if opts.ControlPlaneEndpoint != "" {
		if err := kubeadm.CheckEndpoint(opts.ControlPlaneEndpoint); err != nil {
			return nil, fmt.Errorf("initserver: Options.ControlPlaneEndpoint: %w", err)
		}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.OnDone == nil {
		opts.OnDone = func(error) {}
	}
	return &Server{lock: lock, store: store, diskUUID: diskUUID, nodeName: nodeName, run: run, log: log.With("component", "initserver"), opts: opts}, nil
}

// Init implements initv1.InitServiceServer.
func (s *Server) Init(req *initv1.InitRequest, stream initv1.InitService_InitServer) error {
	in, err := s.check(req)
	if err != nil {
		s.log.Warn("init refused", "error", err)
		return err
	}
	defer in.Zero()
	err = s.lock.Acquire(nodestate.PathInit, func() error { return provision.SaveInit(s.store.Dir(), in) })
	if errors.Is(err, nodelock.ErrTaken) {
		return status.Errorf(codes.FailedPrecondition, "node is no longer waiting for init: %v", err)
	}
	if err != nil {
		s.log.Error("taking the node lock for init", "error", err)
		return status.Errorf(codes.Internal, "taking the node lock: %v", err)
	}
	s.log.Info("node locked for init", "node", s.nodeName, "disk_uuid", s.diskUUID)
	send := func(resp *initv1.InitResponse) {
		// The operator may have gone; the node goes on regardless.
		if err := stream.Send(resp); err != nil {
			s.log.Warn("sending init progress", "error", err)
		}
	}
	send(progress("node locked for init: this node becomes the first control plane"))
	// The provisioning outlives the call: a CLI that disconnects must not
	// leave the node half-initialized. A restart resumes it anyway.
	res, err := s.run(context.WithoutCancel(stream.Context()), func(line string) { send(progress(line)) })
	defer s.opts.OnDone(err) // after the result is sent
	if err != nil {
		send(&initv1.InitResponse{Kind: &initv1.InitResponse_Failure{Failure: &initv1.InitFailure{Reason: err.Error()}}})
		return nil
	}
	send(&initv1.InitResponse{Kind: &initv1.InitResponse_Success{Success: &initv1.InitSuccess{Kubeconfig: res.Kubeconfig, ClusterId: res.ClusterID}}})
	return nil
}

func progress(line string) *initv1.InitResponse {
	return &initv1.InitResponse{Kind: &initv1.InitResponse_Progress{Progress: line}}
}

// check validates an untrusted request in the order the package doc gives,
// and derives the inputs of the init path. Nothing is written.
func (s *Server) check(req *initv1.InitRequest) (*provision.InitInputs, error) {
	if h := s.lock.Holder(); h != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "node already took the %s path", h)
	}
	if ph := s.store.State().Phase; ph != nodestate.Fresh {
		return nil, status.Errorf(codes.FailedPrecondition, "node is %s, not waiting for init", ph)
	}
	if s.opts.InitSecretHash != nil {
		got := sha256.Sum256(req.GetInitSecret())
		if subtle.ConstantTimeCompare(got[:], s.opts.InitSecretHash) != 1 {
			return nil, status.Error(codes.PermissionDenied, "init secret: does not match the node's configuration")
		}
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{
		{"master_secret", req.GetMasterSecret()},
		{"master_salt", req.GetMasterSalt()},
		{"measurement_secret", req.GetMeasurementSecret()},
		{"measurement_salt", req.GetMeasurementSalt()},
	} {
		if len(f.b) != keys.SecretSize {
			return nil, status.Errorf(codes.InvalidArgument, "%s: want %d bytes, got %d", f.name, keys.SecretSize, len(f.b))
		}
	}
	endpoint := s.opts.ControlPlaneEndpoint
	if ep := req.GetControlPlaneEndpoint(); ep != "" {
		endpoint = ep
	}
	certKey := make([]byte, 32)
	if _, err := io.ReadFull(s.opts.Rand, certKey); err != nil {
		return nil, status.Errorf(codes.Internal, "drawing the certificate key: %v", err)
	}
	kc := kubeadm.Init{
		NodeName:             s.nodeName,
		ClusterName:          req.GetClusterName(),
		KubernetesVersion:    req.GetKubernetesVersion(),
		CertificateKey:       hex.EncodeToString(certKey),
		ControlPlaneEndpoint: endpoint,
	}
	if err := kc.Validate(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	secrets := &keys.ClusterSecrets{
		MasterSecret:      keys.Secret(clone(req.GetMasterSecret())),
		MasterSalt:        clone(req.GetMasterSalt()),
		MeasurementSecret: keys.Secret(clone(req.GetMeasurementSecret())),
		MeasurementSalt:   clone(req.GetMeasurementSalt()),
	}
	diskKey, err := secrets.DiskKey(s.diskUUID, DiskKeyGeneration)
	if err != nil {
		secrets.Zero()
		return nil, status.Errorf(codes.Internal, "deriving the disk key: %v", err)
	}
	return &provision.InitInputs{Secrets: secrets, DiskKey: diskKey, DiskKeyGeneration: DiskKeyGeneration, Kubeadm: kc}, nil
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
