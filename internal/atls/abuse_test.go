package atls

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// Abusive clients against the server side of Credentials, each on real TLS
// over 127.0.0.1.

// serveRaw accepts connections on 127.0.0.1 and runs ServerHandshake on each
// (no gRPC); accepted connections are closed at once. Handshake errors go
// to errs when there is room.
func serveRaw(tb testing.TB, creds *Credentials) (addr string, errs <-chan error) {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listening: %v", err)
	}
	ch := make(chan error, 1024)
	var wg sync.WaitGroup
	tb.Cleanup(func() { _ = lis.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			raw, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				conn, _, err := creds.ServerHandshake(raw)
				if err == nil {
					_ = conn.Close()
					return
				}
				select {
				case ch <- err:
				default:
				}
			})
		}
	})
	return lis.Addr().String(), ch
}

// generous lifts the connection limits so a test reaches the one it means.
func generous(l Limits) Limits {
	if l.MaxUnauthenticated == 0 {
		l.MaxUnauthenticated = 10000
	}
	if l.MaxUnauthenticatedPerIP == 0 {
		l.MaxUnauthenticatedPerIP = 10000
	}
	if l.HandshakesPerSecondPerIP == 0 {
		l.HandshakesPerSecondPerIP, l.HandshakeBurstPerIP = 10000, 10000
	}
	if l.QuotesPerSecond == 0 {
		l.QuotesPerSecond, l.QuoteBurst = 10000, 10000
	}
	if l.QuotesPerSecondPerIP == 0 {
		l.QuotesPerSecondPerIP, l.QuoteBurstPerIP = 10000, 10000
	}
	return l
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestUnauthenticatedFrameMemoryBounded: many connections each announce a
// maximum-size frame and send all of it but one byte, then hold the
// connection until the handshake timeout. Before the fix each held a
// buffer of 1.5-2x the frame (the join service reached 2 GiB from one IP);
// now the frames together stay within Limits.FrameMemory.
func TestUnauthenticatedFrameMemoryBounded(t *testing.T) {
	const (
		conns       = 48
		frameMemory = 8 << 20
		// Per connection, both TLS ends in this process, goroutines and
		// buffers of crypto/tls: measured about 60 KiB.
		perConnOverhead = 256 << 10
	)
	creds := mustCredentials(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(t), HandshakeTimeout: 20 * time.Second,
		Limits: generous(Limits{FrameMemory: frameMemory})})
	addr, errs := serveRaw(t, creds)
	chunk := make([]byte, 32<<10) // shared, read-only: the clients cost no frame memory themselves
	before := heapInUse()

	var wg sync.WaitGroup
	var held []*tls.Conn
	var mu sync.Mutex
	for range conns {
		wg.Go(func() {
			conn, _ := dialRawTLS(t, addr)
			mu.Lock()
			held = append(held, conn)
			mu.Unlock()
			if _, err := conn.Write(header(MaxFrameSize)); err != nil {
				return
			}
			for sent := 0; sent < MaxFrameSize-1; {
				n := min(len(chunk), MaxFrameSize-1-sent)
				if _, err := conn.Write(chunk[:n]); err != nil {
					return // refused by the budget: the server closed
				}
				sent += n
			}
		})
	}
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // the server reads what was sent
	grown := int64(heapInUse()) - int64(before)
	bound := int64(frameMemory + conns*perConnOverhead)
	t.Logf("%d connections holding a %d-byte frame short of one byte: heap grew by %.1f MiB (bound %.1f MiB, frame budget %d MiB)",
		conns, MaxFrameSize, float64(grown)/(1<<20), float64(bound)/(1<<20), frameMemory>>20)
	if grown > bound {
		t.Errorf("heap grew by %d bytes for %d unauthenticated connections, want at most %d", grown, conns, bound)
	}
	var busy int
	for len(errs) > 0 {
		if err := <-errs; errors.Is(err, ErrBusy) {
			busy++
			if c := Code(err); c != codes.Unavailable {
				t.Errorf("Code(%v) = %v, want Unavailable", err, c)
			}
		}
	}
	if busy == 0 {
		t.Errorf("no handshake refused with ErrBusy: the budget of %d bytes was never reached by %d frames", frameMemory, conns)
	}
	runtime.KeepAlive(held)
}

