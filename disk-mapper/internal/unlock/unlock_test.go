package unlock

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeDisk is a FAKE LUKS header that opens with one key (real headers are
// exercised in the setup package's tests).
type fakeDisk struct {
	key    []byte
	broken error
	mu     sync.Mutex
	checks int
}

func (d *fakeDisk) CheckKey(key []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.checks++
	if d.broken != nil {
		return d.broken
	}
	if !bytes.Equal(key, d.key) {
		return ErrWrongKey
	}
	return nil
}

const uuid = "2f6d1c3e-8a5b-4c2d-9e1f-0a1b2c3d4e5f"

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestOfferWithFakeDisk(t *testing.T) {
	errIO := errors.New("reading header: input/output error")
	tests := []struct {
		name    string
		broken  error
		cand    Candidate
		wantErr error
	}{
		{name: "wrong key", cand: Candidate{DiskKey: key(2), MeasurementSecret: key(9)}, wantErr: ErrWrongKey},
		{name: "short disk key", cand: Candidate{DiskKey: key(1)[:31], MeasurementSecret: key(9)}, wantErr: ErrMalformed},
		{name: "long disk key with the right prefix", cand: Candidate{DiskKey: append(key(1), 0), MeasurementSecret: key(9)}, wantErr: ErrMalformed},
		{name: "missing measurement secret", cand: Candidate{DiskKey: key(1)}, wantErr: ErrMalformed},
		{name: "header unreadable is not a wrong key", broken: errIO, cand: Candidate{DiskKey: key(1), MeasurementSecret: key(9)}, wantErr: errIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewChecker(&fakeDisk{key: key(1), broken: tt.broken}, uuid)
			err := c.Offer(context.Background(), tt.cand)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Offer = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != ErrWrongKey && errors.Is(err, ErrWrongKey) {
				t.Errorf("Offer = %v: reported as a wrong key", err)
			}
			select {
			case <-c.Won():
				t.Fatal("a refused candidate won")
			default:
			}
		})
	}
}

func TestWrongKeyNamesDisk(t *testing.T) {
	c := NewChecker(&fakeDisk{key: key(1)}, uuid)
	err := c.Offer(context.Background(), Candidate{DiskKey: key(2), MeasurementSecret: key(9)})
	if err == nil || err.Error() != "key does not open disk "+uuid {
		t.Fatalf("Offer = %v, want %q", err, "key does not open disk "+uuid)
	}
}

func TestFirstKeyWinsWithFakeDisk(t *testing.T) {
	d := &fakeDisk{key: key(1)}
	c := NewChecker(d, uuid)
	ctx := context.Background()
	if err := c.Offer(ctx, Candidate{DiskKey: key(2), MeasurementSecret: key(9), Source: "recovery"}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	cand := Candidate{DiskKey: key(1), MeasurementSecret: key(9), Generation: 3, Source: "rejoin"}
	if err := c.Offer(ctx, cand); err != nil {
		t.Fatalf("right key: %v", err)
	}
	cand.Zero() // the source zeroes its copy; the winner must be unaffected
	if err := c.Offer(ctx, Candidate{DiskKey: key(1), MeasurementSecret: key(9), Source: "recovery"}); !errors.Is(err, ErrUnlocked) {
		t.Fatalf("offer after the win = %v, want ErrUnlocked", err)
	}
	w, err := c.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.DiskKey, key(1)) || !bytes.Equal(w.MeasurementSecret, key(9)) || w.Generation != 3 || w.Source != "rejoin" {
		t.Errorf("winner %+v, want the rejoin candidate", w)
	}
	if d.checks != 2 {
		t.Errorf("%d header checks, want 2 (no check after the win)", d.checks)
	}
	again, err := c.Wait(ctx)
	if err != nil || len(again.DiskKey) != 0 {
		t.Errorf("second Wait = %+v, %v: the key must be handed out once", again, err)
	}
}

func TestConcurrentOffersOneWinnerWithFakeDisk(t *testing.T) {
	c := NewChecker(&fakeDisk{key: key(1)}, uuid)
	var wg sync.WaitGroup
	results := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			k := key(1)
			if i%2 == 1 {
				k = key(2)
			}
			results <- c.Offer(context.Background(), Candidate{DiskKey: k, MeasurementSecret: key(9)})
		})
	}
	wg.Wait()
	close(results)
	wins := 0
	for err := range results {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, ErrWrongKey), errors.Is(err, ErrUnlocked):
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d winners, want 1", wins)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	c := NewChecker(&fakeDisk{key: key(1)}, uuid)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if w, err := c.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) || w != nil {
		t.Fatalf("Wait = %v, %v; want DeadlineExceeded", w, err)
	}
}
