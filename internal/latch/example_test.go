package latch_test

import (
	"context"
	"fmt"
	"os"

	"github.com/cloister-dev/cloister/internal/latch"
)

// A verifier compares PCR 15 from a validated quote with ExpectedTPM of the
// cluster's ID.
func ExampleExpectedTPM() {
	clusterID := make([]byte, latch.ClusterIDSize) // from the key schedule
	fmt.Printf("pcr[%d] = %x\n", latch.PCR, latch.ExpectedTPM(clusterID))
	// Output:
	// pcr[15] = f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b
}

// The node extends the latch once it holds its secrets. (Not run: it needs
// a TPM.)
func ExampleTPM_Extend() {
	ctx := context.Background()
	rw, err := os.OpenFile("/dev/tpmrm0", os.O_RDWR, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rw.Close()
	l := latch.NewTPM(rw)
	if err := l.CheckReset(ctx); err != nil {
		fmt.Println(err) // latched since the last reboot: refuse to join
		return
	}
	clusterID := make([]byte, latch.ClusterIDSize) // from the key schedule
	if err := l.Extend(ctx, clusterID); err != nil {
		fmt.Println(err)
	}
}
