package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ErrPermanent marks an error that retrying cannot fix (a rejected
// attestation, a malformed configuration). Wrap such errors with Permanent;
// test for them with errors.Is(err, ErrPermanent).
var ErrPermanent = errors.New("permanent error")

// Permanent marks err as permanent, so that Do returns it at once instead of
// trying again. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string        { return e.err.Error() }
func (e *permanentError) Unwrap() error        { return e.err }
func (e *permanentError) Is(target error) bool { return target == ErrPermanent }

// Backoff says how long to wait between attempts. The wait after attempt n
// is Initial·Multiplierⁿ⁻¹, capped at Max, then spread by ±Jitter (a
// fraction) and capped at Max again, so no wait is ever longer than Max.
//
// The zero value is safe: zero fields take the values of DefaultBackoff,
// except Jitter, where zero means no jitter.
type Backoff struct {
	// Initial is the wait after the first failed attempt (default 1s).
	Initial time.Duration
	// Max caps every wait (default 30s).
	Max time.Duration
	// Multiplier is the growth per attempt, at least 1 (default 2).
	Multiplier float64
	// Jitter spreads each wait uniformly by ±Jitter·wait, in [0, 1), so that
	// many nodes rebooting together do not poll a join service in lockstep.
	Jitter float64
	// Rand returns uniform numbers in [0, 1) for the jitter (default
	// math/rand/v2's Float64). Tests inject a fixed one.
	Rand func() float64
}

// DefaultBackoff waits 1s, growing ×2 up to 30s, with ±20% jitter.
func DefaultBackoff() Backoff {
	return Backoff{Initial: time.Second, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.2}
}

// withDefaults checks b and fills in the zero fields.
func (b Backoff) withDefaults() (Backoff, error) {
	def := DefaultBackoff()
	switch {
	case b.Initial < 0:
		return b, fmt.Errorf("retry: Backoff.Initial is %v: set it to a positive duration (or zero for %v)", b.Initial, def.Initial)
	case b.Max < 0:
		return b, fmt.Errorf("retry: Backoff.Max is %v: set it to a positive duration (or zero for %v)", b.Max, def.Max)
	case b.Multiplier != 0 && b.Multiplier < 1:
		return b, fmt.Errorf("retry: Backoff.Multiplier is %v: set it to at least 1 (or zero for %v)", b.Multiplier, def.Multiplier)
	case b.Jitter < 0 || b.Jitter >= 1:
		return b, fmt.Errorf("retry: Backoff.Jitter is %v: set it in [0, 1)", b.Jitter)
	}
	if b.Initial == 0 {
		b.Initial = def.Initial
	}
	if b.Max == 0 {
		b.Max = def.Max
	}
	if b.Multiplier == 0 {
		b.Multiplier = def.Multiplier
	}
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
	if b.Max < b.Initial {
		return b, fmt.Errorf("retry: Backoff.Max %v is below Initial %v: raise Max", b.Max, b.Initial)
	}
	return b, nil
}

// delay is the wait after failed attempt n (1-based); b has its defaults.
func (b Backoff) delay(n int) time.Duration {
	d := float64(b.Initial)
	for i := 1; i < n && d < float64(b.Max); i++ {
		d *= b.Multiplier
	}
	d = min(d, float64(b.Max))
	if b.Jitter > 0 {
		r := b.Rand()
		if r < 0 || r >= 1 {
			r = 0.5 // a broken Rand gets no jitter rather than an unbounded wait
		}
		d *= 1 + b.Jitter*(2*r-1)
	}
	return time.Duration(min(d, float64(b.Max)))
}

// Do runs attempt until it returns nil, and returns nil then. Each attempt
// gets a context derived from ctx with attemptTimeout as its deadline (zero:
// no deadline of its own). Between attempts Do waits as b says.
//
// Do stops early:
//   - when attempt returns an error wrapped with Permanent: Do returns that
//     error as is (errors.Is(err, ErrPermanent) holds);
//   - when ctx ends: Do returns ctx.Err() wrapped together with the last
//     attempt's error, so errors.Is works for both.
//
// onError, if not nil, is called with the attempt number (from 1) and the
// error of every failed attempt that will be retried, before the wait; it is
// the place to log, rate-limited. Errors that end Do go to Do's caller
// instead, so each error is handled once.
func Do(ctx context.Context, b Backoff, attemptTimeout time.Duration, attempt func(ctx context.Context) error, onError func(attempt int, err error)) error {
	b, err := b.withDefaults()
	if err != nil {
		return err
	}
	if attemptTimeout < 0 {
		return fmt.Errorf("retry: attempt timeout is %v: set it to a positive duration (or zero for none)", attemptTimeout)
	}
	var lastErr error
	for n := 1; ; n++ {
		if ctx.Err() != nil {
			return stopped(ctx, n-1, lastErr)
		}
		err := run(ctx, attemptTimeout, attempt)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrPermanent) {
			return err
		}
		lastErr = err
		if ctx.Err() != nil {
			return stopped(ctx, n, lastErr)
		}
		if onError != nil {
			onError(n, err)
		}
		timer := time.NewTimer(b.delay(n))
		select {
		case <-ctx.Done():
			timer.Stop()
			return stopped(ctx, n, lastErr)
		case <-timer.C:
		}
	}
}

func run(ctx context.Context, timeout time.Duration, attempt func(ctx context.Context) error) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return attempt(ctx)
}

func stopped(ctx context.Context, attempts int, lastErr error) error {
	if lastErr == nil {
		return fmt.Errorf("retry: stopped before the first attempt: %w", ctx.Err())
	}
	return fmt.Errorf("retry: stopped after %d attempts: %w (last error: %w)", attempts, ctx.Err(), lastErr)
}
