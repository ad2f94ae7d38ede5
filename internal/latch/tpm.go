package latch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// PCR is the TPM PCR that holds the latch (SHA-256 bank). PCR 15 is not
// used by firmware or the boot chain, and is reset only by a reboot.
const PCR = 15

// ClusterIDSize is the size of a cluster ID.
const ClusterIDSize = 32

// ErrNotReset means the latch is not at its reset value: the node has been
// latched to a cluster since its last reboot. A join must not continue.
var ErrNotReset = errors.New("latch not at its reset value")

// TPM is the latch in a TPM's PCR 15.
type TPM struct {
	rw io.ReadWriter
}

// NewTPM returns the latch of the TPM rw.
func NewTPM(rw io.ReadWriter) *TPM { return &TPM{rw: rw} }

// Extend extends PCR 15 (SHA-256 bank) with clusterID, which must be
// ClusterIDSize bytes: it is the digest extended, as is. Every call extends
// again; see the package doc for why the latch cannot be re-set.
func (t *TPM) Extend(ctx context.Context, clusterID []byte) error {
	if err := checkClusterID(clusterID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("latch: extending pcr[%d]: %w", PCR, err)
	}
	if err := tpm2.PCRExtend(t.rw, tpmutil.Handle(PCR), tpm2.AlgSHA256, clusterID, ""); err != nil {
		return fmt.Errorf("latch: extending pcr[%d]: %w", PCR, err)
	}
	return nil
}

// Value returns PCR 15 of the SHA-256 bank.
func (t *TPM) Value(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("latch: reading pcr[%d]: %w", PCR, err)
	}
	v, err := tpm2.ReadPCR(t.rw, PCR, tpm2.AlgSHA256)
	if err != nil {
		return nil, fmt.Errorf("latch: reading pcr[%d]: %w", PCR, err)
	}
	if len(v) != sha256.Size {
		return nil, fmt.Errorf("latch: reading pcr[%d]: got %d bytes, want %d", PCR, len(v), sha256.Size)
	}
	return v, nil
}

// CheckReset returns an error wrapping ErrNotReset unless PCR 15 is at its
// reset value (32 zero bytes).
func (t *TPM) CheckReset(ctx context.Context) error {
	v, err := t.Value(ctx)
	if err != nil {
		return err
	}
	if !bytes.Equal(v, make([]byte, sha256.Size)) {
		return fmt.Errorf("latch: pcr[%d] is %x: %w", PCR, v, ErrNotReset)
	}
	return nil
}

// ExpectedTPM returns PCR 15 after one Extend with clusterID from reset:
// SHA-256(32 zero bytes ‖ clusterID).
func ExpectedTPM(clusterID []byte) []byte {
	h := sha256.New()
	h.Write(make([]byte, sha256.Size))
	h.Write(clusterID)
	return h.Sum(nil)
}

func checkClusterID(clusterID []byte) error {
	if len(clusterID) != ClusterIDSize {
		return fmt.Errorf("latch: cluster ID of %d bytes, want %d", len(clusterID), ClusterIDSize)
	}
	return nil
}
