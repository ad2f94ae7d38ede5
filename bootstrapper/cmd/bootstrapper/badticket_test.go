package main

// Malformed join tickets over REAL gRPC with attested TLS (insecure-dev on
// both sides: no TPM needed to exercise the ticket checks) from a FAKE join
// service that answers what each case says. The join path must refuse every
// one before anything is written: no lock, no files, the reason on status.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cloister-dev/cloister/bootstrapper/internal/discovery"
	"github.com/cloister-dev/cloister/bootstrapper/internal/joinclient"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodelock"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/bootstrapper/internal/provision"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/retry"
	"github.com/cloister-dev/cloister/internal/status"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// fakeJoinService is a FAKE join service that answers every request with
// what answer makes of the CSR.
type fakeJoinService struct {
	joinv1.UnimplementedJoinServiceServer
	answer func(csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse
}

func (f *fakeJoinService) IssueJoinTicket(_ context.Context, req *joinv1.IssueJoinTicketRequest) (*joinv1.IssueJoinTicketResponse, error) {
	block, _ := pem.Decode(req.GetKubeletCsr())
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	return f.answer(csr), nil
}

func insecureDevCreds(t *testing.T, attest bool) *atls.Credentials {
	t.Helper()
	p, err := policy.Parse([]byte(`{"version": 1, "name": "dev", "insecure-dev": {"iUnderstandThisProvesNothing": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := platform.Validators(p, platform.Anchors{AllowInsecureDev: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := atls.Config{Verifier: v, HandshakeTimeout: 10 * time.Second}
	if attest {
		cfg.Issuer = insecuredev.NewIssuer()
	}
	c, err := atls.NewCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// signFor is a FAKE cluster CA signing a kubelet certificate for pub.
func signFor(t *testing.T, pub any, cn string) []byte {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func wellFormed(t *testing.T, csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse {
	return &joinv1.IssueJoinTicketResponse{
		DiskKeyGeneration: keys.FirstGeneration,
		DiskKey:           make([]byte, 32), MeasurementSecret: make([]byte, 32), MeasurementSalt: make([]byte, 32),
		ApiServerEndpoint: "10.0.0.1:6443", BootstrapToken: "abcdef.0123456789abcdef", BootstrapTokenExpiry: time.Now().Add(time.Hour).Unix(),
		DiscoveryTokenCaCertHashes: []string{"sha256:" + strings.Repeat("ab", 32)},
		KubeletCertificate:         signFor(t, csr.PublicKey, "system:node:worker-1"),
		KubernetesVersion:          "v1.37.2",
	}
}

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	if err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		out = append(out, p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMalformedTicketRefusedBeforeAnythingIsWritten(t *testing.T) {
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name      string
		answer    func(t *testing.T, csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse
		wantField string
	}{
		{"empty ticket (every field missing)", func(*testing.T, *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse {
			return &joinv1.IssueJoinTicketResponse{}
		}, "disk_key"},
		{"missing token", func(t *testing.T, csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse {
			r := wellFormed(t, csr)
			r.BootstrapToken = ""
			return r
		}, "bootstrap_token"},
		{"missing CA hashes", func(t *testing.T, csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse {
			r := wellFormed(t, csr)
			r.DiscoveryTokenCaCertHashes = nil
			return r
		}, "discovery_token_ca_cert_hashes"},
		{"16-byte disk key", func(t *testing.T, csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse {
			r := wellFormed(t, csr)
			r.DiskKey = r.DiskKey[:16]
			return r
		}, "disk_key"},
		{"64-byte measurement salt", func(t *testing.T, csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse {
			r := wellFormed(t, csr)
			r.MeasurementSalt = make([]byte, 64)
			return r
		}, "measurement_salt"},
		{"certificate for another key", func(t *testing.T, csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse {
			r := wellFormed(t, csr)
			r.KubeletCertificate = signFor(t, &otherKey.PublicKey, "system:node:worker-1")
			return r
		}, "kubelet_certificate.key"},
		{"certificate for another node", func(t *testing.T, csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse {
			r := wellFormed(t, csr)
			r.KubeletCertificate = signFor(t, csr.PublicKey, "system:node:worker-2")
			return r
		}, "kubelet_certificate.subject"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := grpc.NewServer(grpc.Creds(insecureDevCreds(t, true)))
			joinv1.RegisterJoinServiceServer(g, &fakeJoinService{answer: func(csr *x509.CertificateRequest) *joinv1.IssueJoinTicketResponse { return tc.answer(t, csr) }})
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = g.Serve(lis) }()
			t.Cleanup(g.Stop)

			dir := t.TempDir()
			store, err := nodestate.Open(dir, nodestate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			lock := nodelock.New(store, "")
			tracker := status.New("bootstrapper", status.Options{})
			rec := &recorder{tracker: tracker}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			backoff := retry.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}
			client, err := joinclient.New([]string{lis.Addr().String()}, insecureDevCreds(t, true),
				joinclient.Request{DiskUUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", NodeName: "worker-1", Role: discovery.RoleWorker},
				rec, log, joinclient.Options{Backoff: &backoff, AttemptTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			before := listFiles(t, dir)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			provisioned := false
			run := func(context.Context, func(string)) (*provision.Result, error) { provisioned = true; return nil, nil }
			done := make(chan error, 1)
			go func() { done <- joinPath(ctx, client, lock, store, run, log) }()
			// Two refused tickets, then stop the node.
			var refusals []error
			for deadline := time.Now().Add(20 * time.Second); len(refusals) < 2; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no two refusals in time; errors so far: %v", rec.errors())
				}
				refusals = rec.errors()
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("joinPath = %v, want it waiting until stopped", err)
			}
			for _, err := range refusals[:2] {
				var te *joinclient.TicketError
				if !errors.As(err, &te) || te.Field != tc.wantField {
					t.Fatalf("refusal %v, want a *TicketError on %s", err, tc.wantField)
				}
			}
			if provisioned || lock.Holder() != "" || store.State().Phase != nodestate.Fresh {
				t.Fatalf("a malformed ticket took the lock: holder %q, phase %s", lock.Holder(), store.State().Phase)
			}
			if after := listFiles(t, dir); !slices.Equal(before, after) {
				t.Fatalf("files written: %v (before %v)", after, before)
			}
			if !strings.Contains(tracker.Snapshot().GetLastError(), tc.wantField) {
				t.Fatalf("status does not show the refusal: %q", tracker.Snapshot().GetLastError())
			}
		})
	}
}

// recorder keeps every attempt's error and passes it to the real tracker.
type recorder struct {
	tracker *status.Tracker
	mu      sync.Mutex
	errs    []error
}

func (r *recorder) Attempt(err error) {
	r.tracker.Attempt(err)
	if err != nil {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
	}
}

func (r *recorder) errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

func TestJoinPathStepsAsideWhenInitWon(t *testing.T) {
	dir := t.TempDir()
	store, _ := nodestate.Open(dir, nodestate.Options{})
	lock := nodelock.New(store, "")
	if err := lock.Acquire(nodestate.PathInit, nil); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Nothing listens there: the client would retry forever.
	client, err := joinclient.New([]string{"127.0.0.1:1"}, insecureDevCreds(t, true),
		joinclient.Request{DiskUUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", NodeName: "worker-1", Role: discovery.RoleWorker},
		status.New("bootstrapper", status.Options{}), log, joinclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- joinPath(context.Background(), client, lock, store, func(context.Context, func(string)) (*provision.Result, error) {
			t.Error("join provisioning ran although init won")
			return nil, nil
		}, log)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errInitWon) {
			t.Fatalf("joinPath = %v, want errInitWon", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("join client did not stop after init won")
	}
}
