package server

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/joinservice/internal/kube"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// cluster is what the server needs of Kubernetes (implemented over client-go).
type cluster interface {
	// CreateBootstrapToken makes a short-lived token for one node.
	CreateBootstrapToken(ctx context.Context, nodeName string) (kube.Token, error)
	// CACertHashes returns kubeadm's "sha256:<hex>" pins of the cluster CA.
	CACertHashes(ctx context.Context) ([]string, error)
	// NodeRegistered reports whether a Node of that name exists.
	NodeRegistered(ctx context.Context, nodeName string) (bool, error)
	// SignKubeletCSR returns a kubelet client certificate for nodeName; the
	// CSR must be for that node's identity and nothing else.
	SignKubeletCSR(ctx context.Context, nodeName string, csrPEM []byte) ([]byte, error)
}

// policySource names the policy in force for the audit log.
type policySource interface {
	PolicyName() string
}

// rejectionCounter counts refusals by stage and reason.
type rejectionCounter interface {
	Rejection(stage, reason string)
	Ticket(kind string)
}

// Options configure the server. Zero values are safe defaults.
type Options struct {
	// APIServerEndpoint is host:port of the Kubernetes API server.
	APIServerEndpoint string
	// KubernetesVersion is the cluster's version, e.g. "v1.37.2".
	KubernetesVersion string
	// DiskKeyGeneration is the generation new and returning disks get;
	// zero means keys.FirstGeneration.
	DiskKeyGeneration uint32
	// AllowControlPlaneJoins lets nodes join as control planes (they get the
	// master secret). Off by default: the role a node asks for is only as
	// trustworthy as the measurements that bind it.
	AllowControlPlaneJoins bool
	// AllowVariantsWithoutLatch accepts variants that have no cluster-ID
	// latch register (sev-snp without a vTPM, insecure-dev). Off by default:
	// without a latch a node could join twice in one boot.
	AllowVariantsWithoutLatch bool
	// CertificateKey is kubeadm's certificate key for control-plane joins.
	CertificateKey string
}

// Server implements join.v1.JoinService.
type Server struct {
	joinv1.UnimplementedJoinServiceServer

	secrets keys.KeyProvider
	cluster cluster
	policy  policySource
	metrics rejectionCounter
	log     *slog.Logger
	opts    Options
}

// New builds the server.
func New(secrets keys.KeyProvider, cl cluster, pol policySource, metrics rejectionCounter, log *slog.Logger, opts Options) *Server {
	if opts.DiskKeyGeneration == 0 {
		opts.DiskKeyGeneration = keys.FirstGeneration
	}
	return &Server{secrets: secrets, cluster: cl, policy: pol, metrics: metrics, log: log.With("component", "joinservice"), opts: opts}
}

// latchRegisters names, per variant, the measurement that holds the
// cluster-ID latch and its reset value.
var latchRegisters = map[attestation.Variant]struct {
	name  string
	reset []byte
}{
	attestation.VariantTPM: {"pcr[15]", make([]byte, 32)},
	attestation.VariantTDX: {"rtmr[3]", make([]byte, 48)},
}

// IssueJoinTicket implements join.v1.JoinService.
func (s *Server) IssueJoinTicket(ctx context.Context, req *joinv1.IssueJoinTicketRequest) (*joinv1.IssueJoinTicketResponse, error) {
	claims, err := s.peer(ctx)
	if err != nil {
		return nil, s.refuse(ctx, "join", req.GetDiskUuid(), req.GetNodeName(), nil, err)
	}
	if err := s.checkJoinRequest(req); err != nil {
		return nil, s.refuse(ctx, "join", req.GetDiskUuid(), req.GetNodeName(), claims, err)
	}
	if err := s.checkLatch(claims); err != nil {
		return nil, s.refuse(ctx, "join", req.GetDiskUuid(), req.GetNodeName(), claims, err)
	}
	resp, err := s.joinTicket(ctx, req)
	if err != nil {
		return nil, s.refuse(ctx, "join", req.GetDiskUuid(), req.GetNodeName(), claims, err)
	}
	s.metrics.Ticket("join")
	s.audit(ctx, "join", req.GetDiskUuid(), req.GetNodeName(), claims, "released", nil, "token_id", tokenID(resp.GetBootstrapToken()))
	return resp, nil
}

