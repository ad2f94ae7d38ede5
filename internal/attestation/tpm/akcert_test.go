package tpm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/google/go-tpm-tools/client"
	attestpb "github.com/google/go-tpm-tools/proto/attest"
	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"
	"github.com/google/go-tpm/tpmutil"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// TestForgedQuoteByCertifiedUnrestrictedKey is the attack on AK-certificate
// mode: a key the platform CA certified, but that is an ordinary
// (unrestricted) signing key in the TPM, signs a hand-made TPMS_ATTEST that
// claims the policy's PCR values, and the evidence sends a public area that
// claims the restricted attribute for that key. Before "ak-cert-policy" the
// validator accepted it: the certificate binds the key, and the attributes
// it checked were the attacker's.
func TestForgedQuoteByCertifiedUnrestrictedKey(t *testing.T) {
	sim := newSimulator(t, realEventLog)
	good := tpmtest.PCRs(t, sim) // the values of the genuine boot, which the policy pins
	ca := tpmtest.NewFakePlatformCA(t, "fake platform CA")
	pol := &policy.TPM{PCRs: map[int]policy.Value{0: enforce(good[0]), 4: enforce(good[4]), 7: enforce(good[7])}}
	v := newValidator(t, pol, ValidatorOptions{AKRoots: ca.Pool()})
	userData := userDataFor("forged")

	tmpl := AKTemplate()
	tmpl.Attributes &^= tpm2.FlagRestricted
	loose, err := client.NewKey(sim, tpm2.HandleOwner, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	defer loose.Close()
	// The lie: the same key, with the attributes of an AK.
	claimed := loose.PublicArea()
	claimed.Attributes |= tpm2.FlagRestricted
	claimedRaw, err := claimed.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkAKAttributes(claimed); err != nil {
		t.Fatalf("the forged public area does not even claim AK attributes: %v", err)
	}

	// A TPMS_ATTEST of the attacker's making, over chosen PCR values.
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256}
	chosen := map[uint32][]byte{}
	digest := sha256.New()
	for i := range 24 {
		sel.PCRs = append(sel.PCRs, i)
		chosen[uint32(i)] = good[i]
		digest.Write(good[i])
	}
	name, err := claimed.Name()
	if err != nil {
		t.Fatal(err)
	}
	attest := tpm2.AttestationData{
		Magic:           0xff544347, // TPM_GENERATED_VALUE: what a restricted key would never sign unless the TPM made it
		Type:            tpm2.TagAttestQuote,
		QualifiedSigner: name,
		ExtraData:       userData,
		ClockInfo:       tpm2.ClockInfo{Clock: 1000, Safe: 1},
		AttestedQuoteInfo: &tpm2.QuoteInfo{
			PCRSelection: sel,
			PCRDigest:    digest.Sum(nil),
		},
	}
	attestRaw, err := attest.Encode()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(attestRaw)
	sig, err := tpm2.Sign(sim, loose.Handle(), "", h[:], nil, &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256})
	if err != nil {
		t.Fatalf("the unrestricted key refused to sign the forged TPMS_ATTEST: %v", err)
	}
	rawSig, err := sig.Encode()
	if err != nil {
		t.Fatal(err)
	}
	forged := func(certDER []byte) []byte {
		att := &attestpb.Attestation{
			AkPub:    claimedRaw,
			AkCert:   certDER,
			EventLog: realEventLog, // replays to the chosen values
			Quotes:   []*tpmpb.Quote{{Quote: attestRaw, RawSig: rawSig, Pcrs: &tpmpb.PCRs{Hash: tpmpb.HashAlgo_SHA256, Pcrs: chosen}}},
		}
		b, err := proto.Marshal(att)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	iss := newAKCertIssuer(t, sim, ca, realEventLog)
	ev := mustIssue(t, iss, userData)

	// A CA that certifies keys without asserting anything about them (the
	// cloud style): refused, whatever the public area claims.
	evKeyOnly := mutateAttestation(t, ev, func(a *attestpb.Attestation) {
		proto.Reset(a)
		if err := proto.Unmarshal(forged(ca.Certify(t, loose.PublicKey())), a); err != nil {
			t.Fatal(err)
		}
	})
	claims, err := v.Validate(context.Background(), evKeyOnly, userData)
	assertCheck(t, claims, err, "ak-cert-policy")
	t.Log(err)

	// The forgery is otherwise complete: if the CA asserts, wrongly, that it
	// verified the key is restricted, nothing else catches it. That is the
	// trust the validator places in AKRoots, stated in the package doc.
	evLyingCA := mutateAttestation(t, ev, func(a *attestpb.Attestation) {
		proto.Reset(a)
		if err := proto.Unmarshal(forged(ca.CertifyAsVerified(t, loose.PublicKey())), a); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := v.Validate(context.Background(), evLyingCA, userData); err != nil {
		t.Fatalf("the forged evidence is refused for another reason (%v): this test would prove nothing", err)
	}
}

// TestEndorsementModeRefusesExternalKeys checks the premise of endorsement
// mode for the same class of attack: the AK name the credential is made for
// covers the AK's attributes, and the TPM releases the secret only for an
// object it holds with its sensitive part. A key loaded from outside with
// only its public area (any attributes, so also an AK's) cannot be
// authorized for TPM2_ActivateCredential, and TPM2_LoadExternal refuses a
// sensitive part with fixedTPM, fixedParent or restricted set. So a software
// key dressed as an AK never gets the secret.
func TestEndorsementModeRefusesExternalKeys(t *testing.T) {
	sim := newSimulator(t, nil)
	ek, err := client.EndorsementKeyECC(sim)
	if err != nil {
		t.Fatal(err)
	}
	defer ek.Close()

	activate := func(t *testing.T, h tpmutil.Handle, name tpm2.Name) ([]byte, error) {
		t.Helper()
		secret := []byte("0123456789abcdef0123456789abcdef")
		blob, enc, err := credactivation.Generate(name.Digest, ek.PublicKey(), 16, secret)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := client.NewEKSession(sim)
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		ekAuth, err := sess.Auth()
		if err != nil {
			t.Fatal(err)
		}
		akAuth := tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}
		return tpm2.ActivateCredentialUsingAuth(sim, []tpm2.AuthCommand{akAuth, ekAuth}, h, ek.Handle(), blob[2:], enc[2:])
	}

	// Control: the genuine AK recovers the secret.
	ak, err := client.NewKey(sim, tpm2.HandleOwner, AKTemplate())
	if err != nil {
		t.Fatal(err)
	}
	akName, err := ak.PublicArea().Name()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := activate(t, ak.Handle(), akName); err != nil || !bytes.Equal(got, []byte("0123456789abcdef0123456789abcdef")) {
		t.Fatalf("the genuine AK did not recover the secret: %x, %v", got, err)
	}
	ak.Close()

	// A software key with an AK's public area, loaded public-only.
	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := AKTemplate()
	pub.ECCParameters.Point = tpm2.ECPoint{XRaw: pad32(soft.X), YRaw: pad32(soft.Y)}
	if err := checkAKAttributes(pub); err != nil {
		t.Fatalf("the external public area does not claim AK attributes: %v", err)
	}
	h, _, err := tpm2.LoadExternal(sim, pub, tpm2.Private{}, tpm2.HandleOwner)
	if err != nil {
		t.Fatalf("LoadExternal of the public area: %v", err)
	}
	defer tpm2.FlushContext(sim, h)
	name, err := pub.Name()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := activate(t, h, name); err == nil {
		t.Fatalf("TPM2_ActivateCredential released the secret (%x) for an external key with AK attributes", got)
	} else {
		t.Logf("refused by the TPM: %v", err)
	}
}

func pad32(n *big.Int) []byte {
	b := make([]byte, 32)
	return n.FillBytes(b)
}
