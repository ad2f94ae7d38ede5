package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
	"github.com/cloister-dev/cloister/joinservice/jointest"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// BenchmarkJoinLoad is the join service's load test: CLOISTER_LOAD_CLIENTS
// (default 200) concurrent nodes do b.N complete joins in all — each a new
// connection with a TLS 1.3 handshake, mutual attestation with real quote
// verification on both sides (fake Intel chain), key derivation, a bootstrap
// token and a kubelet certificate from the fake Kubernetes API. Run it with a
// fixed count: `go test -run '^$' -bench JoinLoad -benchtime 1000x`.
//
// In the same run and on the same cores it measures the bare limit: one TLS
// 1.3 handshake plus one evidence verification, done by GOMAXPROCS workers.
// It reports joins/s, p50/p99 latency, errors, the bare limit and the ratio.
func BenchmarkJoinLoad(b *testing.B) {
	clients := 200
	if s := os.Getenv("CLOISTER_LOAD_CLIENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("CLOISTER_LOAD_CLIENTS=%q: want a positive number", s)
		}
		clients = n
	}
	chain, err := tdxtest.NewChain(tdxtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	serviceIssuer, err := tdx.NewIssuer(chain.QuoteProvider(tdxtest.Body{MRTD: serviceMRTD}), tdx.IssuerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	build := func(p *policy.Policy) (attestation.Validators, error) {
		return platform.Validators(p, platform.Anchors{TDXRoots: chain.Pool()})
	}
	svc := jointest.Start(b, jointest.Options{Issuer: serviceIssuer, Build: build, Policy: []byte(tdxPolicy(nodeMRTD)), RateLimit: 1e9})
	nodeIssuer, err := tdx.NewIssuer(chain.QuoteProvider(nodeBody()), tdx.IssuerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	servicePolicy, err := policy.Parse([]byte(tdxPolicy(serviceMRTD)))
	if err != nil {
		b.Fatal(err)
	}
	serviceValidators, err := build(servicePolicy)
	if err != nil {
		b.Fatal(err)
	}
	creds, err := atls.NewCredentials(atls.Config{Issuer: nodeIssuer, Verifier: serviceValidators, HandshakeTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	// Each client is one node: its CSR is made once, as a node would.
	reqs := make([]*joinv1.IssueJoinTicketRequest, clients)
	for i := range reqs {
		reqs[i] = joinRequest(b, "node-"+strconv.Itoa(i))
	}

	bare := bareHandshakeVerifyPerSecond(b, chain, 1)
	// Attestation is mutual: every join verifies two quotes, one on each
	// side, so this is the floor a join really cannot beat.
	bareMutual := bareHandshakeVerifyPerSecond(b, chain, 2)

	jobs := make(chan struct{}, b.N)
	for range b.N {
		jobs <- struct{}{}
	}
	close(jobs)
	var (
		errs      atomic.Int64
		firstErr  atomic.Value
		latMu     sync.Mutex
		latencies = make([]time.Duration, 0, b.N)
		wg        sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			for range jobs {
				t0 := time.Now()
				err := joinOnce(ctx, svc.Addr, creds, reqs[c])
				d := time.Since(t0)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				latMu.Lock()
				latencies = append(latencies, d)
				latMu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
	}
	throughput := float64(len(latencies)) / elapsed.Seconds()
	b.ReportMetric(throughput, "joins/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(errs.Load()), "errors")
	b.ReportMetric(bare, "bare-limit/s")
	b.ReportMetric(throughput/bare, "ratio")
	b.ReportMetric(throughput/bareMutual, "ratio-mutual")
	b.Logf("%d clients, %d joins in %v: %.1f joins/s, p50 %v, p99 %v, %d errors; on %d cores the bare limit of one TLS 1.3 handshake + one verification is %.1f/s (ratio %.2f), with two verifications %.1f/s (ratio %.2f)",
		clients, len(latencies), elapsed.Round(time.Millisecond), throughput, pct(0.5), pct(0.99), errs.Load(), runtime.GOMAXPROCS(0), bare, throughput/bare, bareMutual, throughput/bareMutual)
	if n := errs.Load(); n > 0 {
		b.Errorf("%d joins failed under load; first: %v", n, firstErr.Load())
	}
}

func joinOnce(ctx context.Context, addr string, creds *atls.Credentials, req *joinv1.IssueJoinTicketRequest) error {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = joinv1.NewJoinServiceClient(conn).IssueJoinTicket(ctx, req)
	return err
}

// bareHandshakeVerifyPerSecond measures the bare cost of attested TLS: a TLS
// 1.3 handshake on loopback with ephemeral P-256 certificates plus
// verifications TDX quote verifications, by GOMAXPROCS workers for a fixed
// count.
func bareHandshakeVerifyPerSecond(tb testing.TB, chain *tdxtest.Chain, verifications int) float64 {
	tb.Helper()
	pol, err := policy.Parse([]byte(tdxPolicy(nodeMRTD)))
	if err != nil {
		tb.Fatal(err)
	}
	v, err := tdx.NewValidator(pol.TDX, tdx.ValidatorOptions{TrustedRoots: chain.Pool()})
	if err != nil {
		tb.Fatal(err)
	}
	issuer, err := tdx.NewIssuer(chain.QuoteProvider(nodeBody()), tdx.IssuerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	userData := make([]byte, 32)
	ev, err := issuer.Issue(context.Background(), userData)
	if err != nil {
		tb.Fatal(err)
	}
	serverCfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{selfSigned(tb)}, SessionTicketsDisabled: true}
	clientCfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{selfSigned(tb)}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = tls.Server(c, serverCfg).Handshake()
			}()
		}
	}()
	const perWorker = 100
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for range perWorker {
				c, err := tls.Dial("tcp", lis.Addr().String(), clientCfg)
				if err != nil {
					tb.Error(err)
					return
				}
				c.Close()
				for range verifications {
					if _, err := v.Validate(context.Background(), ev, userData); err != nil {
						tb.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return float64(workers*perWorker) / time.Since(start).Seconds()
}

func selfSigned(tb testing.TB) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bare"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