// IssueRejoinTicket implements join.v1.JoinService.
func (s *Server) IssueRejoinTicket(ctx context.Context, req *joinv1.IssueRejoinTicketRequest) (*joinv1.IssueRejoinTicketResponse, error) {
	claims, err := s.peer(ctx)
	if err != nil {
		return nil, s.refuse(ctx, "rejoin", req.GetDiskUuid(), "", nil, err)
	}
	if err := keys.CheckDiskUUID(req.GetDiskUuid()); err != nil {
		return nil, s.refuse(ctx, "rejoin", req.GetDiskUuid(), "", claims, invalid("disk-uuid", err))
	}
	// A rebooted node asks before it extends its latch; a node whose latch
	// is already set has its key and must not fetch another disk's.
	if err := s.checkLatch(claims); err != nil {
		return nil, s.refuse(ctx, "rejoin", req.GetDiskUuid(), "", claims, err)
	}
	secrets, err := s.secrets.ClusterSecrets(ctx)
	if err != nil {
		return nil, s.refuse(ctx, "rejoin", req.GetDiskUuid(), "", claims, internal("cluster-secrets", err))
	}
	defer secrets.Zero()
	diskKey, err := secrets.DiskKey(req.GetDiskUuid(), s.opts.DiskKeyGeneration)
	if err != nil {
		return nil, s.refuse(ctx, "rejoin", req.GetDiskUuid(), "", claims, internal("disk-key", err))
	}
	s.metrics.Ticket("rejoin")
	s.audit(ctx, "rejoin", req.GetDiskUuid(), "", claims, "released", nil)
	return &joinv1.IssueRejoinTicketResponse{
		DiskKey:           diskKey,
		DiskKeyGeneration: s.opts.DiskKeyGeneration,
		MeasurementSecret: bytes.Clone(secrets.MeasurementSecret),
	}, nil
}

func (s *Server) joinTicket(ctx context.Context, req *joinv1.IssueJoinTicketRequest) (*joinv1.IssueJoinTicketResponse, error) {
	secrets, err := s.secrets.ClusterSecrets(ctx)
	if err != nil {
		return nil, internal("cluster-secrets", err)
	}
	defer secrets.Zero()
	diskKey, err := secrets.DiskKey(req.GetDiskUuid(), s.opts.DiskKeyGeneration)
	if err != nil {
		return nil, internal("disk-key", err)
	}
	// The node name comes from the host (kernel command line, SMBIOS): a
	// second machine must not take over a registered node's identity.
	registered, err := s.cluster.NodeRegistered(ctx, req.GetNodeName())
	if err != nil {
		return nil, unavailable("node-name", fmt.Errorf("kubernetes: %w", err))
	}
	if registered {
		return nil, denied("node-name", fmt.Errorf("a Node named %q is already registered; delete it first if this machine replaces it", req.GetNodeName()))
	}
	hashes, err := s.cluster.CACertHashes(ctx)
	if err != nil {
		return nil, unavailable("ca-cert-hashes", err)
	}
	// The certificate before the token: if the signer refuses, no token is
	// minted.
	cert, err := s.cluster.SignKubeletCSR(ctx, req.GetNodeName(), req.GetKubeletCsr())
	if err != nil {
		return nil, csrError(err)
	}
	token, err := s.cluster.CreateBootstrapToken(ctx, req.GetNodeName())
	if err != nil {
		return nil, unavailable("bootstrap-token", err)
	}
	resp := &joinv1.IssueJoinTicketResponse{
		DiskKey:                    diskKey,
		DiskKeyGeneration:          s.opts.DiskKeyGeneration,
		MeasurementSalt:            bytes.Clone(secrets.MeasurementSalt),
		MeasurementSecret:          bytes.Clone(secrets.MeasurementSecret),
		ApiServerEndpoint:          s.opts.APIServerEndpoint,
		BootstrapToken:             token.Reveal(),
		BootstrapTokenExpiry:       token.Expires.Unix(),
		DiscoveryTokenCaCertHashes: hashes,
		KubeletCertificate:         cert,
		KubernetesVersion:          s.opts.KubernetesVersion,
	}
	if req.GetRole() == joinv1.Role_ROLE_CONTROL_PLANE {
		resp.ControlPlane = &joinv1.ControlPlaneJoin{
			CertificateKey: s.opts.CertificateKey,
			MasterSecret:   bytes.Clone(secrets.MasterSecret),
			MasterSalt:     bytes.Clone(secrets.MasterSalt),
		}
	}
	return resp, nil
}