// TestTricklingPeerCostsWhatItSent: a frame's buffer grows with the bytes
// that arrived, not with the length the peer announced.
func TestTricklingPeerCostsWhatItSent(t *testing.T) {
	b := &budget{limit: 1 << 30}
	mem := &charge{b: b}
	in := append(header(MaxFrameSize), make([]byte, 100<<10)...)
	if _, err := readFrame(&slowReader{data: in}, mem); err == nil {
		t.Fatal("readFrame of a truncated frame succeeded")
	}
	// 100 KiB arrived: buffers of 16+32+64+128 KiB were charged.
	if want := int64(240 << 10); mem.taken > want {
		t.Errorf("charged %d bytes for 100 KiB received of %d announced, want at most %d", mem.taken, MaxFrameSize, want)
	}
	mem.release()
	if b.used != 0 {
		t.Errorf("budget holds %d bytes after release, want 0", b.used)
	}
}

// fakeCountingIssuer is insecure-dev evidence that counts Issue calls and
// takes delay per call, one call at a time like a TPM.
type fakeCountingIssuer struct {
	delay time.Duration
	calls atomic.Int64
	mu    sync.Mutex // a device quotes one request at a time
}

func (*fakeCountingIssuer) Variant() attestation.Variant { return attestation.VariantInsecureDev }

func (f *fakeCountingIssuer) Issue(ctx context.Context, userData []byte) (*attestationv1.Evidence, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.Add(1)
	time.Sleep(f.delay)
	return insecuredev.NewIssuer().Issue(ctx, userData)
}

// floodUnattested runs workers clients that do not attest against addr for
// window; each completes a handshake (or fails) and closes.
func floodUnattested(tb testing.TB, addr string, workers int, window time.Duration) (ok, failed int64) {
	tb.Helper()
	client := mustCredentials(tb, Config{Verifier: insecureDevValidators(tb), HandshakeTimeout: 5 * time.Second})
	var okN, failN atomic.Int64
	deadline := time.Now().Add(window)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					failN.Add(1)
					continue
				}
				conn, _, err := client.ClientHandshake(context.Background(), "", raw)
				if err != nil {
					failN.Add(1)
					continue
				}
				okN.Add(1)
				_ = conn.Close()
			}
		})
	}
	wg.Wait()
	return okN.Load(), failN.Load()
}

func TestQuotesForUnattestedPeersRateLimited(t *testing.T) {
	const window = 1500 * time.Millisecond
	tests := []struct {
		name   string
		limits Limits
		rate   float64
		burst  int
	}{
		{name: "global bucket", limits: Limits{QuotesPerSecond: 4, QuoteBurst: 6}, rate: 4, burst: 6},
		{name: "per-IP bucket", limits: Limits{QuotesPerSecondPerIP: 2, QuoteBurstPerIP: 3}, rate: 2, burst: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issuer := &fakeCountingIssuer{}
			creds := mustCredentials(t, Config{Issuer: issuer, AcceptUnattestedPeer: true, HandshakeTimeout: 5 * time.Second, Limits: generous(tt.limits)})
			addr, _ := serveRaw(t, creds)
			start := time.Now()
			ok, failed := floodUnattested(t, addr, 8, window)
			elapsed := time.Since(start)
			calls := issuer.calls.Load()
			limit := int64(float64(tt.burst) + tt.rate*elapsed.Seconds() + 1)
			t.Logf("flood of %v: %d handshakes completed, %d refused; %d Issue calls, limit rate*t+burst = %d", elapsed, ok, failed, calls, limit)
			if calls > limit {
				t.Errorf("issued %d quotes for unattested peers in %v, want at most %d (rate %v/s, burst %d)", calls, elapsed, limit, tt.rate, tt.burst)
			}
			if calls < int64(tt.burst) || failed == 0 {
				t.Errorf("issued %d quotes, refused %d handshakes: the flood never reached the limit", calls, failed)
			}
		})
	}
}

// TestOwnQuoteLatencyUnderFloodWithFakeSlowIssuer: a FAKE issuer that takes
// 100 ms per quote, one at a time, stands for a slow TPM. Peers flood the
// node's attested port (a server with AcceptUnattestedPeer, issuing
// through PriorityIssuer.Peers); the node's own Issue (Own) waits at most
// for the one peer quote in progress. The same flood against the device
// without the gate is measured for comparison.
func TestOwnQuoteLatencyUnderFloodWithFakeSlowIssuer(t *testing.T) {
	const delay = 100 * time.Millisecond
	gated := ownLatencyUnderFlood(t, delay, true)
	ungated := ownLatencyUnderFlood(t, delay, false)
	t.Logf("own quote latency under a flood (fake issuer, %v per quote): with PriorityIssuer min %v, median %v, max %v; without: min %v, median %v, max %v",
		delay, gated[0], gated[len(gated)/2], gated[len(gated)-1], ungated[0], ungated[len(ungated)/2], ungated[len(ungated)-1])
	// One peer quote in progress plus its own, and slack for a loaded
	// 2-core machine running the flood's TLS handshakes.
	if worst := gated[len(gated)-1]; worst > 2*delay+300*time.Millisecond {
		t.Errorf("own quote took %v under a flood, want about one peer quote plus its own (%v)", worst, 2*delay)
	}
}

