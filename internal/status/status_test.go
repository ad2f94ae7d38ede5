package status

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// fakeClock is a fake clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestTrackerPhasesAndAttempts(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	var lines []string
	tr := New("disk-mapper", Options{Now: clock.now, OnChange: func(l string) { lines = append(lines, l) }})

	want := &statusv1.GetResponse{Component: "disk-mapper", Phase: InitialPhase, Since: 1_800_000_000}
	if got := tr.Snapshot(); !proto.Equal(got, want) {
		t.Fatalf("new tracker: %v, want %v", got, want)
	}

	clock.advance(time.Minute)
	tr.SetPhase("waiting-for-key")
	tr.SetDiskUUID("0c5f1c9e-3b1a-4e59-9a3c-6c1f0d2e7b11")
	tr.Attempt(errors.New("join service 10.0.0.1:9000: tpm: pcr[4]: want 4f1c, got 9a02"))
	tr.Attempt(errors.New("dial 10.0.0.1:9000: connection refused\nretrying"))
	want = &statusv1.GetResponse{
		Component: "disk-mapper", Phase: "waiting-for-key", Attempts: 2, Since: 1_800_000_060,
		LastError: "dial 10.0.0.1:9000: connection refused retrying",
		DiskUuid:  "0c5f1c9e-3b1a-4e59-9a3c-6c1f0d2e7b11",
	}
	if got := tr.Snapshot(); !proto.Equal(got, want) {
		t.Fatalf("after two failed attempts: %v, want %v", got, want)
	}

	tr.Attempt(nil)
	if got := tr.Snapshot(); got.GetAttempts() != 3 || got.GetLastError() != "" {
		t.Fatalf("successful attempt: attempts %d, last error %q; want 3 and none", got.GetAttempts(), got.GetLastError())
	}

	clock.advance(time.Minute)
	tr.Attempt(errors.New("boom"))
	tr.SetPhase("mounting")
	want = &statusv1.GetResponse{Component: "disk-mapper", Phase: "mounting", Since: 1_800_000_120, DiskUuid: "0c5f1c9e-3b1a-4e59-9a3c-6c1f0d2e7b11"}
	if got := tr.Snapshot(); !proto.Equal(got, want) {
		t.Fatalf("new phase did not reset: %v, want %v", got, want)
	}

	wantLines := []string{
		"waiting-for-key",
		"waiting-for-key", // disk UUID set: the line is unchanged but still reported
		"waiting-for-key (attempt 1): join service 10.0.0.1:9000: tpm: pcr[4]: want 4f1c, got 9a02",
		"waiting-for-key (attempt 2): dial 10.0.0.1:9000: connection refused retrying",
		"waiting-for-key (attempt 3)",
		"waiting-for-key (attempt 4): boom",
		"mounting",
	}
	if !slices.Equal(lines, wantLines) {
		t.Fatalf("OnChange lines:\n%q\nwant\n%q", lines, wantLines)
	}
	if got := tr.Line(); got != "mounting" {
		t.Fatalf("Line = %q", got)
	}
}

func TestTrackerCapsLongErrors(t *testing.T) {
	tr := New("bootstrapper", Options{})
	tr.Attempt(errors.New(strings.Repeat("é", 1000)))
	got := tr.Snapshot().GetLastError()
	if len(got) > maxErrorLen+len("…") || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Fatalf("long error kept as %d bytes (valid UTF-8 %v)", len(got), utf8.ValidString(got))
	}
}

func TestTrackerConcurrentUse(t *testing.T) {
	var mu sync.Mutex
	last := ""
	tr := New("joinservice", Options{OnChange: func(l string) {
		mu.Lock()
		last = l
		mu.Unlock()
	}})
	var wg sync.WaitGroup
	const workers, rounds = 4, 200
	for range workers {
		wg.Go(func() {
			for i := range rounds {
				switch i % 4 {
				case 0:
					tr.SetPhase("serving")
				case 1:
					tr.Attempt(errors.New("worker error"))
				case 2:
					tr.SetDiskUUID("uuid")
				default:
					if _, err := tr.Get(context.Background(), &statusv1.GetRequest{}); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	// The last OnChange call must describe the final state: calls arrive in
	// the order of the changes.
	mu.Lock()
	defer mu.Unlock()
	if want := tr.Line(); last != want {
		t.Fatalf("last OnChange line %q, final state %q", last, want)
	}
	if s := tr.Snapshot(); s.GetPhase() != "serving" || s.GetAttempts() > workers*rounds/4 {
		t.Fatalf("final snapshot %v", s)
	}
}

func TestStatusServiceOverGRPC(t *testing.T) {
	tr := New("bootstrapper", Options{})
	tr.SetPhase("waiting-for-join-service")
	tr.Attempt(errors.New("no join service answered"))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	statusv1.RegisterStatusServiceServer(srv, tr)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	// Insecure credentials on purpose: the status service is read-only and
	// unauthenticated by design (see doc.go).
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := statusv1.NewStatusServiceClient(conn).Get(ctx, &statusv1.GetRequest{})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if want := tr.Snapshot(); !proto.Equal(got, want) {
		t.Fatalf("Get over gRPC = %v, want %v", got, want)
	}
	if got.GetAttempts() != 1 || got.GetLastError() != "no join service answered" {
		t.Fatalf("Get over gRPC = %v", got)
	}
}

func TestOnChangeMayReadTracker(t *testing.T) {
	var tr *Tracker
	var seen []string
	tr = New("disk-mapper", Options{OnChange: func(line string) {
		// Reading the tracker from OnChange must not deadlock.
		seen = append(seen, tr.Snapshot().GetPhase()+"|"+tr.Line()+"|"+line)
	}})
	tr.SetPhase("recovering")
	if want := []string{"recovering|recovering|recovering"}; !slices.Equal(seen, want) {
		t.Fatalf("OnChange saw %q, want %q", seen, want)
	}
}
