package atls

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// testTimeout bounds every wait of a test; handshakes in tests are far faster.
const testTimeout = 10 * time.Second

// insecureDevValidators builds the insecure-dev validator the only way
// production code can: from a policy document that allows it.
func insecureDevValidators(tb testing.TB) attestation.Validators {
	tb.Helper()
	pol, err := policy.Parse([]byte("version: 1\ninsecure-dev:\n  iUnderstandThisProvesNothing: true\n"))
	if err != nil {
		tb.Fatalf("parsing policy: %v", err)
	}
	v, err := insecuredev.NewInsecureValidator(pol.InsecureDev)
	if err != nil {
		tb.Fatalf("NewInsecureValidator: %v", err)
	}
	return mustValidators(tb, v)
}

func mustValidators(tb testing.TB, vs ...attestation.Validator) attestation.Validators {
	tb.Helper()
	reg, err := attestation.NewValidators(vs...)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return reg
}

// mutualInsecureDevConfig attests and verifies with insecure-dev.
func mutualInsecureDevConfig(tb testing.TB) Config {
	return Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(tb)}
}

func mustCredentials(tb testing.TB, cfg Config) *Credentials {
	tb.Helper()
	c, err := NewCredentials(cfg)
	if err != nil {
		tb.Fatalf("NewCredentials: %v", err)
	}
	return c
}

// recordingCredentials passes handshakes through and records their errors,
// so a test can inspect the failed check on the side that refused.
type recordingCredentials struct {
	*Credentials
	errs chan error
}

func newRecordingCredentials(tb testing.TB, cfg Config) *recordingCredentials {
	return &recordingCredentials{Credentials: mustCredentials(tb, cfg), errs: make(chan error, 64)}
}

func (r *recordingCredentials) record(err error) {
	if err == nil {
		return
	}
	select {
	case r.errs <- err:
	default: // a retrying client may fail more often than a test looks
	}
}

func (r *recordingCredentials) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := r.Credentials.ClientHandshake(ctx, authority, raw)
	r.record(err)
	return conn, ai, err
}

func (r *recordingCredentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := r.Credentials.ServerHandshake(raw)
	r.record(err)
	return conn, ai, err
}

func (r *recordingCredentials) Clone() credentials.TransportCredentials { return r }

// nextError waits for the next recorded handshake error.
func (r *recordingCredentials) nextError(tb testing.TB) error {
	tb.Helper()
	select {
	case err := <-r.errs:
		return err
	case <-time.After(testTimeout):
		tb.Fatal("no handshake error recorded")
		return nil
	}
}

// statusServer is a tiny status.v1 service that reports the verified peer:
// phase is the peer's variant (or "unverified"), last_error its warnings.
type statusServer struct {
	statusv1.UnimplementedStatusServiceServer
}

func (statusServer) Get(ctx context.Context, _ *statusv1.GetRequest) (*statusv1.GetResponse, error) {
	claims, ok := PeerClaims(ctx)
	if !ok {
		return &statusv1.GetResponse{Component: "atls-test", Phase: "unverified"}, nil
	}
	return &statusv1.GetResponse{Component: "atls-test", Phase: string(claims.Variant), LastError: strings.Join(claims.Warnings, "; ")}, nil
}

// testServer serves statusServer over attested TLS on 127.0.0.1.
type testServer struct {
	addr  string
	creds *recordingCredentials
}

// startTestServer starts a gRPC server with cfg; it stops at cleanup.
func startTestServer(tb testing.TB, cfg Config) *testServer {
	tb.Helper()
	creds := newRecordingCredentials(tb, cfg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listening: %v", err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	statusv1.RegisterStatusServiceServer(srv, statusServer{})
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(lis); err != nil {
			tb.Errorf("serving: %v", err)
		}
	})
	tb.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return &testServer{addr: lis.Addr().String(), creds: creds}
}

// testClient is a status.v1 client over attested TLS.
type testClient struct {
	conn   *grpc.ClientConn
	status statusv1.StatusServiceClient
	creds  *recordingCredentials
}

