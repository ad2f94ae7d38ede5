package atls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/ratelimit"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// DefaultHandshakeTimeout bounds a handshake when Config.HandshakeTimeout is
// zero. A TPM quote or a TDX quote takes well under a second; the rest is
// network.
const DefaultHandshakeTimeout = 30 * time.Second

// Config says how this side attests and what it requires of the peer. The
// zero value is refused: a side must attest, verify, or both.
type Config struct {
	// Issuer attests this side. Nil: this side does not attest and sends
	// no_evidence (the operator's CLI). If a peer's validator challenges the
	// evidence, Issuer must implement attestation.Responder.
	Issuer attestation.Issuer
	// Verifier verifies the peer's evidence: an attestation.Validators
	// registry, or anything that dispatches like one (the join service's
	// policy-reloading verifier). Required unless
	// AcceptUnattestedPeer is set.
	Verifier Verifier
	// AcceptUnattestedPeer lets a peer through without verifying it at all:
	// for a node's server that the operator's CLI calls (init, recovery).
	// Its evidence, if any, is ignored and PeerClaims reports nothing. It
	// excludes Validators, so that a service never has to tell verified from
	// unverified peers apart.
	AcceptUnattestedPeer bool
	// HandshakeTimeout bounds the TLS handshake and the attestation exchange
	// together. Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Log, when set, receives warnings about failed and refused server
	// handshakes. A refused or broken handshake reaches the peer only as a
	// verdict or a closed connection; the server's own reason is logged
	// here. Each kind of warning is written at most once per
	// logInterval with its details; one more line per interval counts the
	// rest, so abusive peers cannot flood the log.
	Log *slog.Logger
	// Limits bound what unauthenticated peers cost this side as a server:
	// connections, connection rate, frame memory, and quotes for peers that
	// did not attest. The zero value is the safe default.
	Limits Limits
}

// logInterval is how often a server writes each kind of handshake warning
// at most.
const logInterval = time.Minute

// Verifier checks a peer's evidence. attestation.Validators implements it.
// Validate's error contract is attestation.Validator's; Challenge returns nil
// when the evidence needs no activation round.
type Verifier interface {
	Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error)
	Challenge(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestationv1.ActivationChallenge, error)
}

var _ Verifier = attestation.Validators(nil)

// isEmpty reports whether v verifies nothing: nil, or an empty registry.
func isEmpty(v Verifier) bool {
	if v == nil {
		return true
	}
	reg, ok := v.(attestation.Validators)
	return ok && len(reg) == 0
}

// Credentials are gRPC transport credentials for attested TLS. The same
// value serves as client and as server credentials.
type Credentials struct {
	issuer           attestation.Issuer
	verifier         Verifier
	acceptUnattested bool
	timeout          time.Duration
	cert             tls.Certificate
	guard            *guard            // shared by clones
	warn             *ratelimit.Logger // shared by clones
}

var (
	_ credentials.TransportCredentials = (*Credentials)(nil)
	_ credentials.AuthInfo             = (*AuthInfo)(nil)
)

