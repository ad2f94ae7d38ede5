package harness

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// WaitStatus polls status.v1 (plain gRPC, read-only) at addr until ok
// accepts the answer, and returns it; it fails t after d with the last answer
// or error. disk-mapper and the bootstrapper serve it on the same port, one
// after the other.
func WaitStatus(t TB, addr string, d time.Duration, ok func(*statusv1.GetResponse) bool) *statusv1.GetResponse {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("status client for %s: %v", addr, err)
	}
	defer conn.Close()
	client := statusv1.NewStatusServiceClient(conn)
	deadline := time.Now().Add(d)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := client.Get(ctx, &statusv1.GetRequest{})
		cancel()
		if err == nil && ok(resp) {
			return resp
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("component=%s phase=%s last_error=%q attempts=%d", resp.GetComponent(), resp.GetPhase(), resp.GetLastError(), resp.GetAttempts())
		}
		if time.Now().After(deadline) {
			t.Fatalf("status at %s: not as expected after %s; last: %s", addr, d, last)
		}
		time.Sleep(time.Second)
	}
}
