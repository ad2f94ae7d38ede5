package status_test

import (
	"errors"
	"fmt"

	"github.com/cloister-dev/cloister/internal/status"
)

func ExampleTracker() {
	// main passes sdnotify's Status here, so STATUS= shows the same line.
	tr := status.New("disk-mapper", status.Options{OnChange: func(line string) { fmt.Println("STATUS=" + line) }})
	tr.SetPhase("waiting-for-key")
	tr.Attempt(errors.New("no join service answered"))
	tr.SetPhase("mounting")
	// Output:
	// STATUS=waiting-for-key
	// STATUS=waiting-for-key (attempt 1): no join service answered
	// STATUS=mounting
}