// NewCredentials checks cfg and generates this side's ephemeral certificate.
func NewCredentials(cfg Config) (*Credentials, error) {
	switch {
	case cfg.Issuer == nil && cfg.AcceptUnattestedPeer:
		return nil, errors.New("atls: config neither attests nor verifies: set Config.Issuer, or Config.Verifier instead of AcceptUnattestedPeer")
	case isEmpty(cfg.Verifier) && !cfg.AcceptUnattestedPeer:
		return nil, errors.New("atls: no verifier: set Config.Verifier to verify the peer, or Config.AcceptUnattestedPeer for a peer that need not attest (the CLI)")
	case !isEmpty(cfg.Verifier) && cfg.AcceptUnattestedPeer:
		return nil, errors.New("atls: Config.Verifier and Config.AcceptUnattestedPeer exclude each other: set one")
	case cfg.HandshakeTimeout < 0:
		return nil, fmt.Errorf("atls: Config.HandshakeTimeout is negative (%v): set a positive duration, or zero for %v", cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	}
	limits, err := cfg.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	reg, _ := cfg.Verifier.(attestation.Validators)
	for variant, v := range reg {
		if v == nil || v.Variant() != variant {
			return nil, fmt.Errorf("atls: Config.Verifier[%q] is not a validator of that variant: build it with attestation.NewValidators", variant)
		}
	}
	cert, err := newCertificate()
	if err != nil {
		return nil, fmt.Errorf("atls: %w", err)
	}
	c := &Credentials{
		issuer:           cfg.Issuer,
		verifier:         cfg.Verifier,
		acceptUnattested: cfg.AcceptUnattestedPeer,
		timeout:          cfg.HandshakeTimeout,
		cert:             cert,
		guard:            newGuard(limits),
		warn:             ratelimit.NewLogger(cfg.Log, logInterval),
	}
	if c.timeout == 0 {
		c.timeout = DefaultHandshakeTimeout
	}
	return c, nil
}

// ClientHandshake runs the TLS handshake and the attestation exchange as the
// client, under ctx and the handshake timeout. The authority is not checked:
// the peer's attestation is the trust anchor, not its name.
func (c *Credentials) ClientHandshake(ctx context.Context, _ string, rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn := tls.Client(rawConn, c.tlsConfig(false))
	return c.handshake(ctx, conn, roleClient, nil, nil)
}

// ServerHandshake runs the TLS handshake and the attestation exchange as the
// server, under the handshake timeout. Before any TLS work it admits the
// connection under Config.Limits (per-IP rate, unauthenticated connections
// in total and per IP); a refused connection is closed at once. Frames
// read from the peer are charged to the frame-memory budget until the
// handshake ends. A peer accepted unattested keeps its connection slot
// until its connection closes, and the evidence issued for it takes a
// quote token first.
func (c *Credentials) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ip := peerIP(rawConn.RemoteAddr())
	release, err := c.guard.admit(ip)
	if err != nil {
		// The refusal is what matters; a close error adds nothing.
		_ = rawConn.Close()
		c.warn.Warn("attested TLS connection refused", "peer", ip, "error", err.Error())
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	mem := &charge{b: c.guard.memory}
	defer mem.release()
	var beforeIssue func() error
	if c.acceptUnattested {
		beforeIssue = func() error { return c.guard.allowQuote(ip) }
	}
	conn := tls.Server(rawConn, c.tlsConfig(true))
	secured, info, err := c.handshake(ctx, conn, roleServer, mem, beforeIssue)
	if err != nil {
		release()
		c.warn.Warn("attested TLS handshake failed", "peer", rawConn.RemoteAddr().String(), "error", err.Error())
		return nil, nil, err
	}
	if c.acceptUnattested {
		return &releasingConn{Conn: secured, release: release}, info, nil
	}
	release()
	return secured, info, nil
}

// handshake drives one connection to the end of the attestation exchange.
// On any error the connection is closed.
// On a server, mem charges the peer's frames and beforeIssue gates this
// side's evidence (both nil on a client).
func (c *Credentials) handshake(ctx context.Context, conn *tls.Conn, role string, mem *charge, beforeIssue func() error) (_ net.Conn, _ credentials.AuthInfo, err error) {
	// The deadline interrupts blocked reads and writes; AfterFunc does the
	// same when the caller cancels ctx earlier.
	deadline, _ := ctx.Deadline()
	if err := conn.NetConn().SetDeadline(deadline); err != nil {
		return nil, nil, fmt.Errorf("atls: setting handshake deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		// An error here means the connection is already unusable; the
		// blocked call reports it.
		_ = conn.NetConn().SetDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			// ctx ended: say so, whatever the interrupted call reported.
			if err == nil {
				err = fmt.Errorf("atls: %s handshake: %w", role, ctx.Err())
			} else if !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
		}
		if err != nil {
			// The handshake error is what matters; a close error on a
			// refused connection adds nothing.
			_ = conn.Close()
		}
	}()

	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("atls: %s handshake: %w", role, &tlsError{err})
	}
	state := conn.ConnectionState()
	if state.Version != tls.VersionTLS13 {
		// Impossible with MinVersion TLS 1.3; checked because the exporter
		// binding relies on it.
		return nil, nil, fmt.Errorf("atls: %s handshake: %w", role, &tlsError{fmt.Errorf("negotiated TLS version %#x, want TLS 1.3", state.Version)})
	}
	exporter, err := state.ExportKeyingMaterial(exporterLabel, nil, exporterSize)
	if err != nil {
		return nil, nil, fmt.Errorf("atls: %s handshake: exporting keying material: %w", role, err)
	}
	x := &exchange{conn: conn, exporter: exporter, issuer: c.issuer, verifier: c.verifier, acceptUnattested: c.acceptUnattested, mem: mem, beforeIssue: beforeIssue}
	var claims *attestation.Claims
	if role == roleClient {
		if err := x.attest(ctx, roleClient); err != nil {
			return nil, nil, err
		}
		if claims, err = x.verify(ctx, roleServer); err != nil {
			return nil, nil, err
		}
	} else {
		if claims, err = x.verify(ctx, roleClient); err != nil {
			return nil, nil, err
		}
		if err := x.attest(ctx, roleServer); err != nil {
			return nil, nil, err
		}
	}
	if err := conn.NetConn().SetDeadline(time.Time{}); err != nil {
		return nil, nil, fmt.Errorf("atls: clearing handshake deadline: %w", err)
	}
	return conn, &AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		PeerClaims:     claims,
	}, nil
}

