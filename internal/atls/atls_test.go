package atls

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	atlsv1 "github.com/cloister-dev/cloister/proto/atls/v1"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestNewCredentialsRefusesUnsafeConfig(t *testing.T) {
	validators := insecureDevValidators(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "zero config neither attests nor verifies", cfg: Config{}},
		{name: "issuer without validators and without AcceptUnattestedPeer", cfg: Config{Issuer: insecuredev.NewIssuer()}},
		{name: "AcceptUnattestedPeer without issuer", cfg: Config{AcceptUnattestedPeer: true}},
		{name: "validators and AcceptUnattestedPeer together", cfg: Config{Issuer: insecuredev.NewIssuer(), Verifier: validators, AcceptUnattestedPeer: true}},
		{name: "negative handshake timeout", cfg: Config{Verifier: validators, HandshakeTimeout: -time.Second}},
		{name: "validator registered under another variant", cfg: Config{Verifier: attestation.Validators{attestation.VariantTPM: validators[attestation.VariantInsecureDev]}}},
		{name: "nil validator", cfg: Config{Verifier: attestation.Validators{attestation.VariantTPM: nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewCredentials(tt.cfg); err == nil {
				t.Fatal("NewCredentials accepted the config")
			}
		})
	}
	for name, cfg := range map[string]Config{
		"mutual":                   {Issuer: insecuredev.NewIssuer(), Verifier: validators},
		"verify-only client":       {Verifier: validators},
		"attest-only server (CLI)": {Issuer: insecuredev.NewIssuer(), AcceptUnattestedPeer: true},
	} {
		if _, err := NewCredentials(cfg); err != nil {
			t.Errorf("NewCredentials(%s): %v", name, err)
		}
	}
}

func TestBindingData(t *testing.T) {
	exporter := bytes.Repeat([]byte{7}, exporterSize)
	want := sha256.Sum256(append([]byte("cloister-atls-v1client"), exporter...))
	if got := bindingData([]byte(roleClient), exporter); !bytes.Equal(got, want[:]) {
		t.Errorf("bindingData(client) = %x, want %x", got, want)
	}
	if bytes.Equal(bindingData([]byte(roleClient), exporter), bindingData([]byte(roleServer), exporter)) {
		t.Error("client and server bindings are equal: evidence could be reflected")
	}
	if n := len(bindingData([]byte(roleServer), exporter)); n > attestation.MaxUserData {
		t.Errorf("binding is %d bytes, more than attestation.MaxUserData", n)
	}
}

func TestMutualInsecureDevRoundTrip(t *testing.T) {
	srv := startTestServer(t, mutualInsecureDevConfig(t))
	cli := dialTestClient(t, srv.addr, mutualInsecureDevConfig(t))
	resp, serverClaims, err := cli.get(testContext(t))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if resp.GetPhase() != string(attestation.VariantInsecureDev) || resp.GetLastError() != insecuredev.Warning {
		t.Errorf("server saw client claims (variant %q, warnings %q), want insecure-dev with its warning", resp.GetPhase(), resp.GetLastError())
	}
	if serverClaims == nil || serverClaims.Variant != attestation.VariantInsecureDev {
		t.Errorf("client saw server claims %+v, want insecure-dev", serverClaims)
	}
	// A second RPC reuses the verified connection.
	if _, _, err := cli.get(testContext(t)); err != nil {
		t.Fatalf("second Get: %v", err)
	}
}

func TestVerifyOnlyClientInsecureDev(t *testing.T) {
	srv := startTestServer(t, Config{Issuer: insecuredev.NewIssuer(), AcceptUnattestedPeer: true})
	cli := dialTestClient(t, srv.addr, Config{Verifier: insecureDevValidators(t)})
	resp, serverClaims, err := cli.get(testContext(t))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if resp.GetPhase() != "unverified" {
		t.Errorf("server saw client as %q, want unverified", resp.GetPhase())
	}
	if serverClaims == nil || serverClaims.Variant != attestation.VariantInsecureDev {
		t.Errorf("client saw server claims %+v, want insecure-dev", serverClaims)
	}
}

func TestAttestingClientIgnoredByServerThatAcceptsUnattested(t *testing.T) {
	srv := startTestServer(t, Config{Issuer: insecuredev.NewIssuer(), AcceptUnattestedPeer: true})
	cli := dialTestClient(t, srv.addr, mutualInsecureDevConfig(t))
	resp, _, err := cli.get(testContext(t))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if resp.GetPhase() != "unverified" {
		t.Errorf("server reports client as %q, want unverified (evidence ignored, not verified)", resp.GetPhase())
	}
}

