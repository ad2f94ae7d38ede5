// Package readiness decides whether the join service can serve joins: its
// policy is loaded, its cluster secrets are readable, and the Kubernetes API
// answered recently. The join service's health (grpc.health.v1
// "cloister.join.v1.JoinService" and "") and its /readyz follow a Monitor.
//
// The checks run in the Monitor's own loop, once per Interval, each bounded
// by Timeout; Ready and the probes only read the last result. So no number
// of probes (kubelet, grpc-health-probe, a load balancer) turns into calls
// to the Kubernetes API: at most one read per Interval.
package readiness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Check is one condition for serving joins.
type Check struct {
	// Name names the check in errors ("policy", "cluster-secrets",
	// "kubernetes").
	Name string
	// Probe returns nil when the condition holds. It must honour ctx.
	Probe func(ctx context.Context) error
}

// Options are a Monitor's settings; the zero value is the default.
type Options struct {
	// Interval between rounds of checks (default 10s).
	Interval time.Duration
	// Timeout bounds one check (default 5s).
	Timeout time.Duration
	// MaxAge is how old the last passing round may be (default three
	// Intervals): a loop that stopped running makes the service not ready
	// instead of ready forever.
	MaxAge time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnChange is called from the loop with Ready's new answer each time it
	// changes, the first round's answer included.
	OnChange func(err error)
}

// NotReadyError says which check failed and why.
type NotReadyError struct {
	Check string
	Err   error
}

func (e *NotReadyError) Error() string { return fmt.Sprintf("not ready: %s: %v", e.Check, e.Err) }
func (e *NotReadyError) Unwrap() error { return e.Err }

// Monitor runs the checks and keeps the last result.
type Monitor struct {
	checks []Check
	opts   Options

	// roundMu serializes rounds with their OnChange calls; mu guards the
	// fields below and is never held while a check or OnChange runs.
	roundMu sync.Mutex
	mu      sync.Mutex
	err     error     // the last round's failure, nil when it passed
	passed  time.Time // when the last round passed
	ran     bool
	told    bool   // OnChange was called at least once
	last    string // the answer OnChange saw last, as text ("" = ready)
}

// New returns a Monitor of checks, not ready until its first round.
func New(checks []Check, opts Options) (*Monitor, error) {
	if len(checks) == 0 {
		return nil, errors.New("readiness: no checks")
	}
	for i, c := range checks {
		if c.Name == "" || c.Probe == nil {
			return nil, fmt.Errorf("readiness: check %d needs a Name and a Probe", i)
		}
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 3 * opts.Interval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Monitor{checks: checks, opts: opts}, nil
}

// Run checks at once and then every Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		m.Round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Round runs every check once, in order, stopping at the first failure,
// records the result and reports a change to OnChange.
func (m *Monitor) Round(ctx context.Context) {
	m.roundMu.Lock()
	defer m.roundMu.Unlock()
	var failed error
	for _, c := range m.checks {
		cctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
		err := c.Probe(cctx)
		cancel()
		if err != nil {
			failed = &NotReadyError{Check: c.Name, Err: err}
			break
		}
	}
	m.mu.Lock()
	m.ran = true
	m.err = failed
	if failed == nil {
		m.passed = m.opts.Now()
	}
	m.mu.Unlock()
	m.notify()
}

// Ready returns nil when the last round passed no longer than MaxAge ago,
// and a *NotReadyError otherwise. It never runs a check.
func (m *Monitor) Ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.ran:
		return &NotReadyError{Check: "startup", Err: errors.New("no round of checks has finished yet")}
	case m.err != nil:
		return m.err
	case m.opts.Now().Sub(m.passed) > m.opts.MaxAge:
		return &NotReadyError{Check: "stale", Err: fmt.Errorf("last passed %v ago, want at most %v", m.opts.Now().Sub(m.passed).Round(time.Millisecond), m.opts.MaxAge)}
	}
	return nil
}

// notify calls OnChange when Ready's answer changed (by text: the same
// failure with new details is worth a new status line).
func (m *Monitor) notify() {
	if m.opts.OnChange == nil {
		return
	}
	now := m.Ready()
	text := ""
	if now != nil {
		text = now.Error()
	}
	m.mu.Lock()
	changed := !m.told || text != m.last
	m.told, m.last = true, text
	m.mu.Unlock()
	if changed {
		m.opts.OnChange(now)
	}
}
