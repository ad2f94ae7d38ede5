package hostdemo

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// TestWalkThrough runs `make demo-host` in-process: every step must pass and
// each refusal must come from its documented check, as the join service
// counted it. It needs swtpm: skipped without it, failed under CI=true.
func TestWalkThrough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := Run(ctx, t, &out)
	if err != nil {
		t.Fatalf("walk-through: %v\n%s", err, out.String())
	}
	if !slices.Equal(res.Refusals, Expected) {
		t.Errorf("refusals %v, want %v", res.Refusals, Expected)
	}
	if res.RecoveredKeyslot < 0 {
		t.Errorf("recovered keyslot %d", res.RecoveredKeyslot)
	}
	for _, want := range []string{"refused by the latch check", "by the pcr[4] check", "Done:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not say %q:\n%s", want, out.String())
		}
	}
}

// TestRebootReopensTheIssuer: a TPM reset flushes the attestation key, so a
// boot's issuer must not outlive it. A reboot closes the previous boot's
// issuer before the reset, runs the firmware's measurements, and opens a
// new issuer that quotes.
func TestRebootReopensTheIssuer(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	vs, err := validatorsFor(policyFor(tpmtest.PCRs(t, sw.RW), "peer"), sw)
	if err != nil {
		t.Fatal(err)
	}
	m, err := powerOn(sw, vs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.shutdown() })
	ctx := context.Background()
	userData := bytes.Repeat([]byte{7}, 32)
	first := m.boot
	if _, err := first.issuer.Issue(ctx, userData); err != nil {
		t.Fatalf("boot 1: %v", err)
	}
	firmwareRan := false
	if err := m.reboot(func(io.ReadWriter) error { firmwareRan = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if !firmwareRan {
		t.Error("reboot did not run the firmware's measurements")
	}
	if m.boot == first || m.boot.n != 2 {
		t.Fatalf("after the reboot: boot %d, want a new boot 2", m.boot.n)
	}
	if _, err := first.issuer.Issue(ctx, userData); err == nil {
		t.Error("boot 1's issuer quoted after the reboot: want it closed")
	}
	if _, err := m.boot.issuer.Issue(ctx, userData); err != nil {
		t.Errorf("boot 2's issuer: %v", err)
	}
}