// ownLatencyUnderFlood floods a server that issues for unattested peers
// and measures the node's own Issue, sorted.
func ownLatencyUnderFlood(t *testing.T, delay time.Duration, useGate bool) []time.Duration {
	t.Helper()
	device := &fakeCountingIssuer{delay: delay}
	own, peers := attestation.Issuer(device), attestation.Issuer(device)
	if useGate {
		gate, err := NewPriorityIssuer(device, 0)
		if err != nil {
			t.Fatal(err)
		}
		own, peers = gate.Own(), gate.Peers()
	}
	// Default global quote limit: 10/s keeps this device busy all the time.
	creds := mustCredentials(t, Config{Issuer: peers, AcceptUnattestedPeer: true, HandshakeTimeout: 5 * time.Second,
		Limits: Limits{MaxUnauthenticatedPerIP: 64, HandshakesPerSecondPerIP: 1000, HandshakeBurstPerIP: 1000, QuotesPerSecondPerIP: 1000, QuoteBurstPerIP: 1000}})
	addr, _ := serveRaw(t, creds)
	floodDone := make(chan struct{})
	go func() { defer close(floodDone); floodUnattested(t, addr, 16, 2500*time.Millisecond) }()
	time.Sleep(300 * time.Millisecond) // the flood is on
	var lat []time.Duration
	for range 8 {
		start := time.Now()
		if _, err := own.Issue(context.Background(), make([]byte, 32)); err != nil {
			t.Fatalf("own Issue under flood: %v", err)
		}
		lat = append(lat, time.Since(start))
		time.Sleep(50 * time.Millisecond)
	}
	<-floodDone
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}

func TestPriorityIssuerOrderAndBoundedQueue(t *testing.T) {
	release := make(chan struct{})
	started := make(chan string, 16)
	device := &fakeBlockingIssuer{release: release, started: started}
	gate, err := NewPriorityIssuer(device, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan error, 16)
	issue := func(iss attestation.Issuer, name string) {
		go func() { _, err := iss.Issue(ctx, []byte(name)); done <- err }()
	}
	issue(gate.Peers(), "peer-0") // holds the device
	if got := <-started; got != "peer-0" {
		t.Fatalf("first on the device: %s", got)
	}
	issue(gate.Peers(), "peer-1")
	issue(gate.Peers(), "peer-2")
	waitQueued(t, gate, 0, 2)
	// The queue for peers is full: the next fails at once.
	if _, err := gate.Peers().Issue(ctx, []byte("peer-3")); !errors.Is(err, ErrBusy) || Code(err) != codes.Unavailable {
		t.Errorf("peer Issue with a full queue: %v, want ErrBusy (Unavailable)", err)
	}
	issue(gate.Own(), "own")
	waitQueued(t, gate, 1, 2)
	release <- struct{}{} // peer-0 ends
	if got := <-started; got != "own" {
		t.Errorf("after the peer quote in progress, %s got the device, want own", got)
	}
	for range 3 {
		release <- struct{}{}
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Errorf("Issue: %v", err)
		}
	}
}

func waitQueued(t *testing.T, g *PriorityIssuer, own, peer int) {
	t.Helper()
	for deadline := time.Now().Add(testTimeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		g.mu.Lock()
		o, p := len(g.own), len(g.peer)
		g.mu.Unlock()
		if o == own && p == peer {
			return
		}
	}
	t.Fatalf("queues never reached own=%d peer=%d", own, peer)
}

// fakeBlockingIssuer reports each Issue's userData and blocks it until
// released.
type fakeBlockingIssuer struct {
	release chan struct{}
	started chan string
}

func (*fakeBlockingIssuer) Variant() attestation.Variant { return attestation.VariantInsecureDev }

func (f *fakeBlockingIssuer) Issue(ctx context.Context, userData []byte) (*attestationv1.Evidence, error) {
	f.started <- string(userData)
	<-f.release
	return insecuredev.NewIssuer().Issue(ctx, bytes.Repeat([]byte{1}, 32))
}