// dialTestClient creates a client with cfg; the connection closes at
// cleanup (or earlier with close).
func dialTestClient(tb testing.TB, addr string, cfg Config) *testClient {
	tb.Helper()
	creds := newRecordingCredentials(tb, cfg)
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		tb.Fatalf("grpc.NewClient: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return &testClient{conn: conn, status: statusv1.NewStatusServiceClient(conn), creds: creds}
}

// get does one RPC and returns the response and the server's claims as the
// client sees them.
func (c *testClient) get(ctx context.Context) (*statusv1.GetResponse, *attestation.Claims, error) {
	var p peer.Peer
	resp, err := c.status.Get(ctx, &statusv1.GetRequest{}, grpc.Peer(&p))
	if err != nil {
		return nil, nil, err
	}
	claims, _ := ClaimsFromPeer(&p)
	return resp, claims, nil
}

// handshakeOnce accepts one connection on 127.0.0.1 and runs the server
// handshake of cfg on it, without gRPC; the result arrives on the channel.
func handshakeOnce(tb testing.TB, cfg Config) (string, <-chan error) {
	tb.Helper()
	creds := mustCredentials(tb, cfg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listening: %v", err)
	}
	tb.Cleanup(func() { _ = lis.Close() })
	errs := make(chan error, 1)
	go func() {
		raw, err := lis.Accept()
		if err != nil {
			errs <- err
			return
		}
		conn, _, err := creds.ServerHandshake(raw)
		if err == nil {
			_ = conn.Close()
		}
		errs <- err
	}()
	return lis.Addr().String(), errs
}

// waitError waits for the result of handshakeOnce.
func waitError(tb testing.TB, errs <-chan error) error {
	tb.Helper()
	select {
	case err := <-errs:
		return err
	case <-time.After(testTimeout):
		tb.Fatal("handshake did not end")
		return nil
	}
}

// dialRawTLS plays a hand-written client: it completes only the TLS
// handshake and returns the connection and its exporter.
func dialRawTLS(tb testing.TB, addr string) (*tls.Conn, []byte) {
	tb.Helper()
	c := mustCredentials(tb, Config{Verifier: insecureDevValidators(tb)})
	conn, err := tls.Dial("tcp", addr, c.tlsConfig(false))
	if err != nil {
		tb.Fatalf("tls.Dial: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	st := conn.ConnectionState()
	exporter, err := st.ExportKeyingMaterial(exporterLabel, nil, exporterSize)
	if err != nil {
		tb.Fatalf("exporter: %v", err)
	}
	return conn, exporter
}

// otherSessionExporter completes a separate TLS session (in memory) with
// this package's TLS settings and returns its exporter: what a man in the
// middle holds of the session it relays from.
func otherSessionExporter(tb testing.TB) []byte {
	tb.Helper()
	c := mustCredentials(tb, Config{Verifier: insecureDevValidators(tb)})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(b, c.tlsConfig(true))
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	cli := tls.Client(a, c.tlsConfig(false))
	if err := cli.Handshake(); err != nil {
		tb.Fatalf("client handshake: %v", err)
	}
	if err := <-done; err != nil {
		tb.Fatalf("server handshake: %v", err)
	}
	st := cli.ConnectionState()
	exporter, err := st.ExportKeyingMaterial(exporterLabel, nil, exporterSize)
	if err != nil {
		tb.Fatalf("exporter: %v", err)
	}
	return exporter
}

// relayingIssuer is a man in the middle's issuer: asked for this session, it
// presents genuine evidence issued for another live TLS session, as a relay
// between the real attester and the victim would.
type relayingIssuer struct {
	tb   testing.TB
	role string
}

func (*relayingIssuer) Variant() attestation.Variant { return attestation.VariantInsecureDev }

func (r *relayingIssuer) Issue(ctx context.Context, _ []byte) (*attestationv1.Evidence, error) {
	return insecuredev.NewIssuer().Issue(ctx, bindingData([]byte(r.role), otherSessionExporter(r.tb)))
}

// capturingIssuer issues genuine evidence and keeps a copy: an eavesdropper
// on the attester's side.
type capturingIssuer struct {
	attestation.Issuer
	mu       sync.Mutex
	captured []*attestationv1.Evidence
}

func (c *capturingIssuer) Issue(ctx context.Context, userData []byte) (*attestationv1.Evidence, error) {
	ev, err := c.Issuer.Issue(ctx, userData)
	if err == nil {
		c.mu.Lock()
		c.captured = append(c.captured, ev)
		c.mu.Unlock()
	}
	return ev, err
}

// replayingIssuer presents evidence captured in an earlier session.
type replayingIssuer struct{ ev *attestationv1.Evidence }

func (*replayingIssuer) Variant() attestation.Variant { return attestation.VariantInsecureDev }

func (r *replayingIssuer) Issue(context.Context, []byte) (*attestationv1.Evidence, error) {
	return r.ev, nil
}

// fakeMislabellingIssuer labels a tpm report as insecure-dev evidence.
type fakeMislabellingIssuer struct{}

func (fakeMislabellingIssuer) Variant() attestation.Variant { return attestation.VariantInsecureDev }

func (fakeMislabellingIssuer) Issue(context.Context, []byte) (*attestationv1.Evidence, error) {
	return &attestationv1.Evidence{Variant: string(attestation.VariantInsecureDev), Report: &attestationv1.Evidence_Tpm{Tpm: []byte("not a quote")}}, nil
}

// fakeTPMValidator accepts nothing; it stands for a registry that holds
// only the tpm variant.
type fakeTPMValidator struct{}

func (fakeTPMValidator) Variant() attestation.Variant { return attestation.VariantTPM }

func (fakeTPMValidator) Validate(context.Context, *attestationv1.Evidence, []byte) (*attestation.Claims, error) {
	return nil, &attestation.CheckError{Variant: attestation.VariantTPM, Check: "fake-tpm-accepts-nothing"}
}

// fakeRejectingValidator refuses every insecure-dev evidence with one fixed
// check, so a test can follow the reason to the client.
type fakeRejectingValidator struct{}

var errFakeRejection = &attestation.CheckError{Variant: attestation.VariantInsecureDev, Check: "fake-check", Want: "approval", Got: "refusal"}

func (fakeRejectingValidator) Variant() attestation.Variant { return attestation.VariantInsecureDev }

func (fakeRejectingValidator) Validate(context.Context, *attestationv1.Evidence, []byte) (*attestation.Claims, error) {
	return nil, errFakeRejection
}

// fakeChallengeValidator stands for a TPM validator that trusts a key only
// after credential activation: it wraps the insecure-dev validator,
// challenges every evidence with a secret only fakeResponderIssuer can
// recover, and requires it before Validate passes. It proves nothing either.
type fakeChallengeValidator struct {
	attestation.Validator
}

// fakeEKKey is the "endorsement key" shared by the fake challenger and
// responder: the challenge is the secret XORed with it.
var fakeEKKey = []byte("fake endorsement key, 32 bytes!!")

func fakeSecret(userData []byte) []byte {
	m := hmac.New(sha256.New, []byte("fake verifier key"))
	m.Write(userData)
	return m.Sum(nil)
}

func xorBytes(a, b []byte) []byte {
	out := make([]byte, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] ^ b[i]
	}
	return out
}

func (fakeChallengeValidator) Challenge(_ context.Context, _ *attestationv1.Evidence, userData []byte) (*attestationv1.ActivationChallenge, error) {
	return &attestationv1.ActivationChallenge{CredentialBlob: xorBytes(fakeSecret(userData), fakeEKKey), EncryptedSecret: []byte("fake")}, nil
}

func (v fakeChallengeValidator) Validate(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error) {
	want, got := fakeSecret(userData), ev.GetTpmEndorsement().GetActivatedSecret()
	if !hmac.Equal(want, got) {
		return nil, &attestation.CheckError{Variant: attestation.VariantInsecureDev, Check: "activation", Want: attestation.Hex(want), Got: attestation.Hex(got)}
	}
	return v.Validator.Validate(ctx, ev, userData)
}

// fakeResponderIssuer issues insecure-dev evidence and answers the fake
// challenge; with wrongAnswer it answers garbage.
type fakeResponderIssuer struct {
	*insecuredev.Issuer
	wrongAnswer bool
}

func (r fakeResponderIssuer) Respond(_ context.Context, ch *attestationv1.ActivationChallenge) ([]byte, error) {
	secret := xorBytes(ch.GetCredentialBlob(), fakeEKKey)
	if r.wrongAnswer {
		secret[0] ^= 1
	}
	return secret, nil
}

var (
	_ attestation.Challenger = fakeChallengeValidator{}
	_ attestation.Responder  = fakeResponderIssuer{}
)