// captureSession runs one legitimate mutual session and returns the client's
// and the server's evidence, as an eavesdropper on both sides would see it.
func captureSession(t *testing.T) (clientEv, serverEv *attestationv1.Evidence) {
	t.Helper()
	serverIssuer := &capturingIssuer{Issuer: insecuredev.NewIssuer()}
	clientIssuer := &capturingIssuer{Issuer: insecuredev.NewIssuer()}
	srv := startTestServer(t, Config{Issuer: serverIssuer, Verifier: insecureDevValidators(t)})
	cli := dialTestClient(t, srv.addr, Config{Issuer: clientIssuer, Verifier: insecureDevValidators(t)})
	if _, _, err := cli.get(testContext(t)); err != nil {
		t.Fatalf("capturing session: %v", err)
	}
	if err := cli.conn.Close(); err != nil {
		t.Fatalf("closing: %v", err)
	}
	if len(clientIssuer.captured) != 1 || len(serverIssuer.captured) != 1 {
		t.Fatalf("captured %d client and %d server evidences, want 1 each", len(clientIssuer.captured), len(serverIssuer.captured))
	}
	return clientIssuer.captured[0], serverIssuer.captured[0]
}

func TestAttacksRefused(t *testing.T) {
	capturedClientEv, capturedServerEv := captureSession(t)
	validators := insecureDevValidators(t)
	tests := []struct {
		name      string
		server    Config
		client    Config
		refusedBy string // the side that must refuse: "server" or "client"
		wantCheck string
		wantErr   error
	}{
		{
			name:      "client evidence relayed from another TLS session",
			server:    mutualInsecureDevConfig(t),
			client:    Config{Issuer: &relayingIssuer{tb: t, role: roleClient}, Verifier: validators},
			refusedBy: roleServer, wantCheck: "binding",
		},
		{
			name:      "client evidence replayed from an earlier session",
			server:    mutualInsecureDevConfig(t),
			client:    Config{Issuer: &replayingIssuer{ev: capturedClientEv}, Verifier: validators},
			refusedBy: roleServer, wantCheck: "binding",
		},
		{
			name:      "server evidence relayed from another TLS session",
			server:    Config{Issuer: &relayingIssuer{tb: t, role: roleServer}, Verifier: validators},
			client:    mutualInsecureDevConfig(t),
			refusedBy: roleClient, wantCheck: "binding",
		},
		{
			name:      "server evidence replayed from an earlier session",
			server:    Config{Issuer: &replayingIssuer{ev: capturedServerEv}, AcceptUnattestedPeer: true},
			client:    Config{Verifier: validators},
			refusedBy: roleClient, wantCheck: "binding",
		},
		{
			name:      "client evidence of a variant the server does not accept",
			server:    Config{Issuer: insecuredev.NewIssuer(), Verifier: mustValidators(t, fakeTPMValidator{})},
			client:    mutualInsecureDevConfig(t),
			refusedBy: roleServer, wantErr: attestation.ErrWrongVariant,
		},
		{
			name:      "client evidence labelled insecure-dev carrying a tpm report",
			server:    mutualInsecureDevConfig(t),
			client:    Config{Issuer: fakeMislabellingIssuer{}, Verifier: validators},
			refusedBy: roleServer, wantErr: attestation.ErrWrongVariant,
		},
		{
			name:      "server evidence of a variant the client does not accept",
			server:    Config{Issuer: insecuredev.NewIssuer(), AcceptUnattestedPeer: true},
			client:    Config{Verifier: mustValidators(t, fakeTPMValidator{})},
			refusedBy: roleClient, wantErr: attestation.ErrWrongVariant,
		},
		{
			name:      "unattested client when the server requires attestation",
			server:    mutualInsecureDevConfig(t),
			client:    Config{Verifier: validators},
			refusedBy: roleServer, wantErr: ErrUnattestedPeer,
		},
		{
			name:      "fake challenge answered wrongly",
			server:    Config{Issuer: insecuredev.NewIssuer(), Verifier: mustValidators(t, fakeChallengeValidator{validators[attestation.VariantInsecureDev]})},
			client:    Config{Issuer: fakeResponderIssuer{Issuer: insecuredev.NewIssuer(), wrongAnswer: true}, Verifier: validators},
			refusedBy: roleServer, wantCheck: "activation",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTestServer(t, tt.server)
			cli := dialTestClient(t, srv.addr, tt.client)
			_, _, rpcErr := cli.get(testContext(t))
			if rpcErr == nil {
				t.Fatal("RPC succeeded over a connection that must be refused")
			}
			if code := status.Code(rpcErr); code != codes.Unavailable {
				t.Errorf("RPC error code %v, want Unavailable (handshake failed): %v", code, rpcErr)
			}
			refuser, attester := srv.creds, cli.creds
			if tt.refusedBy == roleClient {
				refuser, attester = cli.creds, srv.creds
			}
			err := refuser.nextError(t)
			if tt.wantCheck != "" {
				var ce *attestation.CheckError
				if !errors.As(err, &ce) || ce.Check != tt.wantCheck {
					t.Errorf("%s's error %v, want *attestation.CheckError with Check %q", tt.refusedBy, err, tt.wantCheck)
				}
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("%s's error %v, want errors.Is %v", tt.refusedBy, err, tt.wantErr)
			}
			if code := Code(err); code != codes.PermissionDenied {
				t.Errorf("Code(%v) = %v, want PermissionDenied", err, code)
			}
			var refused *RefusedError
			if err := attester.nextError(t); !errors.As(err, &refused) || refused.Peer != tt.refusedBy {
				t.Errorf("attester's error %v, want *RefusedError from %s", err, tt.refusedBy)
			}
		})
	}
}