func TestConnectionLimitsRefuseFast(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		open   int // silent connections held first
	}{
		{name: "unauthenticated connections per IP", limits: Limits{MaxUnauthenticatedPerIP: 2}, open: 2},
		{name: "unauthenticated connections in total", limits: Limits{MaxUnauthenticated: 3}, open: 3},
		{name: "connection rate per IP", limits: Limits{HandshakesPerSecondPerIP: 0.001, HandshakeBurstPerIP: 2}, open: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds := mustCredentials(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(t), HandshakeTimeout: 5 * time.Second, Limits: generous(tt.limits)})
			addr, errs := serveRaw(t, creds)
			for range tt.open {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
			}
			time.Sleep(100 * time.Millisecond) // the server admitted them
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			start := time.Now()
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscallReset) {
				t.Errorf("connection over the limit: read %v, want it closed", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("connection over the limit closed after %v, want at once", d)
			}
			err = waitError(t, errs)
			if !errors.Is(err, ErrBusy) || Code(err) != codes.Unavailable {
				t.Errorf("server error %v (code %v), want ErrBusy, Unavailable", err, Code(err))
			}
		})
	}
}

// TestRefusalsLoggedRateLimited: a flood of refused connections writes a
// bounded number of log lines, not one per connection.
func TestRefusalsLoggedRateLimited(t *testing.T) {
	var logs lockedBuffer
	creds := mustCredentials(t, Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(t), HandshakeTimeout: time.Second,
		Log: slog.New(slog.NewJSONHandler(&logs, nil)), Limits: Limits{HandshakesPerSecondPerIP: 0.001, HandshakeBurstPerIP: 1}})
	addr, _ := serveRaw(t, creds)
	const flood = 100
	for range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	out := logs.String()
	refused := strings.Count(out, "attested TLS connection refused")
	failed := strings.Count(out, "attested TLS handshake failed")
	if refused != 1 || failed > 1 {
		t.Errorf("%d refused connections wrote %d refusal lines and %d failure lines, want 1 and at most 1 per minute:\n%s", flood-1, refused, failed, out)
	}
}

func TestLimitsRefusedWhenNegativeOrTooSmall(t *testing.T) {
	for _, l := range []Limits{{MaxUnauthenticated: -1}, {QuotesPerSecond: -1}, {FrameMemory: MaxFrameSize}} {
		if _, err := NewCredentials(Config{Issuer: insecuredev.NewIssuer(), Verifier: insecureDevValidators(t), Limits: l}); err == nil || !strings.Contains(err.Error(), "Config.Limits.") {
			t.Errorf("NewCredentials with Limits %+v: %v, want an error naming the field", l, err)
		}
	}
}

// lockedBuffer is a log sink safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// syscallReset is a connection reset, which a closed connection may report
// instead of EOF.
var syscallReset = syscall.ECONNRESET

// TestClientOverQuoteLimitIsToldBusy: a client beyond the quote limit for
// unattested peers gets a busy refusal it can act on (ErrBusy, Unavailable:
// retry), not a connection closed where it waits for the server's
// evidence, and not a verdict on its attestation (PermissionDenied).
func TestClientOverQuoteLimitIsToldBusy(t *testing.T) {
	issuer := &fakeCountingIssuer{}
	creds := mustCredentials(t, Config{Issuer: issuer, AcceptUnattestedPeer: true, HandshakeTimeout: 5 * time.Second,
		Limits: generous(Limits{QuotesPerSecondPerIP: 0.001, QuoteBurstPerIP: 1})})
	addr, _ := serveRaw(t, creds)
	client := mustCredentials(t, Config{Verifier: insecureDevValidators(t), HandshakeTimeout: 5 * time.Second})
	handshake := func() error {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn, _, err := client.ClientHandshake(context.Background(), "", raw)
		if err == nil {
			_ = conn.Close()
		}
		return err
	}
	if err := handshake(); err != nil {
		t.Fatalf("first handshake (within the burst): %v", err)
	}
	err := handshake()
	var refused *RefusedError
	if !errors.As(err, &refused) || !refused.Busy || !errors.Is(err, ErrBusy) {
		t.Fatalf("second handshake: want a busy *RefusedError wrapping ErrBusy, got %v", err)
	}
	if got := Code(err); got != codes.Unavailable {
		t.Fatalf("Code(%v) = %v, want Unavailable", err, got)
	}
	if n := issuer.calls.Load(); n != 1 {
		t.Fatalf("the server issued %d quotes, want 1 (the refused peer must cost none)", n)
	}
}
