package retry_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-dev/cloister/internal/retry"
)

func ExampleDo() {
	ctx := context.Background()
	b := retry.DefaultBackoff()
	b.Initial, b.Max = time.Millisecond, 10*time.Millisecond // short for the example
	tries := 0
	err := retry.Do(ctx, b, 5*time.Second, func(ctx context.Context) error {
		tries++
		if tries < 3 {
			return errors.New("join service unavailable")
		}
		return nil
	}, func(attempt int, err error) {
		fmt.Printf("attempt %d: %v\n", attempt, err)
	})
	fmt.Println("done:", err)
	// Output:
	// attempt 1: join service unavailable
	// attempt 2: join service unavailable
	// done: <nil>
}