func TestServerRejectionReasonReachesClientRPCError(t *testing.T) {
	srv := startTestServer(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: mustValidators(t, fakeRejectingValidator{})})
	cli := dialTestClient(t, srv.addr, mutualInsecureDevConfig(t))
	_, _, rpcErr := cli.get(testContext(t))
	if rpcErr == nil {
		t.Fatal("RPC succeeded")
	}
	serverErr := srv.creds.nextError(t)
	if !errors.Is(serverErr, errFakeRejection) {
		t.Fatalf("server error %v, want the fake rejection", serverErr)
	}
	var refused *RefusedError
	if err := cli.creds.nextError(t); !errors.As(err, &refused) || refused.UntrustedReason != serverErr.Error() {
		t.Fatalf("client handshake error %v, want *RefusedError with the server's reason %q", err, serverErr)
	}
	// gRPC carries the handshake error only as text: the operator reads it.
	if !strings.Contains(status.Convert(rpcErr).Message(), serverErr.Error()) {
		t.Errorf("RPC error %q does not show the server's reason %q", status.Convert(rpcErr).Message(), serverErr)
	}
}

func TestFakeChallengeRoundAccepted(t *testing.T) {
	validators := insecureDevValidators(t)
	challenging := mustValidators(t, fakeChallengeValidator{validators[attestation.VariantInsecureDev]})
	srv := startTestServer(t, Config{Issuer: fakeResponderIssuer{Issuer: insecuredev.NewIssuer()}, Verifier: challenging})
	cli := dialTestClient(t, srv.addr, Config{Issuer: fakeResponderIssuer{Issuer: insecuredev.NewIssuer()}, Verifier: challenging})
	resp, serverClaims, err := cli.get(testContext(t))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if resp.GetPhase() != string(attestation.VariantInsecureDev) || serverClaims == nil {
		t.Errorf("claims after the challenge round: server saw %q, client saw %+v", resp.GetPhase(), serverClaims)
	}
}

func TestFakeChallengeToIssuerThatCannotRespond(t *testing.T) {
	validators := insecureDevValidators(t)
	srv := startTestServer(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: mustValidators(t, fakeChallengeValidator{validators[attestation.VariantInsecureDev]})})
	cli := dialTestClient(t, srv.addr, mutualInsecureDevConfig(t))
	if _, _, err := cli.get(testContext(t)); err == nil {
		t.Fatal("RPC succeeded without a challenge response")
	}
	if err := cli.creds.nextError(t); Code(err) != codes.Internal {
		t.Errorf("client error %v (code %v), want Internal: a configuration bug of the attester", err, Code(err))
	}
	if err := srv.creds.nextError(t); err == nil {
		t.Error("server accepted a client that never answered the challenge")
	}
}

// frameBytes encodes f as it goes on the wire.
func frameBytes(t *testing.T, f *atlsv1.Frame) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := writeFrame(&buf, f); err != nil {
		t.Fatalf("writeFrame: %v", err)
	}
	return buf.Bytes()
}

