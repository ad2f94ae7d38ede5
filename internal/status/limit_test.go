package status

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestPlainServerConnectionCap fills the plain port's connection cap with
// raw TCP connections that never speak (a client hoarding connections),
// shows a legitimate probe is held while they are open, and answered once
// they close. Before the cap, every hoarded connection was served and
// nothing bounded their number.
func TestPlainServerConnectionCap(t *testing.T) {
	const maxConns = 3
	p := newPlainServer(New("bootstrapper", Options{}), maxConns, time.Minute)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(lis) }()
	t.Cleanup(func() {
		p.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	addr := lis.Addr().String()

	var hoarded []net.Conn
	for range maxConns + 2 { // two more than the cap wait in the queue
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		hoarded = append(hoarded, c)
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h := healthpb.NewHealthClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err = h.Check(ctx, &healthpb.HealthCheckRequest{})
	cancel()
	if err == nil {
		t.Fatalf("a probe was answered while %d connections held the cap of %d", len(hoarded), maxConns)
	}

	for _, c := range hoarded {
		c.Close()
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after the hoarded connections closed: %v, %v; want SERVING", resp, err)
	}
}

// TestPlainServerClosesSilentConnections: a connection that never sends
// the HTTP/2 preface is closed after the connection timeout, so silent
// connections cannot keep the cap's slots forever.
func TestPlainServerClosesSilentConnections(t *testing.T) {
	const timeout = 300 * time.Millisecond
	p := newPlainServer(New("bootstrapper", Options{}), 2, timeout)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.Serve(lis) }()
	t.Cleanup(p.Stop)
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if err := c.SetReadDeadline(start.Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// The server speaks first (its SETTINGS frame), then closes.
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("reading until the server closes: %v", err)
	}
	if took := time.Since(start); took > timeout+5*time.Second {
		t.Errorf("silent connection closed after %v, want about %v", took, timeout)
	}
}
