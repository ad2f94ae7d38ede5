package rejoin

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/retry"
	"github.com/cloister-dev/cloister/internal/status"
	"github.com/cloister-dev/cloister/joinservice/jointest"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// These tests run the REAL join service (jointest, FAKE Kubernetes API) and
// real LUKS2 headers on file images; both sides attest with insecure-dev so
// that the package's tests need no TPM (the TPM flows are in package setup).

const insecureDevPolicy = `{"version": 1, "name": "dev", "insecure-dev": {"iUnderstandThisProvesNothing": true}}`

// tpmOnlyPolicy allows only TPM evidence.
const tpmOnlyPolicy = "version: 1\nname: tpm-only\ntpm:\n  pcrs:\n    \"4\": {value: \"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\"}\n"

func buildInsecure(p *policy.Policy) (attestation.Validators, error) {
	return platform.Validators(p, platform.Anchors{AllowInsecureDev: true, TPMAKRoots: emptyPool()})
}

func startJoinService(t *testing.T, nodePolicy string) *jointest.Service {
	t.Helper()
	return jointest.Start(t, jointest.Options{Issuer: insecuredev.NewIssuer(), Build: buildInsecure, Policy: []byte(nodePolicy), AllowVariantsWithoutLatch: true})
}

// nodeCreds attest the node with insecure-dev and verify join services under
// joinPolicy.
func nodeCreds(t *testing.T, joinPolicy string) credentials.TransportCredentials {
	t.Helper()
	p, err := policy.Parse([]byte(joinPolicy))
	if err != nil {
		t.Fatal(err)
	}
	v, err := buildInsecure(p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := atls.NewCredentials(atls.Config{Issuer: insecuredev.NewIssuer(), Verifier: v, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// header adapts a real LUKS2 header to the checker.
type header struct{ d *cryptsetup.Device }

func (h header) CheckKey(key []byte) error {
	if _, err := h.d.CheckKey(key); errors.Is(err, cryptsetup.ErrKeyRejected) {
		return unlock.ErrWrongKey
	} else if err != nil {
		return err
	}
	return nil
}

// keyedDisk formats an image and re-keys it to keyFor(uuid).
func keyedDisk(t *testing.T, keyFor func(uuid string) []byte) *unlock.Checker {
	t.Helper()
	img := filepath.Join(t.TempDir(), "state.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	oneTime := randomKey(t)
	uuid, err := cryptsetup.Format(context.Background(), img, oneTime, cryptsetup.FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := cryptsetup.Open(img, cryptsetup.FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Rekey(context.Background(), oneTime, keyFor(uuid), 1); err != nil {
		t.Fatal(err)
	}
	return unlock.NewChecker(header{d}, uuid)
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func serviceKey(t *testing.T, svc *jointest.Service) func(string) []byte {
	return func(uuid string) []byte {
		k, err := svc.Secrets.DiskKey(uuid, keys.FirstGeneration)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
}

type client struct {
	*Client
	status *status.Tracker
	logs   *lockedBuffer
}

func newClient(t *testing.T, endpoints []string, creds credentials.TransportCredentials) *client {
	t.Helper()
	st := status.New("disk-mapper", status.Options{})
	st.SetPhase("waiting-for-key")
	logs := &lockedBuffer{}
	b := retry.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2}
	c, err := New(endpoints, creds, st, slog.New(slog.NewJSONHandler(logs, nil)), Options{Backoff: &b, AttemptTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &client{Client: c, status: st, logs: logs}
}

func won(c *unlock.Checker) bool {
	select {
	case <-c.Won():
		return true
	default:
		return false
	}
}

func TestRejoinDeliversKeyThatOpensDisk(t *testing.T) {
	svc := startJoinService(t, insecureDevPolicy)
	ch := keyedDisk(t, serviceKey(t, svc))
	c := newClient(t, []string{svc.Addr}, nodeCreds(t, insecureDevPolicy))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Run(ctx, ch); err != nil {
		t.Fatalf("Run: %v", err)
	}
	w, err := ch.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Zero()
	if w.Source != "rejoin" || !bytes.Equal(w.MeasurementSecret, svc.Secrets.MeasurementSecret) {
		t.Errorf("winner from %q, measurement secret delivered: %v", w.Source, bytes.Equal(w.MeasurementSecret, svc.Secrets.MeasurementSecret))
	}
	if bytes.Contains(c.logs.Bytes(), w.DiskKey) {
		t.Error("the disk key is in the logs")
	}
}

func TestRejoinRetriesUntilJoinServiceComesUp(t *testing.T) {
	svc := startJoinService(t, insecureDevPolicy)
	svc.Stop()
	ch := keyedDisk(t, serviceKey(t, svc))
	c := newClient(t, []string{svc.Addr}, nodeCreds(t, insecureDevPolicy))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, ch) }()
	waitFor(t, "failed attempts", func() bool { return c.status.Snapshot().GetAttempts() >= 2 })
	svc.Restart()
	if err := <-done; err != nil || !won(ch) {
		t.Fatalf("Run = %v, won %v; want the key once the service is up", err, won(ch))
	}
}

// A refusal or a useless answer is shown in the status and retried: no
// case ends Run early, and no key wins.
func TestRejoinRefusalsAreRetried(t *testing.T) {
	tests := []struct {
		name       string
		nodePolicy string // the join service's policy for nodes
		joinPolicy string // the node's policy for join services
		keyFor     func(t *testing.T, svc *jointest.Service) func(string) []byte
		fake       *fakeJoinService
		wantStatus string
	}{
		{
			name:       "join service policy refuses the node's evidence",
			nodePolicy: tpmOnlyPolicy, joinPolicy: insecureDevPolicy,
			wantStatus: "server refused our attestation",
		},
		{
			name:       "node refuses the join service's evidence",
			nodePolicy: insecureDevPolicy, joinPolicy: tpmOnlyPolicy,
			wantStatus: "authentication handshake failed",
		},
		{
			name:       "join service's key does not open this disk (another cluster)",
			nodePolicy: insecureDevPolicy, joinPolicy: insecureDevPolicy,
			keyFor: func(t *testing.T, _ *jointest.Service) func(string) []byte {
				k := randomKey(t)
				return func(string) []byte { return k }
			},
			wantStatus: "key does not open disk",
		},
		{
			name:       "FAKE join service sends a short key",
			joinPolicy: insecureDevPolicy,
			fake:       &fakeJoinService{resp: &joinv1.IssueRejoinTicketResponse{DiskKey: make([]byte, 16), MeasurementSecret: make([]byte, 32)}},
			wantStatus: "disk key: want 32 bytes, got 16",
		},
		{
			name:       "FAKE join service sends no measurement secret",
			joinPolicy: insecureDevPolicy,
			fake:       &fakeJoinService{resp: &joinv1.IssueRejoinTicketResponse{DiskKey: make([]byte, 32)}},
			wantStatus: "measurement secret: want 32 bytes, got 0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addr string
			keyFor := func(string) []byte { return randomKey(t) }
			if tt.fake != nil {
				addr = tt.fake.start(t)
			} else {
				svc := startJoinService(t, tt.nodePolicy)
				addr = svc.Addr
				keyFor = serviceKey(t, svc)
				if tt.keyFor != nil {
					keyFor = tt.keyFor(t, svc)
				}
				t.Cleanup(func() {
					if strings.Contains(svc.Logs(), `"decision":"released"`) && tt.nodePolicy == tpmOnlyPolicy {
						t.Error("the join service released a ticket to a node its policy refuses")
					}
				})
			}
			ch := keyedDisk(t, keyFor)
			c := newClient(t, []string{addr}, nodeCreds(t, tt.joinPolicy))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx, ch) }()
			waitFor(t, "a second attempt showing "+tt.wantStatus, func() bool {
				s := c.status.Snapshot()
				return s.GetAttempts() >= 2 && strings.Contains(s.GetLastError(), tt.wantStatus)
			})
			cancel()
			err := <-done
			if !errors.Is(err, context.Canceled) || won(ch) {
				t.Errorf("Run = %v, won %v; want it to retry until cancelled, without a winner", err, won(ch))
			}
		})
	}
}

func TestRejoinStopsWhenAnotherSourceWon(t *testing.T) {
	key := randomKey(t)
	ch := keyedDisk(t, func(string) []byte { return key })
	if err := ch.Offer(context.Background(), unlock.Candidate{DiskKey: key, MeasurementSecret: randomKey(t), Source: "recovery"}); err != nil {
		t.Fatal(err)
	}
	// Nothing listens there: Run must not even dial.
	c := newClient(t, []string{"127.0.0.1:1"}, nodeCreds(t, insecureDevPolicy))
	if err := c.Run(context.Background(), ch); err != nil {
		t.Fatalf("Run after another source won = %v, want nil", err)
	}
}

func TestRejoinWithoutEndpoints(t *testing.T) {
	c := newClient(t, nil, nil)
	if err := c.Run(context.Background(), unlock.NewChecker(header{}, "x")); err != nil {
		t.Fatalf("Run without endpoints = %v, want nil", err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	st := status.New("disk-mapper", status.Options{})
	creds := nodeCreds(t, insecureDevPolicy)
	if _, err := New([]string{""}, creds, st, log, Options{}); err == nil {
		t.Error("New accepted an empty endpoint")
	}
	if _, err := New([]string{"a:1"}, nil, st, log, Options{}); err == nil {
		t.Error("New accepted endpoints without credentials")
	}
	if _, err := New([]string{"a:1"}, creds, st, log, Options{AttemptTimeout: -time.Second}); err == nil {
		t.Error("New accepted a negative attempt timeout")
	}
}

// fakeJoinService is a FAKE join service (attested with insecure-dev) that
// answers every rejoin with a fixed response: a hostile or broken service.
type fakeJoinService struct {
	joinv1.UnimplementedJoinServiceServer
	resp *joinv1.IssueRejoinTicketResponse
}

func (f *fakeJoinService) IssueRejoinTicket(context.Context, *joinv1.IssueRejoinTicketRequest) (*joinv1.IssueRejoinTicketResponse, error) {
	return f.resp, nil
}

func (f *fakeJoinService) start(t *testing.T) string {
	t.Helper()
	p, err := policy.Parse([]byte(insecureDevPolicy))
	if err != nil {
		t.Fatal(err)
	}
	v, err := buildInsecure(p)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := atls.NewCredentials(atls.Config{Issuer: insecuredev.NewIssuer(), Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(creds))
	joinv1.RegisterJoinServiceServer(g, f)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// emptyPool is a TPM AK root pool that trusts nothing, so that a tpm policy
// builds but refuses every evidence.
func emptyPool() *x509.CertPool { return x509.NewCertPool() }