func header(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

func TestHandWrittenClientAttacksRefused(t *testing.T) {
	tests := []struct {
		name     string
		send     func(t *testing.T, exporter []byte) []byte
		closeOut bool // half-close after sending: the frame stays truncated
		wantCode codes.Code
		wantErr  error
		check    string
	}{
		{
			name: "evidence bound to the server role (reflection)",
			send: func(t *testing.T, exporter []byte) []byte {
				ev, err := insecuredev.NewIssuer().Issue(context.Background(), bindingData([]byte(roleServer), exporter))
				if err != nil {
					t.Fatal(err)
				}
				return frameBytes(t, &atlsv1.Frame{Kind: &atlsv1.Frame_Evidence{Evidence: ev}})
			},
			wantCode: codes.PermissionDenied, check: "binding",
		},
		{
			name: "evidence bound to the session but the wrong label",
			send: func(t *testing.T, exporter []byte) []byte {
				ud := sha256.Sum256(append([]byte("other-protocol-v1client"), exporter...))
				ev, err := insecuredev.NewIssuer().Issue(context.Background(), ud[:])
				if err != nil {
					t.Fatal(err)
				}
				return frameBytes(t, &atlsv1.Frame{Kind: &atlsv1.Frame_Evidence{Evidence: ev}})
			},
			wantCode: codes.PermissionDenied, check: "binding",
		},
		{
			name: "garbage frame",
			send: func(*testing.T, []byte) []byte {
				return append(header(8), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
			},
			wantCode: codes.InvalidArgument, wantErr: errMalformedFrame,
		},
		{
			name:     "empty frame",
			send:     func(*testing.T, []byte) []byte { return header(0) },
			wantCode: codes.InvalidArgument, wantErr: errMalformedFrame,
		},
		{
			name:     "oversized frame length",
			send:     func(*testing.T, []byte) []byte { return header(MaxFrameSize + 1) },
			wantCode: codes.InvalidArgument, wantErr: errMalformedFrame,
		},
		{
			name:     "maximal frame length",
			send:     func(*testing.T, []byte) []byte { return header(0xffffffff) },
			wantCode: codes.InvalidArgument, wantErr: errMalformedFrame,
		},
		{
			name:     "truncated frame",
			send:     func(*testing.T, []byte) []byte { return append(header(100), make([]byte, 10)...) },
			closeOut: true,
			wantCode: codes.Unavailable, wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:     "truncated header",
			send:     func(*testing.T, []byte) []byte { return []byte{0, 0} },
			closeOut: true,
			wantCode: codes.Unavailable, wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "verdict instead of evidence",
			send: func(t *testing.T, _ []byte) []byte {
				return frameBytes(t, &atlsv1.Frame{Kind: &atlsv1.Frame_Verdict{Verdict: &atlsv1.Verdict{Accepted: true}}})
			},
			wantCode: codes.InvalidArgument, wantErr: errMalformedFrame,
		},
		{
			name: "challenge response without a challenge",
			send: func(t *testing.T, _ []byte) []byte {
				return frameBytes(t, &atlsv1.Frame{Kind: &atlsv1.Frame_ChallengeResponse{ChallengeResponse: &atlsv1.ChallengeResponse{ActivatedSecret: []byte{1}}}})
			},
			wantCode: codes.InvalidArgument, wantErr: errMalformedFrame,
		},
		{
			name: "evidence frame with no evidence inside",
			send: func(t *testing.T, _ []byte) []byte {
				return frameBytes(t, &atlsv1.Frame{Kind: &atlsv1.Frame_Evidence{Evidence: &attestationv1.Evidence{}}})
			},
			wantCode: codes.PermissionDenied, wantErr: attestation.ErrWrongVariant,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, errs := handshakeOnce(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(t), HandshakeTimeout: 5 * time.Second})
			conn, exporter := dialRawTLS(t, addr)
			if _, err := conn.Write(tt.send(t, exporter)); err != nil {
				t.Fatalf("writing: %v", err)
			}
			if tt.closeOut {
				if err := conn.CloseWrite(); err != nil {
					t.Fatalf("CloseWrite: %v", err)
				}
			}
			err := waitError(t, errs)
			if err == nil {
				t.Fatal("server accepted the hand-written client")
			}
			if code := Code(err); code != tt.wantCode {
				t.Errorf("Code(%v) = %v, want %v", err, code, tt.wantCode)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("server error %v, want errors.Is %v", err, tt.wantErr)
			}
			if tt.check != "" {
				var ce *attestation.CheckError
				if !errors.As(err, &ce) || ce.Check != tt.check {
					t.Errorf("server error %v, want *attestation.CheckError with Check %q", err, tt.check)
				}
			}
		})
	}
}

