package unlock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
)

// fakeHeader is a FAKE LUKS2 header that opens with one key.
type fakeHeader struct{ key []byte }

func (h fakeHeader) CheckKey(key []byte) error {
	if !bytes.Equal(key, h.key) {
		return unlock.ErrWrongKey
	}
	return nil
}

// Two sources offer keys; the first that opens the disk wins.
func ExampleChecker() {
	right := bytes.Repeat([]byte{1}, 32)
	c := unlock.NewChecker(fakeHeader{key: right}, "2f6d1c3e-8a5b-4c2d-9e1f-0a1b2c3d4e5f")
	ctx := context.Background()
	secret := bytes.Repeat([]byte{9}, 32)

	err := c.Offer(ctx, unlock.Candidate{DiskKey: bytes.Repeat([]byte{2}, 32), MeasurementSecret: secret, Source: "recovery"})
	fmt.Println("recovery:", err)
	err = c.Offer(ctx, unlock.Candidate{DiskKey: right, MeasurementSecret: secret, Source: "rejoin"})
	fmt.Println("rejoin:", err)
	err = c.Offer(ctx, unlock.Candidate{DiskKey: right, MeasurementSecret: secret, Source: "recovery"})
	fmt.Println("recovery again unlocked:", errors.Is(err, unlock.ErrUnlocked))

	w, err := c.Wait(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Zero()
	fmt.Println("winner:", w.Source)
	// Output:
	// recovery: key does not open disk 2f6d1c3e-8a5b-4c2d-9e1f-0a1b2c3d4e5f
	// rejoin: <nil>
	// recovery again unlocked: true
	// winner: rejoin
}
