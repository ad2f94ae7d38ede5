package retry

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func fixedRand(r float64) func() float64 { return func() float64 { return r } }

func mustDefaults(t *testing.T, b Backoff) Backoff {
	t.Helper()
	b, err := b.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDelayGrowsAndCaps(t *testing.T) {
	b := mustDefaults(t, Backoff{Initial: time.Second, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.2, Rand: fixedRand(0.5)})
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for i, w := range want {
		if got := b.delay(i + 1); got != w*time.Second {
			t.Errorf("delay(%d) = %v, want %v", i+1, got, w*time.Second)
		}
	}
	// Far beyond the cap the growth must neither overflow nor exceed Max.
	if got := b.delay(10_000); got != 30*time.Second {
		t.Errorf("delay(10000) = %v, want 30s", got)
	}
}

func TestDelayJitterBounds(t *testing.T) {
	tests := []struct {
		name string
		r    float64
		n    int
		want time.Duration
	}{
		{name: "lowest draw shortens by the full jitter", r: 0, n: 1, want: 800 * time.Millisecond},
		{name: "middle draw keeps the wait", r: 0.5, n: 2, want: 2 * time.Second},
		{name: "highest draw lengthens by almost the full jitter", r: 0.9999999999, n: 3, want: 4800 * time.Millisecond},
		{name: "jitter never exceeds the cap", r: 0.9999999999, n: 20, want: 30 * time.Second},
		{name: "jitter shortens at the cap", r: 0, n: 20, want: 24 * time.Second},
		{name: "out-of-range Rand gets no jitter", r: 7, n: 1, want: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := mustDefaults(t, Backoff{Jitter: 0.2, Rand: fixedRand(tc.r)})
			got := b.delay(tc.n)
			if diff := got - tc.want; diff < -time.Microsecond || diff > time.Microsecond {
				t.Fatalf("delay(%d) with r=%v = %v, want %v", tc.n, tc.r, got, tc.want)
			}
		})
	}
	// With the real Rand, every draw stays in [0.8, 1.2]·wait.
	b := mustDefaults(t, Backoff{Jitter: 0.2})
	for range 1000 {
		if got := b.delay(3); got < 3200*time.Millisecond || got > 4800*time.Millisecond {
			t.Fatalf("delay(3) = %v, outside [3.2s, 4.8s]", got)
		}
	}
}

func TestZeroBackoffTakesDefaults(t *testing.T) {
	b := mustDefaults(t, Backoff{})
	if b.Initial != time.Second || b.Max != 30*time.Second || b.Multiplier != 2 || b.Jitter != 0 {
		t.Fatalf("zero Backoff became %+v", b)
	}
}

func TestDoRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name    string
		b       Backoff
		timeout time.Duration
	}{
		{name: "negative initial", b: Backoff{Initial: -1}},
		{name: "negative max", b: Backoff{Max: -1}},
		{name: "shrinking multiplier", b: Backoff{Multiplier: 0.5}},
		{name: "jitter of 100%", b: Backoff{Jitter: 1}},
		{name: "negative jitter", b: Backoff{Jitter: -0.1}},
		{name: "max below initial", b: Backoff{Initial: time.Minute, Max: time.Second}},
		{name: "negative attempt timeout", timeout: -time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := Do(context.Background(), tc.b, tc.timeout, func(context.Context) error { calls++; return nil }, nil)
			if err == nil {
				t.Fatal("accepted bad options")
			}
			if calls != 0 {
				t.Fatalf("ran %d attempts with bad options", calls)
			}
		})
	}
}

// short is a backoff fast enough for tests.
func short() Backoff {
	return Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond, Multiplier: 2, Jitter: 0.2, Rand: fixedRand(0.5)}
}