// Info describes the protocol to gRPC.
func (c *Credentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: authType}
}

// Clone returns credentials that share the configuration and certificate.
func (c *Credentials) Clone() credentials.TransportCredentials {
	clone := *c
	return &clone
}

// OverrideServerName does nothing: names are not checked.
//
// Deprecated: required by credentials.TransportCredentials only.
func (c *Credentials) OverrideServerName(string) error { return nil }

const authType = "atls"

// AuthInfo is the gRPC AuthInfo of an attested TLS connection.
type AuthInfo struct {
	credentials.CommonAuthInfo
	// PeerClaims are the peer's verified claims. Nil when this side accepted
	// the peer without verifying it (Config.AcceptUnattestedPeer).
	PeerClaims *attestation.Claims

	used atomic.Bool
}

// FirstUse reports true exactly once per attested connection, the first
// time it is called for it. Claims are a snapshot taken at the handshake: a
// service that releases something once per attestation (a join ticket)
// calls FirstUse so that a long-lived connection cannot collect a second
// release after the peer's state (its latch) changed.
func FirstUse(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	ai, ok := p.AuthInfo.(*AuthInfo)
	return ok && ai.used.CompareAndSwap(false, true)
}

// AuthType returns "atls".
func (*AuthInfo) AuthType() string { return authType }

// PeerClaims returns the verified claims of the peer of a server handler's
// call. It reports false when the peer was not verified.
func PeerClaims(ctx context.Context) (*attestation.Claims, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	return ClaimsFromPeer(p)
}

// ClaimsFromPeer returns the verified claims of a connection's peer, for
// clients that collect it with the grpc.Peer call option. It reports false
// when the peer was not verified or the connection is not attested TLS.
func ClaimsFromPeer(p *peer.Peer) (*attestation.Claims, bool) {
	if p == nil {
		return nil, false
	}
	ai, ok := p.AuthInfo.(*AuthInfo)
	if !ok || ai.PeerClaims == nil {
		return nil, false
	}
	return ai.PeerClaims, true
}

// tlsConfig is TLS 1.3 only, with this side's ephemeral certificate and no
// name or chain verification: the attestation exchange that follows is the
// trust anchor. Session resumption is off so every connection runs a full
// handshake and a fresh attestation.
func (c *Credentials) tlsConfig(server bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.cert},
		NextProtos:   []string{"h2"},
		// Certificates are not trusted; verifyPeerCertificate only checks
		// that the peer's one certificate is well-formed and self-signed.
		InsecureSkipVerify:    true, //nolint:gosec // see above
		VerifyPeerCertificate: verifyPeerCertificate,
	}
	if server {
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.SessionTicketsDisabled = true
	}
	return cfg
}

// newCertificate generates a self-signed ECDSA P-256 certificate. Its dates
// span all time on purpose: nothing trusts it, so an expiry would only break
// long-running daemons.
func newCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "cloister-atls"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// verifyPeerCertificate accepts exactly one self-signed ECDSA P-256
// certificate. It is a sanity check, not trust: TLS already proved the peer
// holds the key, and the attestation binds the session.
func verifyPeerCertificate(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	if len(rawCerts) != 1 {
		return fmt.Errorf("peer sent %d certificates, want 1", len(rawCerts))
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return fmt.Errorf("parsing peer certificate: %w", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return fmt.Errorf("peer certificate key is %T, want ECDSA P-256", cert.PublicKey)
	}
	// A self-signed non-CA certificate fails CheckSignatureFrom(cert);
	// CheckSignature checks the self-signature directly.
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return fmt.Errorf("peer certificate is not self-signed: %w", err)
	}
	return nil
}
