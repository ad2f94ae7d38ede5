package attestation

import (
	"context"
	"errors"
	"testing"

	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// fakeValidator accepts everything of its variant; it tests the registry only.
type fakeValidator struct{ variant Variant }

func (f fakeValidator) Variant() Variant { return f.variant }
func (f fakeValidator) Validate(_ context.Context, ev *attestationv1.Evidence, _ []byte) (*Claims, error) {
	if err := CheckVariant(f.variant, ev); err != nil {
		return nil, err
	}
	return &Claims{Variant: f.variant}, nil
}

func TestValidatorsRefuseDuplicateVariant(t *testing.T) {
	if _, err := NewValidators(fakeValidator{VariantTPM}, fakeValidator{VariantTPM}); err == nil {
		t.Fatal("two tpm validators accepted")
	}
}

func TestValidatorsDispatchByVariantWithFakeValidators(t *testing.T) {
	reg, err := NewValidators(fakeValidator{VariantTPM}, fakeValidator{VariantTDX})
	if err != nil {
		t.Fatal(err)
	}
	tpmEvidence := &attestationv1.Evidence{Variant: string(VariantTPM), Report: &attestationv1.Evidence_Tpm{Tpm: []byte{1}}}
	c, err := reg.Validate(context.Background(), tpmEvidence, []byte("x"))
	if err != nil || c.Variant != VariantTPM {
		t.Fatalf("tpm evidence: claims %v, err %v", c, err)
	}
	if ch, err := reg.Challenge(context.Background(), tpmEvidence, []byte("x")); ch != nil || err != nil {
		t.Errorf("non-challenger gave challenge %v, err %v", ch, err)
	}

	tests := []struct {
		name    string
		ev      *attestationv1.Evidence
		wantErr error
	}{
		{"no evidence", nil, ErrMalformed},
		{"variant without validator", &attestationv1.Evidence{Variant: string(VariantSNP), Report: &attestationv1.Evidence_SevSnp{SevSnp: []byte{1}}}, ErrWrongVariant},
		{"insecure-dev not registered", &attestationv1.Evidence{Variant: string(VariantInsecureDev), Report: &attestationv1.Evidence_InsecureDev{InsecureDev: &attestationv1.InsecureDevReport{}}}, ErrWrongVariant},
		{"tpm label on a tdx report", &attestationv1.Evidence{Variant: string(VariantTPM), Report: &attestationv1.Evidence_TdxQuote{TdxQuote: []byte{1}}}, ErrWrongVariant},
		{"tpm label without report", &attestationv1.Evidence{Variant: string(VariantTPM)}, ErrWrongVariant},
		{"empty variant", &attestationv1.Evidence{Report: &attestationv1.Evidence_Tpm{Tpm: []byte{1}}}, ErrWrongVariant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := reg.Validate(context.Background(), tt.ev, []byte("x"))
			if !errors.Is(err, tt.wantErr) || c != nil {
				t.Errorf("claims %v, err %v; want %v", c, err, tt.wantErr)
			}
		})
	}
}

func TestCheckUserData(t *testing.T) {
	for _, n := range []int{0, MaxUserData + 1, 1000} {
		if err := CheckUserData(make([]byte, n)); err == nil {
			t.Errorf("%d bytes of userData accepted", n)
		}
	}
	for _, n := range []int{1, 32, MaxUserData} {
		if err := CheckUserData(make([]byte, n)); err != nil {
			t.Errorf("%d bytes refused: %v", n, err)
		}
	}
}

func TestCheckErrorMessage(t *testing.T) {
	cause := errors.New("x509: certificate has expired")
	err := error(&CheckError{Variant: VariantSNP, Check: "measurement", Want: Hex([]byte{0x4f}), Got: Hex(nil), Err: cause})
	if got, want := err.Error(), "sev-snp: measurement: want 4f, got (none): x509: certificate has expired"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.Is(err, cause) {
		t.Error("CheckError does not unwrap its cause")
	}
}
