package readiness

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeKubernetes is a FAKE Kubernetes API probe: it counts its calls and
// fails while down.
type fakeKubernetes struct {
	mu    sync.Mutex
	down  bool
	calls int
}

func (f *fakeKubernetes) probe(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return errors.New("connection refused")
	}
	return nil
}

func TestMonitorFollowsTheChecks(t *testing.T) {
	kube := &fakeKubernetes{}
	now := time.Unix(1000, 0)
	var changes []error
	m, err := New([]Check{
		{Name: "policy", Probe: func(context.Context) error { return nil }},
		{Name: "kubernetes", Probe: kube.probe},
	}, Options{Interval: time.Second, Now: func() time.Time { return now }, OnChange: func(err error) { changes = append(changes, err) }})
	if err != nil {
		t.Fatal(err)
	}
	checkName := func(err error) string {
		var nr *NotReadyError
		if !errors.As(err, &nr) {
			return ""
		}
		return nr.Check
	}
	ctx := context.Background()
	if got := checkName(m.Ready()); got != "startup" {
		t.Errorf("before the first round: not ready by %q, want startup", got)
	}
	m.Round(ctx)
	if err := m.Ready(); err != nil {
		t.Errorf("all checks pass: %v", err)
	}
	kube.down = true
	m.Round(ctx)
	if got := checkName(m.Ready()); got != "kubernetes" {
		t.Errorf("Kubernetes unreachable: not ready by %q, want kubernetes", got)
	}
	kube.down = false
	m.Round(ctx)
	if err := m.Ready(); err != nil {
		t.Errorf("Kubernetes back: %v", err)
	}
	now = now.Add(4 * time.Second) // past MaxAge (3 Intervals): the loop stopped
	if got := checkName(m.Ready()); got != "stale" {
		t.Errorf("no round for 4 s: not ready by %q, want stale", got)
	}
	if len(changes) != 3 || changes[0] != nil || checkName(changes[1]) != "kubernetes" || changes[2] != nil {
		t.Errorf("OnChange saw %v, want [nil, kubernetes, nil]", changes)
	}
}

// TestReadyNeverProbes: probes (kubelet, load balancers) read the last
// answer; only the loop calls the Kubernetes API, once per Interval.
func TestReadyNeverProbes(t *testing.T) {
	kube := &fakeKubernetes{}
	m, err := New([]Check{{Name: "kubernetes", Probe: kube.probe}}, Options{Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	start := time.Now()
	for i := 0; i < 100000; i++ {
		_ = m.Ready()
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	<-done
	elapsed := time.Since(start)
	kube.mu.Lock()
	calls := kube.calls
	kube.mu.Unlock()
	if max := int(elapsed/(50*time.Millisecond)) + 2; calls > max {
		t.Errorf("%d Kubernetes calls in %v with 100000 Ready calls, want at most %d (one per Interval)", calls, elapsed, max)
	}
	if calls == 0 {
		t.Error("the loop never probed")
	}
}

func TestNewRefusesEmptyChecks(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New without checks: want an error")
	}
	if _, err := New([]Check{{Name: "x"}}, Options{}); err == nil {
		t.Error("New with a check without Probe: want an error")
	}
}
