package tdx_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
)

func withAttrs(b tdxtest.Body, set uint64) tdxtest.Body {
	attrs := binary.LittleEndian.Uint64(b.TDAttributes[:]) | set
	binary.LittleEndian.PutUint64(b.TDAttributes[:], attrs)
	return b
}

// TestValidateTDAttributes sets each TD_ATTRIBUTES bit alone on top of the
// fixture's (SEPT_VE_DISABLE) and checks the decision documented on
// policy.TDX. Before the TUD group and reserved bits were refused, every
// bit but 0 was accepted.
func TestValidateTDAttributes(t *testing.T) {
	f := newFixture(t)
	v := f.validator(t, tdx.ValidatorOptions{})
	accepted := map[int]bool{27: true, 28: true, 30: true, 31: true} // LASS, SEPT_VE_DISABLE, PKS, KL
	for bit := range 64 {
		want := ""
		switch {
		case bit < 8:
			want = "debug"
		case !accepted[bit]:
			want = "td-attributes"
		}
		t.Run(fmt.Sprintf("bit %d", bit), func(t *testing.T) {
			ev := f.issue(t, f.chain, withAttrs(f.body, 1<<bit), f.userData)
			claims, err := v.Validate(t.Context(), ev, f.userData)
			if want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ce *attestation.CheckError
			if !errors.As(err, &ce) || ce.Check != want || claims != nil {
				t.Fatalf("Validate = %v, %v; want a %q rejection", claims, err, want)
			}
			if ce.Want == "" || ce.Got == "" {
				t.Errorf("rejection without want/got: %v", err)
			}
		})
	}
	t.Run("SEPT_VE_DISABLE clear is accepted", func(t *testing.T) {
		b := f.body
		b.TDAttributes = [8]byte{}
		if _, err := v.Validate(t.Context(), f.issue(t, f.chain, b, f.userData), f.userData); err != nil {
			t.Fatalf("refused: %v", err)
		}
	})
	for _, tc := range []struct {
		name  string
		bit   uint
		allow func(*policy.TDX)
	}{
		{"MIGRATABLE", 29, func(p *policy.TDX) { p.AllowMigratable = true }},
		{"PERFMON", 63, func(p *policy.TDX) { p.AllowPerfmon = true }},
	} {
		t.Run(tc.name+" allowed by the policy", func(t *testing.T) {
			g := newFixture(t)
			tc.allow(g.pol)
			ev := g.issue(t, g.chain, withAttrs(g.body, 1<<tc.bit), g.userData)
			if _, err := g.validator(t, tdx.ValidatorOptions{}).Validate(t.Context(), ev, g.userData); err != nil {
				t.Fatalf("refused although allowed: %v", err)
			}
		})
	}
}

// TestValidateHostSetValues: XFAM, MRCONFIGID, MROWNER, MROWNERCONFIG and
// SEAMATTRIBUTES, which nothing checked before.
func TestValidateHostSetValues(t *testing.T) {
	f := newFixture(t)
	v := f.validator(t, tdx.ValidatorOptions{})
	xfam := func(x uint64) []byte { return binary.LittleEndian.AppendUint64(nil, x) }
	refused := []struct {
		name      string
		mutate    func(*tdxtest.Body)
		wantCheck string
	}{
		{"MRCONFIGID set, policy pins none", func(b *tdxtest.Body) { b.MRConfigID[0] = 1 }, "mrconfigid"},
		{"MROWNER set, policy pins none", func(b *tdxtest.Body) { b.MROwner[47] = 1 }, "mrowner"},
		{"MROWNERCONFIG set, policy pins none", func(b *tdxtest.Body) { b.MROwnerConfig[10] = 0xff }, "mrownerconfig"},
		{"XFAM without x87", func(b *tdxtest.Body) { b.XFAM = xfam(0x61ae6) }, "xfam"},
		{"XFAM with an unsupported bit", func(b *tdxtest.Body) { b.XFAM = xfam(0x61ae7 | 1<<40) }, "xfam"},
		{"debug TDX module", func(b *tdxtest.Body) { b.SEAMAttributes[0] = 1 }, "seam-attributes"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			b := f.body
			tc.mutate(&b)
			claims, err := v.Validate(t.Context(), f.issue(t, f.chain, b, f.userData), f.userData)
			var ce *attestation.CheckError
			if !errors.As(err, &ce) || ce.Check != tc.wantCheck || claims != nil {
				t.Fatalf("Validate = %v, %v; want a %q rejection", claims, err, tc.wantCheck)
			}
		})
	}

	// Pinned values: the pinned value passes, any other is refused.
	g := newFixture(t)
	owner := fill(0x0e)
	g.body.MROwner = owner
	g.body.XFAM = xfam(0x000e7)
	g.pol.MROwner = &policy.Value{Want: bytes.Clone(owner[:]), Mode: policy.Enforce}
	g.pol.XFAM = &policy.Value{Want: xfam(0x000e7), Mode: policy.Enforce}
	pinned := g.validator(t, tdx.ValidatorOptions{})
	if _, err := pinned.Validate(t.Context(), g.issue(t, g.chain, g.body, g.userData), g.userData); err != nil {
		t.Fatalf("pinned values refused: %v", err)
	}
	for _, tc := range []struct {
		name      string
		mutate    func(*tdxtest.Body)
		wantCheck string
	}{
		{"other MROWNER than pinned", func(b *tdxtest.Body) { b.MROwner[0] ^= 1 }, "mrowner"},
		{"zero MROWNER when one is pinned", func(b *tdxtest.Body) { b.MROwner = [48]byte{} }, "mrowner"},
		{"other XFAM than pinned (though valid)", func(b *tdxtest.Body) { b.XFAM = xfam(0x61ae7) }, "xfam"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := g.body
			tc.mutate(&b)
			_, err := pinned.Validate(t.Context(), g.issue(t, g.chain, b, g.userData), g.userData)
			var ce *attestation.CheckError
			if !errors.As(err, &ce) || ce.Check != tc.wantCheck {
				t.Fatalf("Validate = %v; want a %q rejection", err, tc.wantCheck)
			}
		})
	}
}

func TestNewValidatorRefusesMalformedHostSetPolicy(t *testing.T) {
	f := newFixture(t)
	f.pol.MRConfigID = &policy.Value{Want: []byte{1, 2, 3}, Mode: policy.Enforce}
	if _, err := tdx.NewValidator(f.pol, tdx.ValidatorOptions{TrustedRoots: f.chain.Pool()}); err == nil {
		t.Fatal("NewValidator accepted a 3-byte mrConfigId")
	}
}
