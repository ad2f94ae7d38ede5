package tpm

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// TestIssuerAttestsThroughPowerCutsOnSwtpm: a node's TPM sees power cuts (a
// VM killed, a host that crashed). A TPM counts each power cut after a
// dictionary-attack-protected key was used as a failed authorization, and a
// few put it into lockout. The issuer's AK must neither add to that count nor
// stop working in lockout: a node that lost power three times must still
// rejoin and be recoverable.
func TestIssuerAttestsThroughPowerCutsOnSwtpm(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	v := newValidator(t, &policy.TPM{PCRs: map[int]policy.Value{0: enforce(make([]byte, 32))}}, ValidatorOptions{EKRoots: sw.EKRoots})
	ctx := context.Background()
	// attest is one boot's work: a fresh issuer, evidence, the credential
	// activation (the AK's authorization) and the verdict.
	attest := func() error {
		iss, err := NewIssuer(sw.RW, IssuerOptions{EKIntermediates: sw.EKIntermediates})
		if err != nil {
			return err
		}
		defer iss.Close()
		userData := userDataFor("power cut")
		ev, err := iss.Issue(ctx, userData)
		if err != nil {
			return err
		}
		ch, err := v.Challenge(ctx, ev, userData)
		if err != nil {
			return err
		}
		if ev.TpmEndorsement.ActivatedSecret, err = iss.Respond(ctx, ch); err != nil {
			return err
		}
		_, err = v.Validate(ctx, ev, userData)
		return err
	}

	for boot := 1; boot <= 5; boot++ {
		if err := attest(); err != nil {
			t.Fatalf("boot %d: %v", boot, err)
		}
		if err := sw.Reboot(); err != nil {
			t.Fatal(err)
		}
	}
	if n := tpmProperty(t, sw.RW, tpm2.LockoutCounter); n != 0 {
		t.Errorf("after 5 power cuts with the issuer's AK in use the DA lockout counter is %d, want 0 (the AK must be noDA)", n)
	}

	// Another program's DA-protected key (go-tpm-tools' stock AK template,
	// without noDA) in use at each power cut drives the TPM into lockout.
	maxFail := tpmProperty(t, sw.RW, tpm2.MaxAuthFail)
	for cut := uint32(0); tpmProperty(t, sw.RW, tpm2.LockoutCounter) < maxFail; cut++ {
		if cut > maxFail {
			t.Fatalf("DA lockout counter %d after %d power cuts, max %d: the TPM does not count them", tpmProperty(t, sw.RW, tpm2.LockoutCounter), cut, maxFail)
		}
		if err := quoteWithDAProtectedKey(sw.RW); err != nil {
			t.Fatalf("quote with a DA-protected key before lockout: %v", err)
		}
		if err := sw.Reboot(); err != nil {
			t.Fatal(err)
		}
	}
	var w tpm2.Warning
	if err := quoteWithDAProtectedKey(sw.RW); !errors.As(err, &w) || w.Code != tpm2.RCLockout {
		t.Fatalf("quote with a DA-protected key in lockout: %v, want TPM_RC_LOCKOUT (the test did not reach lockout)", err)
	}
	if err := attest(); err != nil {
		t.Errorf("issuer in DA lockout: %v", err)
	}
}

// quoteWithDAProtectedKey quotes PCR 0 with go-tpm-tools' stock ECC AK, which
// is not noDA: the quote is an authorization of a DA-protected object.
func quoteWithDAProtectedKey(rw io.ReadWriter) error {
	tmpl := client.AKTemplateECC()
	if tmpl.Attributes&tpm2.FlagNoDA != 0 {
		return errors.New("go-tpm-tools' AK template is noDA now: pick another DA-protected key")
	}
	k, err := client.NewKey(rw, tpm2.HandleOwner, tmpl)
	if err != nil {
		return err
	}
	defer k.Close()
	_, err = k.Quote(tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: []int{0}}, make([]byte, 32))
	return err
}

// tpmProperty reads one TPM_PT property.
func tpmProperty(t *testing.T, rw io.ReadWriter, prop tpm2.TPMProp) uint32 {
	t.Helper()
	vals, _, err := tpm2.GetCapability(rw, tpm2.CapabilityTPMProperties, 1, uint32(prop))
	if err != nil {
		t.Fatalf("reading TPM property %#x: %v", prop, err)
	}
	if len(vals) != 1 {
		t.Fatalf("reading TPM property %#x: %d values", prop, len(vals))
	}
	p, ok := vals[0].(tpm2.TaggedProperty)
	if !ok || p.Tag != prop {
		t.Fatalf("reading TPM property %#x: got %#v", prop, vals[0])
	}
	return p.Value
}