func TestDoCallsOnErrorWithAttemptNumbers(t *testing.T) {
	errBusy := errors.New("join service busy")
	var seen []int
	calls := 0
	err := Do(context.Background(), short(), time.Second, func(context.Context) error {
		calls++
		if calls < 4 {
			return errBusy
		}
		return nil
	}, func(n int, err error) {
		if !errors.Is(err, errBusy) {
			t.Errorf("onError(%d) got %v", n, err)
		}
		seen = append(seen, n)
	})
	if err != nil {
		t.Fatalf("Do = %v", err)
	}
	if calls != 4 || !slices.Equal(seen, []int{1, 2, 3}) {
		t.Fatalf("calls = %d, onError attempts = %v; want 4 and [1 2 3]", calls, seen)
	}
}

func TestDoStopsAtPermanentError(t *testing.T) {
	errRejected := errors.New("attestation rejected")
	calls, onErrors := 0, 0
	err := Do(context.Background(), short(), time.Second, func(context.Context) error {
		calls++
		return Permanent(errRejected)
	}, func(int, error) { onErrors++ })
	if !errors.Is(err, ErrPermanent) || !errors.Is(err, errRejected) {
		t.Fatalf("Do = %v, want the permanent error", err)
	}
	if calls != 1 || onErrors != 0 {
		t.Fatalf("calls = %d, onError calls = %d; want 1 and 0", calls, onErrors)
	}
	if Permanent(nil) != nil {
		t.Fatal("Permanent(nil) is not nil")
	}
	if errors.Is(errRejected, ErrPermanent) {
		t.Fatal("an unwrapped error counts as permanent")
	}
}

func TestDoPerAttemptDeadline(t *testing.T) {
	const timeout = 20 * time.Millisecond
	calls := 0
	var seen []error
	err := Do(context.Background(), short(), timeout, func(ctx context.Context) error {
		calls++
		deadline, ok := ctx.Deadline()
		if !ok {
			return Permanent(errors.New("attempt has no deadline"))
		}
		if left := time.Until(deadline); left > timeout || left <= 0 {
			return Permanent(errors.New("attempt deadline not within the timeout"))
		}
		if calls == 1 {
			<-ctx.Done() // a hung join service: only the attempt's deadline ends this
			return ctx.Err()
		}
		return nil
	}, func(_ int, err error) { seen = append(seen, err) })
	if err != nil {
		t.Fatalf("Do = %v", err)
	}
	if calls != 2 || len(seen) != 1 || !errors.Is(seen[0], context.DeadlineExceeded) {
		t.Fatalf("calls = %d, errors = %v; want a deadline error then success", calls, seen)
	}
}

func TestDoNoAttemptTimeoutKeepsCallerDeadline(t *testing.T) {
	err := Do(context.Background(), short(), 0, func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); ok {
			return Permanent(errors.New("attempt got a deadline"))
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

func TestDoCancelStopsSleep(t *testing.T) {
	errBusy := errors.New("join service busy")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := Backoff{Initial: time.Hour, Max: time.Hour}
	start := time.Now()
	err := Do(ctx, b, time.Second, func(context.Context) error { return errBusy }, func(int, error) {
		time.AfterFunc(10*time.Millisecond, cancel) // cancel during the hour-long sleep
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errBusy) {
		t.Fatalf("Do = %v, want context.Canceled wrapped with the last error", err)
	}
	if errors.Is(err, ErrPermanent) {
		t.Fatal("cancellation reported as permanent")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Do took %v after cancel", took)
	}
}

func TestDoCancelledBeforeFirstAttempt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	err := Do(ctx, short(), 0, func(context.Context) error { calls++; return nil }, nil)
	if !errors.Is(err, context.Canceled) || calls != 0 {
		t.Fatalf("Do = %v after %d calls, want context.Canceled and no call", err, calls)
	}
}

func TestDoCancelDuringAttemptSkipsOnError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onErrors := 0
	err := Do(ctx, short(), 0, func(ctx context.Context) error {
		cancel()
		return ctx.Err()
	}, func(int, error) { onErrors++ })
	if !errors.Is(err, context.Canceled) || onErrors != 0 {
		t.Fatalf("Do = %v with %d onError calls, want context.Canceled and none", err, onErrors)
	}
}
