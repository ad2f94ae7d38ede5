package insecuredev

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// newTestValidator builds the validator the only way production code can:
// from a parsed policy document that allows insecure-dev.
func newTestValidator(tb testing.TB) *Validator {
	tb.Helper()
	pol, err := policy.Parse([]byte("version: 1\ninsecure-dev:\n  iUnderstandThisProvesNothing: true\n"))
	if err != nil {
		tb.Fatalf("parsing policy: %v", err)
	}
	v, err := NewInsecureValidator(pol.InsecureDev)
	if err != nil {
		tb.Fatalf("NewInsecureValidator: %v", err)
	}
	return v
}

func testUserData() []byte { return bytes.Repeat([]byte{0xab}, 32) }

func TestNewInsecureValidatorRefusesPolicyWithoutInsecureDev(t *testing.T) {
	if _, err := NewInsecureValidator(nil); err == nil {
		t.Fatal("NewInsecureValidator(nil) succeeded, want an error naming the policy section")
	}
	if _, err := NewInsecureValidator(&policy.InsecureDev{}); err == nil {
		t.Fatal("NewInsecureValidator accepted an InsecureDev built in code, not parsed from a consenting policy")
	}
	pol, err := policy.Parse([]byte("version: 1\ntpm:\n  pcrs:\n    \"4\": {value: \"" + string(bytes.Repeat([]byte("00"), 32)) + "\"}\n"))
	if err != nil {
		t.Fatalf("parsing policy: %v", err)
	}
	if _, err := NewInsecureValidator(pol.InsecureDev); err == nil {
		t.Fatal("NewInsecureValidator accepted a policy without an insecure-dev section")
	}
	if _, err := policy.Parse([]byte("version: 1\ninsecure-dev: {}\n")); err == nil {
		t.Fatal("policy without iUnderstandThisProvesNothing parsed")
	}
}

func TestRoundTripWarnsThatItProvesNothing(t *testing.T) {
	ctx := context.Background()
	ev, err := NewIssuer().Issue(ctx, testUserData())
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	claims, err := newTestValidator(t).Validate(ctx, ev, testUserData())
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if claims.Variant != attestation.VariantInsecureDev {
		t.Errorf("claims.Variant = %q, want %q", claims.Variant, attestation.VariantInsecureDev)
	}
	if len(claims.Warnings) != 1 || claims.Warnings[0] != Warning {
		t.Errorf("claims.Warnings = %q, want [%q]", claims.Warnings, Warning)
	}
	if len(claims.Measurements) != 0 || claims.HardwareID != nil {
		t.Errorf("claims carry measurements %v / hardware ID %x, want none", claims.Measurements, claims.HardwareID)
	}
}

func TestIssueRefusesBadUserData(t *testing.T) {
	for _, n := range []int{0, attestation.MaxUserData + 1} {
		if _, err := NewIssuer().Issue(context.Background(), make([]byte, n)); err == nil {
			t.Errorf("Issue with %d bytes of userData succeeded, want an error (never truncated)", n)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	valid := func() *attestationv1.Evidence {
		ev, err := NewIssuer().Issue(context.Background(), testUserData())
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		return ev
	}
	tests := []struct {
		name      string
		ev        *attestationv1.Evidence
		userData  []byte
		wantCheck string
		wantErr   error
	}{
		{name: "evidence bound to other userData", ev: valid(), userData: bytes.Repeat([]byte{0xcd}, 32), wantCheck: "binding"},
		{name: "evidence bound to a prefix of userData", ev: valid(), userData: append(testUserData(), 0), wantCheck: "binding"},
		{name: "empty expected userData", ev: &attestationv1.Evidence{Variant: "insecure-dev", Report: &attestationv1.Evidence_InsecureDev{InsecureDev: &attestationv1.InsecureDevReport{}}}, userData: nil, wantCheck: "binding"},
		{name: "empty echo", ev: &attestationv1.Evidence{Variant: "insecure-dev", Report: &attestationv1.Evidence_InsecureDev{InsecureDev: &attestationv1.InsecureDevReport{}}}, userData: testUserData(), wantCheck: "binding"},
		{name: "no evidence", ev: nil, userData: testUserData(), wantErr: attestation.ErrMalformed},
		{name: "tpm variant label", ev: func() *attestationv1.Evidence { ev := valid(); ev.Variant = "tpm"; return ev }(), userData: testUserData(), wantErr: attestation.ErrWrongVariant},
		{name: "insecure-dev label on a tpm report", ev: &attestationv1.Evidence{Variant: "insecure-dev", Report: &attestationv1.Evidence_Tpm{Tpm: []byte{1}}}, userData: testUserData(), wantErr: attestation.ErrWrongVariant},
		{name: "oversized echo", ev: &attestationv1.Evidence{Variant: "insecure-dev", Report: &attestationv1.Evidence_InsecureDev{InsecureDev: &attestationv1.InsecureDevReport{UserData: make([]byte, 65)}}}, userData: make([]byte, 65), wantErr: attestation.ErrMalformed},
	}
	v := newTestValidator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims, err := v.Validate(context.Background(), tt.ev, tt.userData)
			if err == nil {
				t.Fatalf("Validate accepted: claims %+v", claims)
			}
			if claims != nil {
				t.Errorf("Validate returned claims with error %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Validate error %v, want errors.Is %v", err, tt.wantErr)
			}
			if tt.wantCheck != "" {
				var ce *attestation.CheckError
				if !errors.As(err, &ce) || ce.Check != tt.wantCheck {
					t.Errorf("Validate error %v, want *CheckError with Check %q", err, tt.wantCheck)
				}
			}
		})
	}
}

func FuzzValidate(f *testing.F) {
	ev, err := NewIssuer().Issue(context.Background(), testUserData())
	if err != nil {
		f.Fatalf("Issue: %v", err)
	}
	raw, err := proto.Marshal(ev)
	if err != nil {
		f.Fatalf("marshal: %v", err)
	}
	seeds := [][]byte{raw, raw[:len(raw)/2], append(bytes.Clone(raw), 0x2a, 0x00), {}, {0xff, 0xff}}
	for _, s := range seeds {
		f.Add(s)
	}
	v := newTestValidator(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev attestationv1.Evidence
		if err := proto.Unmarshal(data, &ev); err != nil {
			return
		}
		claims, err := v.Validate(context.Background(), &ev, testUserData())
		if err != nil && claims != nil {
			t.Fatalf("claims %+v returned with error %v", claims, err)
		}
		if err == nil && !bytes.Equal(ev.GetInsecureDev().GetUserData(), testUserData()) {
			t.Fatalf("accepted evidence not bound to userData")
		}
	})
}

func BenchmarkValidate(b *testing.B) {
	ev, err := NewIssuer().Issue(context.Background(), testUserData())
	if err != nil {
		b.Fatalf("Issue: %v", err)
	}
	v := newTestValidator(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(context.Background(), ev, testUserData()); err != nil {
			b.Fatal(err)
		}
	}
}
