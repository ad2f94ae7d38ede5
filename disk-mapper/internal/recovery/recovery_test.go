package recovery

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	cloisterstatus "github.com/cloister-dev/cloister/internal/status"
	recoveryv1 "github.com/cloister-dev/cloister/proto/recovery/v1"
)

// The node attests with insecure-dev here; the TPM-attested recovery flows
// are in package setup. The disk is a FAKE header (fakeDisk); real headers
// are checked in packages setup and rejoin.

const uuid = "2f6d1c3e-8a5b-4c2d-9e1f-0a1b2c3d4e5f"

var (
	rightKey = bytes.Repeat([]byte{1}, 32)
	secret   = bytes.Repeat([]byte{9}, 32)
)

type fakeDisk struct{}

func (fakeDisk) CheckKey(key []byte) error {
	if !bytes.Equal(key, rightKey) {
		return unlock.ErrWrongKey
	}
	return nil
}

type running struct {
	addr    string
	checker *unlock.Checker
	status  *cloisterstatus.Tracker
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run returned, with runErr
	runErr  error
	logs    *lockedBuffer
}

func startServer(t *testing.T) *running {
	t.Helper()
	return startServerWithClock(t, time.Now)
}

// startServerWithClock starts a server whose backoff reads now.
func startServerWithClock(t *testing.T, now func() time.Time) *running {
	t.Helper()
	creds, err := atls.NewCredentials(atls.Config{Issuer: insecuredev.NewIssuer(), AcceptUnattestedPeer: true, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &running{addr: lis.Addr().String(), checker: unlock.NewChecker(fakeDisk{}, uuid), status: cloisterstatus.New("disk-mapper", cloisterstatus.Options{}), done: make(chan struct{}), logs: &lockedBuffer{}}
	r.status.SetPhase("waiting-for-key")
	s := New(lis, creds, r.status, slog.New(slog.NewJSONHandler(r.logs, nil)))
	s.now = now
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); r.runErr = s.Run(ctx, r.checker) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// recover is the operator's CLI: no attestation of its own, verifying the
// node under policyDoc.
func recover(t *testing.T, addr, policyDoc string, req *recoveryv1.RecoverRequest) (*recoveryv1.RecoverResponse, error) {
	t.Helper()
	p, err := policy.Parse([]byte(policyDoc))
	if err != nil {
		t.Fatal(err)
	}
	v, err := platform.Validators(p, platform.Anchors{AllowInsecureDev: true, TPMAKRoots: x509.NewCertPool()})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := atls.NewCredentials(atls.Config{Verifier: v, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return recoveryv1.NewRecoveryServiceClient(conn).Recover(ctx, req)
}

const devPolicy = `{"version": 1, "name": "dev", "insecure-dev": {"iUnderstandThisProvesNothing": true}}`

func TestRecoverRefusals(t *testing.T) {
	tests := []struct {
		name     string
		req      *recoveryv1.RecoverRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "wrong key", req: &recoveryv1.RecoverRequest{DiskKey: bytes.Repeat([]byte{2}, 32), MeasurementSecret: secret}, wantCode: codes.PermissionDenied, wantMsg: "key does not open disk " + uuid},
		{name: "empty request", req: &recoveryv1.RecoverRequest{}, wantCode: codes.InvalidArgument, wantMsg: "disk_key:"},
		{name: "31-byte key", req: &recoveryv1.RecoverRequest{DiskKey: rightKey[:31], MeasurementSecret: secret}, wantCode: codes.InvalidArgument, wantMsg: "disk_key:"},
		{name: "right key, 64-byte secret", req: &recoveryv1.RecoverRequest{DiskKey: rightKey, MeasurementSecret: append(bytes.Clone(secret), secret...)}, wantCode: codes.InvalidArgument, wantMsg: "measurement_secret:"},
		{name: "request over the size limit", req: &recoveryv1.RecoverRequest{DiskKey: make([]byte, 2048), MeasurementSecret: secret}, wantCode: codes.ResourceExhausted},
	}
	r := startServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := recover(t, r.addr, devPolicy, tt.req)
			if status.Code(err) != tt.wantCode || !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Fatalf("Recover = %v, %v; want %v %q", resp, err, tt.wantCode, tt.wantMsg)
			}
		})
	}
	select {
	case <-r.done:
		t.Fatalf("server stopped after refusals: %v", r.runErr)
	case <-r.checker.Won():
		t.Fatal("a refused request won")
	default:
	}
	if s := r.status.Snapshot(); !strings.Contains(s.GetLastError(), "key does not open disk") {
		t.Errorf("status %v does not show the refused key", s)
	}
}

