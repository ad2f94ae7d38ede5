package latch

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	cfsrtmr "github.com/google/go-configfs-tsm/rtmr"
	tdxrtmr "github.com/google/go-tdx-guest/rtmr"
)

// RTMR is the TDX runtime measurement register that holds the latch. RTMR 3
// is left to the guest's own use (firmware and boot loaders use 0–2).
const RTMR = 3

const (
	// configfsRTMRs exists on kernels with the (older) configfs-tsm RTMR
	// interface.
	configfsRTMRs = "/sys/kernel/config/tsm/rtmrs"
	// SysfsMeasurements is the TDX guest driver's sysfs directory of
	// measurement registers (Linux 6.16 and later).
	SysfsMeasurements = "/sys/class/misc/tdx_guest/measurements"
)

// TDX is the latch in a TDX guest's RTMR 3, reached through configfs-tsm or
// the TDX guest driver's sysfs files.
type TDX struct {
	client   configfsi.Client // configfs-tsm; nil for sysfs
	sysfsDir string
}

// NewTDX returns the latch behind a configfs-tsm client (linuxtsm on a real
// guest).
func NewTDX(client configfsi.Client) *TDX { return &TDX{client: client} }

// NewTDXSysfs returns the latch behind the TDX guest driver's sysfs
// directory of measurement registers (SysfsMeasurements on a real guest).
func NewTDXSysfs(dir string) *TDX { return &TDX{sysfsDir: dir} }

// OpenTDX returns the latch of this TDX guest, through configfs-tsm when the
// kernel has its RTMR interface, otherwise through sysfs (the same choice
// go-tdx-guest makes).
func OpenTDX() (*TDX, error) {
	_, err := os.Stat(configfsRTMRs)
	switch {
	case err == nil:
		client, err := linuxtsm.MakeClient()
		if err != nil {
			return nil, fmt.Errorf("latch: opening configfs-tsm: %w", err)
		}
		return NewTDX(client), nil
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(SysfsMeasurements); err != nil {
			return nil, fmt.Errorf("latch: no TDX RTMR interface: %w", err)
		}
		return NewTDXSysfs(SysfsMeasurements), nil
	default:
		return nil, fmt.Errorf("latch: checking %s: %w", configfsRTMRs, err)
	}
}

// Extend extends RTMR 3 with SHA-384(clusterID); clusterID must be
// ClusterIDSize bytes. RTMR extension takes a 48-byte digest and computes
// SHA-384(RTMR ‖ digest).
func (t *TDX) Extend(ctx context.Context, clusterID []byte) error {
	if err := checkClusterID(clusterID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("latch: extending rtmr[%d]: %w", RTMR, err)
	}
	digest := sha512.Sum384(clusterID)
	var err error
	if t.client != nil {
		err = tdxrtmr.ExtendDigestClient(t.client, RTMR, digest[:])
	} else {
		err = t.extendSysfs(digest[:])
	}
	if err != nil {
		return fmt.Errorf("latch: extending rtmr[%d]: %w", RTMR, err)
	}
	return nil
}

// Value returns RTMR 3.
func (t *TDX) Value(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("latch: reading rtmr[%d]: %w", RTMR, err)
	}
	var v []byte
	if t.client != nil {
		resp, err := cfsrtmr.GetDigest(t.client, RTMR)
		if err != nil {
			return nil, fmt.Errorf("latch: reading rtmr[%d]: %w", RTMR, err)
		}
		v = resp.Digest
	} else {
		var err error
		if v, err = os.ReadFile(t.sysfsFile()); err != nil {
			return nil, fmt.Errorf("latch: reading rtmr[%d]: %w", RTMR, err)
		}
	}
	if len(v) != sha512.Size384 {
		return nil, fmt.Errorf("latch: reading rtmr[%d]: got %d bytes, want %d", RTMR, len(v), sha512.Size384)
	}
	return v, nil
}

// CheckReset returns an error wrapping ErrNotReset unless RTMR 3 is at its
// reset value (48 zero bytes).
func (t *TDX) CheckReset(ctx context.Context) error {
	v, err := t.Value(ctx)
	if err != nil {
		return err
	}
	if !bytes.Equal(v, make([]byte, sha512.Size384)) {
		return fmt.Errorf("latch: rtmr[%d] is %x: %w", RTMR, v, ErrNotReset)
	}
	return nil
}

// ExpectedTDX returns RTMR 3 after one Extend with clusterID from reset:
// SHA-384(48 zero bytes ‖ SHA-384(clusterID)).
func ExpectedTDX(clusterID []byte) []byte {
	digest := sha512.Sum384(clusterID)
	h := sha512.New384()
	h.Write(make([]byte, sha512.Size384))
	h.Write(digest[:])
	return h.Sum(nil)
}

func (t *TDX) sysfsFile() string {
	return filepath.Join(t.sysfsDir, "rtmr"+strconv.Itoa(RTMR)+":sha384")
}

// extendSysfs writes the digest to the register's sysfs file: each write is
// an extension, not a file write.
func (t *TDX) extendSysfs(digest []byte) error {
	f, err := os.OpenFile(t.sysfsFile(), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(digest, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
