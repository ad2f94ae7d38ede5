package latch

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-configfs-tsm/configfs/fakertmr"
	"github.com/google/go-eventlog/register"

	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// The interface consumers declare.
type latch interface {
	Extend(ctx context.Context, clusterID []byte) error
}

var (
	_ latch = (*TPM)(nil)
	_ latch = (*TDX)(nil)
)

func clusterID(b byte) []byte { return bytes.Repeat([]byte{b}, ClusterIDSize) }

// badClusterIDs are cluster IDs Extend must refuse, leaving the register
// untouched.
var badClusterIDs = []struct {
	name string
	id   []byte
}{
	{name: "no cluster ID", id: nil},
	{name: "empty cluster ID", id: []byte{}},
	{name: "cluster ID one byte short", id: make([]byte, ClusterIDSize-1)},
	{name: "cluster ID one byte long", id: make([]byte, ClusterIDSize+1)},
	{name: "SHA-384-sized cluster ID", id: make([]byte, 48)},
}

// TestTPMLatchOnSimulator extends PCR 15 of the in-process TPM simulator.
// (Simulator tests never run in parallel: one simulator per process.)
func TestTPMLatchOnSimulator(t *testing.T) {
	ctx := context.Background()
	sim := tpmtest.Simulator(t)
	l := NewTPM(sim)
	id := clusterID(0xc1)

	v, err := l.Value(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v, make([]byte, 32)) {
		t.Fatalf("fresh pcr[15] = %x, want 32 zero bytes", v)
	}
	if err := l.CheckReset(ctx); err != nil {
		t.Fatalf("CheckReset on a fresh TPM: %v", err)
	}

	for _, tc := range badClusterIDs {
		t.Run(tc.name, func(t *testing.T) {
			if err := l.Extend(ctx, tc.id); err == nil {
				t.Fatal("Extend accepted it")
			}
			if err := l.CheckReset(ctx); err != nil {
				t.Fatalf("refused Extend changed the latch: %v", err)
			}
		})
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Extend(cancelled, id); !errors.Is(err, context.Canceled) {
		t.Fatalf("Extend with a cancelled context: %v, want context.Canceled", err)
	}

	if err := l.Extend(ctx, id); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	latched, err := l.Value(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := ExpectedTPM(id); !bytes.Equal(latched, want) {
		t.Fatalf("pcr[15] = %x, want ExpectedTPM = %x", latched, want)
	}
	// The value a quote would carry: read independently from the SHA-256 bank.
	if got := tpmtest.PCRs(t, sim)[PCR]; !bytes.Equal(got, latched) {
		t.Fatalf("SHA-256 bank pcr[15] = %x, Value = %x", got, latched)
	}
	if err := l.CheckReset(ctx); !errors.Is(err, ErrNotReset) {
		t.Fatalf("CheckReset after Extend: %v, want ErrNotReset", err)
	}

	// The latch cannot be re-set: extending again, even with the same
	// cluster ID, moves it on.
	if err := l.Extend(ctx, id); err != nil {
		t.Fatal(err)
	}
	again, err := l.Value(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again, latched) || bytes.Equal(again, ExpectedTPM(id)) {
		t.Fatalf("second Extend left pcr[15] at %x", again)
	}
	if want := sha256.Sum256(append(bytes.Clone(latched), id...)); !bytes.Equal(again, want[:]) {
		t.Fatalf("second Extend gave %x, want SHA-256(latch ‖ id) = %x", again, want)
	}
}

// TestExpectedTPMMatchesEventlogReplay checks ExpectedTPM against
// go-eventlog's fake root of trust, an independent implementation of extend.
func TestExpectedTPMMatchesEventlogReplay(t *testing.T) {
	rot, err := register.CreateFakeRot([]crypto.Hash{crypto.SHA256}, 24)
	if err != nil {
		t.Fatal(err)
	}
	id := clusterID(0x5a)
	if err := rot.ExtendMR(register.FakeMR{Index: PCR, Digest: id, DigestAlg: crypto.SHA256}); err != nil {
		t.Fatal(err)
	}
	got, err := rot.Digest(register.FakeMR{Index: PCR, DigestAlg: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	if want := ExpectedTPM(id); !bytes.Equal(got, want) {
		t.Fatalf("replayed pcr[15] = %x, ExpectedTPM = %x", got, want)
	}
	if bytes.Equal(ExpectedTPM(id), ExpectedTPM(clusterID(0x5b))) {
		t.Fatal("two cluster IDs give the same latch")
	}
}

// TestExpectedTDXMatchesEventlogReplay checks ExpectedTDX against
// go-eventlog's fake root of trust with a SHA-384 bank.
func TestExpectedTDXMatchesEventlogReplay(t *testing.T) {
	rot, err := register.CreateFakeRot([]crypto.Hash{crypto.SHA384}, 4)
	if err != nil {
		t.Fatal(err)
	}
	id := clusterID(0x5a)
	digest := sha512.Sum384(id)
	if err := rot.ExtendMR(register.FakeMR{Index: RTMR, Digest: digest[:], DigestAlg: crypto.SHA384}); err != nil {
		t.Fatal(err)
	}
	got, err := rot.Digest(register.FakeMR{Index: RTMR, DigestAlg: crypto.SHA384})
	if err != nil {
		t.Fatal(err)
	}
	if want := ExpectedTDX(id); !bytes.Equal(got, want) {
		t.Fatalf("replayed rtmr[3] = %x, ExpectedTDX = %x", got, want)
	}
}

// TestTDXLatchOnFakeConfigfs extends RTMR 3 through go-configfs-tsm's fake
// RTMR subsystem (no TDX hardware here), which computes
// SHA-384(RTMR ‖ digest) as the TDX module does.
func TestTDXLatchOnFakeConfigfs(t *testing.T) {
	ctx := context.Background()
	l := NewTDX(fakertmr.CreateRtmrSubsystem(t.TempDir()))
	id := clusterID(0xd7)

	if err := l.CheckReset(ctx); err != nil {
		t.Fatalf("CheckReset on a fresh RTMR: %v", err)
	}
	for _, tc := range badClusterIDs {
		t.Run(tc.name, func(t *testing.T) {
			if err := l.Extend(ctx, tc.id); err == nil {
				t.Fatal("Extend accepted it")
			}
			if err := l.CheckReset(ctx); err != nil {
				t.Fatalf("refused Extend changed the latch: %v", err)
			}
		})
	}
	if err := l.Extend(ctx, id); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	latched, err := l.Value(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := ExpectedTDX(id); !bytes.Equal(latched, want) {
		t.Fatalf("rtmr[3] = %x, want ExpectedTDX = %x", latched, want)
	}
	if err := l.CheckReset(ctx); !errors.Is(err, ErrNotReset) {
		t.Fatalf("CheckReset after Extend: %v, want ErrNotReset", err)
	}
	if err := l.Extend(ctx, id); err != nil {
		t.Fatal(err)
	}
	if again, err := l.Value(ctx); err != nil || bytes.Equal(again, latched) {
		t.Fatalf("second Extend left rtmr[3] at %x (%v)", again, err)
	}
}

// TestTDXSysfsWritesDigestFake uses a plain file as a fake of the sysfs
// register file: it records what Extend writes (the kernel would extend).
func TestTDXSysfsWritesDigestFake(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "rtmr3:sha384")
	if err := os.WriteFile(file, make([]byte, 48), 0o600); err != nil {
		t.Fatal(err)
	}
	l := NewTDXSysfs(dir)
	if err := l.CheckReset(ctx); err != nil {
		t.Fatalf("CheckReset: %v", err)
	}
	id := clusterID(0x33)
	if err := l.Extend(ctx, id); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	got, err := l.Value(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha512.Sum384(id); !bytes.Equal(got, want[:]) {
		t.Fatalf("wrote %x, want SHA-384(cluster ID) = %x", got, want)
	}
	if err := l.CheckReset(ctx); !errors.Is(err, ErrNotReset) {
		t.Fatalf("CheckReset: %v, want ErrNotReset", err)
	}

	if err := os.WriteFile(file, make([]byte, 47), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Value(ctx); err == nil {
		t.Fatal("Value accepted a 47-byte register")
	}
	missing := NewTDXSysfs(filepath.Join(dir, "missing"))
	if err := missing.Extend(ctx, id); err == nil {
		t.Fatal("Extend without a register file succeeded")
	}
}