func TestRecoverRightKeyThenStop(t *testing.T) {
	r := startServer(t)
	resp, err := recover(t, r.addr, devPolicy, &recoveryv1.RecoverRequest{DiskKey: rightKey, MeasurementSecret: secret, DiskKeyGeneration: 2})
	if err != nil || resp.GetDiskUuid() != uuid {
		t.Fatalf("Recover = %v, %v; want disk %s", resp, err, uuid)
	}
	w, err := r.checker.Wait(context.Background())
	if err != nil || w.Source != "recovery" || w.Generation != 2 || !bytes.Equal(w.DiskKey, rightKey) {
		t.Fatalf("winner %+v, %v", w, err)
	}
	// A second offer after the win is refused without a check.
	if _, err := recover(t, r.addr, devPolicy, &recoveryv1.RecoverRequest{DiskKey: rightKey, MeasurementSecret: secret}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Recover after the win = %v, want FailedPrecondition", err)
	}
	r.cancel()
	select {
	case <-r.done:
		if r.runErr != nil {
			t.Errorf("Run after cancel = %v, want nil", r.runErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	if _, err := net.DialTimeout("tcp", r.addr, time.Second); err == nil {
		t.Error("the listener is still open after Run returned")
	}
	if bytes.Contains(r.logs.Bytes(), rightKey) {
		t.Error("the key is in the logs")
	}
}

// A CLI that cannot verify the node never sends its key.
func TestCLIRefusingNodeSendsNothing(t *testing.T) {
	r := startServer(t)
	tpmOnly := "version: 1\nname: tpm-only\ntpm:\n  pcrs:\n    \"4\": {value: \"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\"}\n"
	_, err := recover(t, r.addr, tpmOnly, &recoveryv1.RecoverRequest{DiskKey: rightKey, MeasurementSecret: secret})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Recover to an unverifiable node = %v; want a failed handshake (Unavailable)", err)
	}
	select {
	case <-r.checker.Won():
		t.Fatal("the key reached the node although the CLI refused its attestation")
	default:
	}
	if s := r.status.Snapshot(); s.GetAttempts() != 0 {
		t.Errorf("status %v: the node saw an attempt", s)
	}
}

func TestRunReportsListenerFailure(t *testing.T) {
	creds, err := atls.NewCredentials(atls.Config{Issuer: insecuredev.NewIssuer(), AcceptUnattestedPeer: true})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis.Close()
	s := New(lis, creds, cloisterstatus.New("disk-mapper", cloisterstatus.Options{}), slog.New(slog.DiscardHandler))
	if err := s.Run(context.Background(), unlock.NewChecker(fakeDisk{}, uuid)); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Run on a closed listener = %v, want an error", err)
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

// fakeClock is a settable clock for the backoff.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestWrongKeysBackOffAndLogOnce: an operator's first wrong keys are
// checked at once; then each try waits longer, unchecked, and the log gets
// one "recovery key refused" line, not one per key. The right key still
// opens the disk once the wait is over.
func TestWrongKeysBackOffAndLogOnce(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	r := startServerWithClock(t, clock.now)
	wrong := &recoveryv1.RecoverRequest{DiskKey: bytes.Repeat([]byte{2}, 32), MeasurementSecret: secret}
	steps := []struct {
		name     string
		advance  time.Duration
		req      *recoveryv1.RecoverRequest
		wantCode codes.Code
	}{
		{name: "wrong key 1", req: wrong, wantCode: codes.PermissionDenied},
		{name: "wrong key 2", req: wrong, wantCode: codes.PermissionDenied},
		{name: "wrong key 3", req: wrong, wantCode: codes.PermissionDenied},
		{name: "fourth try at once", req: wrong, wantCode: codes.ResourceExhausted},
		{name: "right key at once is not checked either", req: &recoveryv1.RecoverRequest{DiskKey: rightKey, MeasurementSecret: secret}, wantCode: codes.ResourceExhausted},
		{name: "wrong key 4 after 1s", advance: peerBase, req: wrong, wantCode: codes.PermissionDenied},
		{name: "after 1s more: the wait doubled", advance: peerBase, req: wrong, wantCode: codes.ResourceExhausted},
		{name: "right key after 2s", advance: peerBase, req: &recoveryv1.RecoverRequest{DiskKey: rightKey, MeasurementSecret: secret}, wantCode: codes.OK},
	}
	for _, s := range steps {
		clock.advance(s.advance)
		_, err := recover(t, r.addr, devPolicy, s.req)
		if got := status.Code(err); got != s.wantCode {
			t.Fatalf("%s: Recover = %v, want code %v", s.name, err, s.wantCode)
		}
	}
	if s := r.status.Snapshot(); s.GetAttempts() != 4 {
		t.Errorf("status counts %d attempts, want the 4 checked wrong keys", s.GetAttempts())
	}
	if n := bytes.Count(r.logs.Bytes(), []byte(`"msg":"recovery key refused"`)); n != 1 {
		t.Errorf("4 wrong keys wrote %d \"recovery key refused\" lines within a minute, want 1:\n%s", n, r.logs.Bytes())
	}
}

func TestBackoffDelays(t *testing.T) {
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{0, 0}, {2, 0}, {3, time.Second}, {4, 2 * time.Second}, {8, 32 * time.Second}, {9, time.Minute}, {1000, time.Minute},
	}
	for _, tt := range tests {
		if got := delay(tt.failures, freeFailures, peerBase, peerMax); got != tt.want {
			t.Errorf("delay after %d wrong keys = %v, want %v", tt.failures, got, tt.want)
		}
	}
	// Over all peers: many addresses, one wrong key each, still back off.
	b := newBackoff(func() time.Time { return time.Unix(0, 0) })
	for i := range globalFree {
		ip := string(rune('a' + i))
		if w := b.admit(ip); w != 0 {
			t.Fatalf("peer %d waits %v before its first key", i, w)
		}
		b.done(ip, true)
	}
	if w := b.admit("new peer"); w != globalBase {
		t.Errorf("after %d wrong keys from as many peers a new peer waits %v, want %v", globalFree, w, globalBase)
	}
}
