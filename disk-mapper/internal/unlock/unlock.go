package unlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cloister-dev/cloister/internal/keys"
)

var (
	// ErrWrongKey is wrapped by Offer when the key opens no keyslot of the
	// disk. The source reports it and keeps waiting.
	ErrWrongKey = errors.New("key does not open disk")
	// ErrUnlocked is wrapped by Offer when another key has already won. The
	// source stops.
	ErrUnlocked = errors.New("disk already unlocked")
	// ErrMalformed is wrapped by Offer when a candidate's fields have the
	// wrong size; it names the field.
	ErrMalformed = errors.New("malformed candidate")
)

// Candidate is a key offered for the state disk, with the measurement secret
// that comes with it.
type Candidate struct {
	// DiskKey is the passphrase of the disk's keyslot (keys.SecretSize bytes).
	DiskKey keys.Secret
	// Generation is the key generation its source derived it for.
	Generation uint32
	// MeasurementSecret derives the cluster ID together with the salt on the
	// disk (keys.SecretSize bytes).
	MeasurementSecret keys.Secret
	// Source names where the key came from ("rejoin", "recovery"), for logs.
	Source string
}

// Zero overwrites the candidate's secrets.
func (c *Candidate) Zero() {
	c.DiskKey.Zero()
	c.MeasurementSecret.Zero()
}

// disk is the state disk's header. CheckKey must wrap ErrWrongKey when the
// key opens no keyslot; any other error means the check itself failed.
type disk interface {
	CheckKey(key []byte) error
}

// Checker decides which candidate opens the disk. It is safe for concurrent
// use; checks run one at a time.
type Checker struct {
	disk     disk
	diskUUID string

	mu     sync.Mutex
	winner *Candidate
	won    chan struct{}
}

// NewChecker returns a Checker for the disk whose UUID is diskUUID.
func NewChecker(d disk, diskUUID string) *Checker {
	return &Checker{disk: d, diskUUID: diskUUID, won: make(chan struct{})}
}

// DiskUUID returns the UUID of the disk the Checker unlocks.
func (c *Checker) DiskUUID() string { return c.diskUUID }

// Offer checks a candidate on the disk. It returns nil when the key opened
// the disk and won; an error wrapping ErrWrongKey when it opens nothing (the
// message is "key does not open disk <uuid>"); ErrUnlocked when another key
// won earlier; ErrMalformed for a wrong-sized field; any other error when the
// check failed. Offer copies what it keeps: the caller may zero cand after.
func (c *Checker) Offer(ctx context.Context, cand Candidate) error {
	if len(cand.DiskKey) != keys.SecretSize {
		return fmt.Errorf("%w: disk key: want %d bytes, got %d", ErrMalformed, keys.SecretSize, len(cand.DiskKey))
	}
	if len(cand.MeasurementSecret) != keys.SecretSize {
		return fmt.Errorf("%w: measurement secret: want %d bytes, got %d", ErrMalformed, keys.SecretSize, len(cand.MeasurementSecret))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.winner != nil {
		return fmt.Errorf("offer from %s: %w %s", cand.Source, ErrUnlocked, c.diskUUID)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.disk.CheckKey(cand.DiskKey); err != nil {
		if errors.Is(err, ErrWrongKey) {
			return fmt.Errorf("%w %s", ErrWrongKey, c.diskUUID)
		}
		return fmt.Errorf("checking key from %s on disk %s: %w", cand.Source, c.diskUUID, err)
	}
	c.winner = &Candidate{
		DiskKey:           bytes.Clone(cand.DiskKey),
		Generation:        cand.Generation,
		MeasurementSecret: bytes.Clone(cand.MeasurementSecret),
		Source:            cand.Source,
	}
	close(c.won)
	return nil
}

// Won is closed once a key has won.
func (c *Checker) Won() <-chan struct{} { return c.won }

// Wait blocks until a key wins or ctx ends, and returns the winner. The
// caller owns the returned secrets and zeroes them after use.
func (c *Checker) Wait(ctx context.Context) (*Candidate, error) {
	select {
	case <-c.won:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.winner
	c.winner = &Candidate{Source: w.Source} // later Waits and Offers see "unlocked", not the key
	return w, nil
}
