package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cloister-dev/cloister/internal/status"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// startStatusPort serves the REAL status.Tracker on a plain gRPC port, as
// a node's status port does.
func startStatusPort(t *testing.T) (string, *status.Tracker) {
	t.Helper()
	tracker := status.New("disk-mapper", status.Options{Now: func() time.Time { return time.Unix(1795000000, 0) }})
	srv := grpc.NewServer()
	statusv1.RegisterStatusServiceServer(srv, tracker)
	return serve(t, srv), tracker
}

func TestStatus(t *testing.T) {
	addr, tracker := startStatusPort(t)
	tracker.SetPhase("waiting-for-key")
	tracker.SetDiskUUID(testDiskUUID)
	tracker.Attempt(errors.New("rejoin: tpm: pcr[4]: want aa, got bb \x1b[2J"))

	tests := []struct {
		format string
		want   string
	}{
		{format: "text", want: `component   disk-mapper
phase       waiting-for-key
since       2026-11-18T11:06:40Z
attempts    1
last error  rejoin: tpm: pcr[4]: want aa, got bb �[2J
disk UUID   2f1c0a8e-5b7d-4c1e-9a3f-6d2b8e4c1a70
`},
		{format: "json", want: `{
  "component": "disk-mapper",
  "phase": "waiting-for-key",
  "attempts": 1,
  "since": "2026-11-18T11:06:40Z",
  "lastError": "rejoin: tpm: pcr[4]: want aa, got bb �[2J",
  "diskUUID": "2f1c0a8e-5b7d-4c1e-9a3f-6d2b8e4c1a70"
}
`},
		{format: "yaml", want: `attempts: 1
component: disk-mapper
diskUUID: 2f1c0a8e-5b7d-4c1e-9a3f-6d2b8e4c1a70
lastError: 'rejoin: tpm: pcr[4]: want aa, got bb �[2J'
phase: waiting-for-key
since: "2026-11-18T11:06:40Z"
`},
	}
	for _, tc := range tests {
		t.Run(tc.format, func(t *testing.T) {
			r := runCLI(t, "status", "--node", addr, "-o", tc.format)
			r.wantCode(t, exitOK)
			if r.stdout != tc.want {
				t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, tc.want)
			}
		})
	}
	t.Run("nothing listens", func(t *testing.T) {
		r := runCLI(t, "status", "--node", closedAddr(t))
		r.wantCode(t, exitUnavailable)
	})
	t.Run("bad address", func(t *testing.T) {
		r := runCLI(t, "status", "--node", "no-port")
		r.wantCode(t, exitUsage)
		if !strings.Contains(r.stderr, "want HOST:PORT") {
			t.Errorf("stderr:\n%s", r.stderr)
		}
	})
}