func TestSilentPeerTimesOut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	t.Run("client silent before TLS", func(t *testing.T) {
		addr, errs := handshakeOnce(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(t), HandshakeTimeout: timeout})
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		assertTimedOut(t, waitError(t, errs))
	})
	t.Run("client silent after TLS", func(t *testing.T) {
		addr, errs := handshakeOnce(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(t), HandshakeTimeout: timeout})
		dialRawTLS(t, addr)
		assertTimedOut(t, waitError(t, errs))
	})
	t.Run("server silent after TLS", func(t *testing.T) {
		srvCreds := mustCredentials(t, Config{Verifier: insecureDevValidators(t)})
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		go func() {
			raw, err := lis.Accept()
			if err != nil {
				return
			}
			conn := tls.Server(raw, srvCreds.tlsConfig(true))
			defer conn.Close()
			if conn.Handshake() != nil {
				return
			}
			_, _ = io.Copy(io.Discard, conn) // never answers, until the client gives up
		}()
		raw, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := mustCredentials(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(t), HandshakeTimeout: timeout})
		start := time.Now()
		_, _, err = c.ClientHandshake(context.Background(), "", raw)
		assertTimedOut(t, err)
		if d := time.Since(start); d > 10*timeout {
			t.Errorf("client gave up after %v, want about %v", d, timeout)
		}
	})
}

func assertTimedOut(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want a deadline", err)
	}
	if code := Code(err); code != codes.Unavailable {
		t.Errorf("Code(%v) = %v, want Unavailable", err, code)
	}
}

func TestClientHandshakeHonoursCancel(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	c := mustCredentials(t, mutualInsecureDevConfig(t))
	_, _, err = c.ClientHandshake(ctx, "", raw)
	if !errors.Is(err, context.Canceled) || Code(err) != codes.Canceled {
		t.Errorf("ClientHandshake after cancel: %v (code %v), want context.Canceled", err, Code(err))
	}
}

func TestTLS12PeerRefused(t *testing.T) {
	t.Run("TLS 1.2 client", func(t *testing.T) {
		addr, errs := handshakeOnce(t, mutualInsecureDevConfig(t))
		c := mustCredentials(t, mutualInsecureDevConfig(t))
		cfg := c.tlsConfig(false)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if conn, err := tls.Dial("tcp", addr, cfg); err == nil {
			conn.Close()
			t.Error("TLS 1.2 handshake succeeded")
		}
		err := waitError(t, errs)
		if code := Code(err); code != codes.PermissionDenied {
			t.Errorf("server error %v (code %v), want a refused TLS handshake (PermissionDenied)", err, code)
		}
	})
	t.Run("TLS 1.2 server", func(t *testing.T) {
		srvCreds := mustCredentials(t, mutualInsecureDevConfig(t))
		cfg := srvCreds.tlsConfig(true)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		go func() {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			_ = conn.(*tls.Conn).Handshake() // fails: the client wants TLS 1.3
		}()
		raw, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := mustCredentials(t, mutualInsecureDevConfig(t))
		_, _, err = c.ClientHandshake(testContext(t), "", raw)
		if code := Code(err); code != codes.PermissionDenied {
			t.Errorf("client error %v (code %v), want a refused TLS handshake (PermissionDenied)", err, code)
		}
	})
}