func (s *Server) checkJoinRequest(req *joinv1.IssueJoinTicketRequest) error {
	if err := keys.CheckDiskUUID(req.GetDiskUuid()); err != nil {
		return invalid("disk-uuid", err)
	}
	switch req.GetRole() {
	case joinv1.Role_ROLE_WORKER:
	case joinv1.Role_ROLE_CONTROL_PLANE:
		if !s.opts.AllowControlPlaneJoins {
			return denied("role", fmt.Errorf("control-plane joins are disabled on this join service"))
		}
	default:
		return invalid("role", fmt.Errorf("want ROLE_WORKER or ROLE_CONTROL_PLANE, got %v", req.GetRole()))
	}
	// The CSR is checked here, before any key is derived or any Kubernetes
	// call is made, so a request for another identity costs nothing.
	if _, err := kube.CheckKubeletCSR(req.GetNodeName(), req.GetKubeletCsr()); err != nil {
		return csrError(err)
	}
	return nil
}

// checkLatch refuses a node whose cluster-ID latch is not at its reset value:
// it has already received a cluster's secrets in this boot.
func (s *Server) checkLatch(claims *attestation.Claims) error {
	latch, ok := latchRegisters[claims.Variant]
	if !ok {
		if s.opts.AllowVariantsWithoutLatch {
			return nil
		}
		return denied("latch", fmt.Errorf("variant %s has no cluster-ID latch register; set AllowVariantsWithoutLatch to accept it", claims.Variant))
	}
	got, ok := claims.Measurements[latch.name]
	if !ok {
		return denied("latch", fmt.Errorf("%s not in the verified measurements", latch.name))
	}
	if !bytes.Equal(got, latch.reset) {
		return &attestation.CheckError{Variant: claims.Variant, Check: "latch", Want: latch.name + " = " + attestation.Hex(latch.reset), Got: attestation.Hex(got),
			Err: errors.New("node already holds a cluster's secrets in this boot")}
	}
	return nil
}

// peer returns the caller's verified claims. Each attested connection gets
// one ticket: the claims (and the latch in them) are a snapshot of the
// handshake, so a second call on the same connection could collect another
// ticket after the node extended its latch.
func (s *Server) peer(ctx context.Context) (*attestation.Claims, error) {
	claims, ok := atls.PeerClaims(ctx)
	if !ok {
		// The credentials make this impossible; refusing is the safe answer.
		return nil, &requestError{check: "peer", code: codes.Unauthenticated, err: errors.New("no verified peer attestation on this connection")}
	}
	if !atls.FirstUse(ctx) {
		return nil, denied("session", errors.New("one ticket per attested connection: connect again to attest again"))
	}
	return claims, nil
}

// refuse counts, audits and converts an error into a gRPC status.
func (s *Server) refuse(ctx context.Context, kind, untrustedDiskUUID, untrustedNode string, claims *attestation.Claims, err error) error {
	check, code := classify(err)
	s.metrics.Rejection("request", check)
	s.audit(ctx, kind, untrustedDiskUUID, untrustedNode, claims, "refused", err)
	return status.Errorf(code, "%s refused: %s: %v", kind, check, err)
}

// audit writes the one line per decision: who, what, under which policy.
// Never key material: the token's ID at most, never its secret.
func (s *Server) audit(ctx context.Context, kind, untrustedDiskUUID, untrustedNode string, claims *attestation.Claims, decision string, err error, extra ...any) {
	attrs := []any{
		"audit", true,
		"kind", kind,
		"decision", decision,
		"node", untrustedNode,
		"disk_uuid", untrustedDiskUUID,
		"policy", s.policy.PolicyName(),
	}
	if claims != nil {
		attrs = append(attrs, "variant", string(claims.Variant), "hardware_id", hex.EncodeToString(claims.HardwareID))
		if len(claims.Warnings) > 0 {
			attrs = append(attrs, "policy_warnings", claims.Warnings)
		}
	}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	attrs = append(attrs, extra...)
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "join service decision", attrs...)
}

// tokenID is the public half of a bootstrap token, the only part that may be
// logged.
func tokenID(token string) string {
	id, _, _ := strings.Cut(token, ".")
	return id
}
