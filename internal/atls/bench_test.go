package atls

import (
	"bytes"
	"context"
	"net"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
	atlsv1 "github.com/cloister-dev/cloister/proto/atls/v1"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

func FuzzFrameDecode(f *testing.F) {
	ev, err := insecuredev.NewIssuer().Issue(context.Background(), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		f.Fatal(err)
	}
	for _, fr := range []*atlsv1.Frame{
		{Kind: &atlsv1.Frame_Evidence{Evidence: ev}},
		{Kind: &atlsv1.Frame_NoEvidence{NoEvidence: &atlsv1.NoEvidence{}}},
		{Kind: &atlsv1.Frame_Challenge{Challenge: &attestationv1.ActivationChallenge{CredentialBlob: []byte{1, 2}, EncryptedSecret: []byte{3}}}},
		{Kind: &atlsv1.Frame_ChallengeResponse{ChallengeResponse: &atlsv1.ChallengeResponse{ActivatedSecret: []byte{4}}}},
		{Kind: &atlsv1.Frame_Verdict{Verdict: &atlsv1.Verdict{Reason: "insecure-dev: binding: want 01, got 02"}}},
	} {
		var buf bytes.Buffer
		if err := writeFrame(&buf, fr); err != nil {
			f.Fatal(err)
		}
		valid := buf.Bytes()
		f.Add(valid)
		f.Add(valid[:len(valid)-1])                                 // truncated
		f.Add(append(bytes.Clone(valid), 0xde, 0xad))               // trailing bytes
		f.Add(append([]byte{0xff, 0xff, 0xff, 0xff}, valid[4:]...)) // oversized length
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		fr, err := readFrame(r, nil)
		if err != nil {
			if fr != nil {
				t.Fatalf("frame %v returned with error %v", fr, err)
			}
			return
		}
		if fr.GetKind() == nil {
			t.Fatal("frame without kind accepted")
		}
		// A decoded frame consumed exactly its header and announced body.
		consumed := len(data) - r.Len()
		if n := int(data[0])<<24 | int(data[1])<<16 | int(data[2])<<8 | int(data[3]); consumed != frameHeaderSize+n || n > MaxFrameSize {
			t.Fatalf("consumed %d bytes for a %d-byte frame", consumed, n)
		}
	})
}

// benchmarkHandshakeAndFirstRPC measures a new connection per iteration:
// TCP, TLS 1.3, the attestation exchange both ways and one unary RPC.
// Hardware variants reuse it with their own configs.
func benchmarkHandshakeAndFirstRPC(b *testing.B, server, client Config) {
	server.Limits = generous(server.Limits) // measure the cost, not the limits
	srv := startTestServer(b, server)
	clientCfg := client
	b.ReportAllocs()
	for b.Loop() {
		cli := dialTestClient(b, srv.addr, clientCfg)
		if _, _, err := cli.get(context.Background()); err != nil {
			b.Fatalf("Get: %v", err)
		}
		if err := cli.conn.Close(); err != nil {
			b.Fatalf("closing: %v", err)
		}
	}
}

func BenchmarkHandshakeAndFirstRPC(b *testing.B) {
	b.Run("mutual-insecure-dev", func(b *testing.B) {
		benchmarkHandshakeAndFirstRPC(b, mutualInsecureDevConfig(b), mutualInsecureDevConfig(b))
	})
	// Real quote verification by go-tdx-guest on both sides; the Intel
	// chain is fake (tdxtest), the cost is the real one.
	b.Run("mutual-tdx-fake-intel-chain", func(b *testing.B) {
		cfg := mutualTDXConfig(b)
		benchmarkHandshakeAndFirstRPC(b, cfg, cfg)
	})
}

// mutualTDXConfig attests and verifies with TDX quotes from a fake
// Intel-shaped chain.
func mutualTDXConfig(tb testing.TB) Config {
	tb.Helper()
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	body := tdxtest.Body{MRTD: [48]byte{0xaa}}
	issuer, err := tdx.NewIssuer(chain.QuoteProvider(body), tdx.IssuerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	v, err := tdx.NewValidator(&policy.TDX{MRTD: policy.Value{Want: body.MRTD[:], Mode: policy.Enforce}}, tdx.ValidatorOptions{TrustedRoots: chain.Pool()})
	if err != nil {
		tb.Fatal(err)
	}
	validators, err := attestation.NewValidators(v)
	if err != nil {
		tb.Fatal(err)
	}
	return Config{Issuer: issuer, Verifier: validators}
}

// benchmarkHandshake measures the handshake alone, without gRPC, over TCP
// on 127.0.0.1.
func benchmarkHandshake(b *testing.B, server, client Config) {
	server.Limits = generous(server.Limits) // measure the cost, not the limits
	serverCreds, clientCreds := mustCredentials(b, server), mustCredentials(b, client)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	errs := make(chan error, 1)
	go func() {
		for {
			raw, err := lis.Accept()
			if err != nil {
				return
			}
			conn, _, err := serverCreds.ServerHandshake(raw)
			if err == nil {
				err = conn.Close()
			}
			errs <- err
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		raw, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		conn, _, err := clientCreds.ClientHandshake(context.Background(), "", raw)
		if err != nil {
			b.Fatalf("ClientHandshake: %v", err)
		}
		if err := <-errs; err != nil {
			b.Fatalf("ServerHandshake: %v", err)
		}
		_ = conn.Close()
	}
}

func BenchmarkHandshake(b *testing.B) {
	b.Run("mutual-insecure-dev", func(b *testing.B) {
		benchmarkHandshake(b, mutualInsecureDevConfig(b), mutualInsecureDevConfig(b))
	})
	b.Run("verify-only-client-insecure-dev", func(b *testing.B) {
		benchmarkHandshake(b, Config{Issuer: insecuredev.NewIssuer(), AcceptUnattestedPeer: true}, Config{Verifier: insecureDevValidators(b)})
	})
}