func TestSequentialConnectionsDoNotLeakGoroutines(t *testing.T) {
	srv := startTestServer(t, mutualInsecureDevConfig(t))
	clientCfg := mutualInsecureDevConfig(t)
	connect := func() {
		cli := dialTestClient(t, srv.addr, clientCfg)
		if _, _, err := cli.get(testContext(t)); err != nil {
			t.Fatalf("Get: %v", err)
		}
		if err := cli.conn.Close(); err != nil {
			t.Fatalf("closing: %v", err)
		}
	}
	connect() // warm up: lazily started goroutines of gRPC stay
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for range 30 {
		connect()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := runtime.NumGoroutine()
		if after <= before+2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before 30 connections, %d after", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"malformed evidence", errors.Join(errors.New("ctx"), attestation.ErrMalformed), codes.InvalidArgument},
		{"malformed frame", errMalformedFrame, codes.InvalidArgument},
		{"failed check", &attestation.CheckError{Check: "binding"}, codes.PermissionDenied},
		{"wrong variant", attestation.ErrWrongVariant, codes.PermissionDenied},
		{"unattested peer", ErrUnattestedPeer, codes.PermissionDenied},
		{"refused by peer", &RefusedError{Peer: roleServer}, codes.PermissionDenied},
		{"deadline", os.ErrDeadlineExceeded, codes.Unavailable},
		{"context deadline", context.DeadlineExceeded, codes.Unavailable},
		{"cancelled", context.Canceled, codes.Canceled},
		{"connection closed", net.ErrClosed, codes.Unavailable},
		{"gRPC status", status.Error(codes.NotFound, "x"), codes.NotFound},
		{"our bug", errors.New("something else"), codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Code(tt.err); got != tt.want {
				t.Errorf("Code(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestRefusedErrorBoundsUntrustedReason(t *testing.T) {
	e := &RefusedError{Peer: roleServer, UntrustedReason: strings.Repeat("x", 1<<20) + "\x1b[2J"}
	if msg := e.Error(); len(msg) > 2*maxReasonDisplay || strings.Contains(msg, "\x1b") {
		t.Errorf("RefusedError shows %d bytes (escape sequence kept: %v)", len(msg), strings.Contains(msg, "\x1b"))
	}
}

// slowReader returns its data a few bytes at a time, then EOF.
type slowReader struct{ data []byte }

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 7)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestReadFrameBoundedAllocation(t *testing.T) {
	// A peer announces the largest allowed frame and sends 10 bytes.
	in := append(header(MaxFrameSize), make([]byte, 10)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f, err := readFrame(&slowReader{data: in}, nil)
	runtime.ReadMemStats(&after)
	if err == nil || f != nil {
		t.Fatalf("readFrame of a truncated frame: %v, %v", f, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<10 {
		t.Errorf("readFrame allocated %d bytes for 10 received, want proportional to what arrived", alloc)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	ev, err := insecuredev.NewIssuer().Issue(context.Background(), []byte("user data"))
	if err != nil {
		t.Fatal(err)
	}
	want := &atlsv1.Frame{Kind: &atlsv1.Frame_Evidence{Evidence: ev}}
	got, err := readFrame(bytes.NewReader(frameBytes(t, want)), nil)
	if err != nil {
		t.Fatalf("readFrame: %v", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("round trip: got %v, want %v", got, want)
	}
	big := &atlsv1.Frame{Kind: &atlsv1.Frame_Verdict{Verdict: &atlsv1.Verdict{Reason: strings.Repeat("x", MaxFrameSize)}}}
	if err := writeFrame(io.Discard, big); err == nil {
		t.Error("writeFrame sent a frame over MaxFrameSize")
	}
}

// fakeBrokenIssuer fails every quote, as a TPM that stopped answering would.
type fakeBrokenIssuer struct{}

func (fakeBrokenIssuer) Variant() attestation.Variant { return attestation.VariantInsecureDev }

func (fakeBrokenIssuer) Issue(context.Context, []byte) (*attestationv1.Evidence, error) {
	return nil, errors.New("quote device gone")
}

func TestServerLogsWhyHandshakeFailedWithFakeBrokenIssuer(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	srv := startTestServer(t, Config{Issuer: fakeBrokenIssuer{}, AcceptUnattestedPeer: true, Log: log})
	cli := dialTestClient(t, srv.addr, Config{Verifier: insecureDevValidators(t)})
	if _, _, err := cli.get(testContext(t)); err == nil {
		t.Fatal("Get succeeded against a server that cannot attest")
	}
	// The client learns only that the connection closed; the server's log
	// must say why.
	if err := srv.creds.nextError(t); err == nil || !strings.Contains(err.Error(), "quote device gone") {
		t.Fatalf("server handshake error = %v, want the issuer's failure", err)
	}
	var line struct {
		Level, Msg, Peer, Error string
	}
	if err := json.Unmarshal(bytes.SplitN(logged.Bytes(), []byte("\n"), 2)[0], &line); err != nil {
		t.Fatalf("server log %q: %v", logged.String(), err)
	}
	if line.Level != "WARN" || line.Msg != "attested TLS handshake failed" || !strings.HasPrefix(line.Peer, "127.0.0.1:") ||
		!strings.Contains(line.Error, "issuing server evidence: quote device gone") {
		t.Errorf("server log line = %+v, want a warning naming the peer and the issuer's failure", line)
	}
}
