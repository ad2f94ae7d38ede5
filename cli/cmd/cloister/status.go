package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

const statusUsage = `Usage:
  cloister status --node HOST:PORT [-o text|json|yaml]

Print what a node's daemon is doing: component (disk-mapper, bootstrapper,
joinservice), phase, attempts, the last error and the state disk's UUID.

--node is the node's plain status port. It is NOT authenticated: anyone
between you and the node can change the answer. Use it to see why a node
waits, never to decide what to trust ('cloister verify' attests).

Examples:
  cloister status --node 10.0.0.5:9101
  cloister status --node 10.0.0.5:9101 -o json
`

type statusOptions struct {
	node   nodeFlags
	output outputFormat
}

func statusCommand() *command {
	return &command{
		name:    "status",
		summary: "print a node's status (unauthenticated)",
		usage:   statusUsage,
		setup: func(e *env, fs *flag.FlagSet) func(context.Context) error {
			var o statusOptions
			o.node.register(fs, "its plain status port", 30*time.Second)
			registerOutput(fs, &o.output)
			return func(ctx context.Context) error { return runStatus(ctx, e, o) }
		},
	}
}

// statusReport is status.v1 as the CLI prints it. Its json names are stable.
type statusReport struct {
	Component string `json:"component"`
	Phase     string `json:"phase"`
	Attempts  uint32 `json:"attempts"`
	Since     string `json:"since,omitempty"`
	LastError string `json:"lastError,omitempty"`
	DiskUUID  string `json:"diskUUID,omitempty"`
}

func newStatusReport(st *statusv1.GetResponse) *statusReport {
	r := &statusReport{
		Component: untrusted(st.GetComponent()),
		Phase:     untrusted(st.GetPhase()),
		Attempts:  st.GetAttempts(),
		LastError: untrusted(st.GetLastError()),
		DiskUUID:  untrusted(st.GetDiskUuid()),
	}
	if st.GetSince() > 0 {
		r.Since = time.Unix(st.GetSince(), 0).UTC().Format(time.RFC3339)
	}
	return r
}

func runStatus(ctx context.Context, e *env, o statusOptions) error {
	if err := o.node.check("status"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.node.timeout)
	defer cancel()
	conn, err := dialPlain(o.node.node)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := statusv1.NewStatusServiceClient(conn).Get(ctx, &statusv1.GetRequest{})
	if err != nil {
		return explainCall(o.node.node, err, "reading the status of")
	}
	r := newStatusReport(st)
	return printData(e.stdout, o.output, r, func(w io.Writer) { printStatusText(w, r) })
}

func printStatusText(w io.Writer, r *statusReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "component\t%s\n", r.Component)
	fmt.Fprintf(tw, "phase\t%s\n", r.Phase)
	if r.Since != "" {
		fmt.Fprintf(tw, "since\t%s\n", r.Since)
	}
	fmt.Fprintf(tw, "attempts\t%d\n", r.Attempts)
	if r.LastError != "" {
		fmt.Fprintf(tw, "last error\t%s\n", r.LastError)
	}
	if r.DiskUUID != "" {
		fmt.Fprintf(tw, "disk UUID\t%s\n", r.DiskUUID)
	}
	tw.Flush()
}
