package tpm

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/attestation"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

var (
	_ attestation.Issuer    = (*Issuer)(nil)
	_ attestation.Responder = (*Issuer)(nil)
)

// EventLogPath is where Linux exposes the firmware's TCG event log.
const EventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// DevicePath is the kernel's TPM resource manager, which OpenIssuer opens on
// a node.
const DevicePath = "/dev/tpmrm0"

// IssuerOptions configures an Issuer. The zero value issues in endorsement
// mode (the EK certificate is read from TPM NV) with an empty event log.
type IssuerOptions struct {
	// EventLog is the TCG event log sent with every quote, as read by
	// ReadEventLog on a node. Nil sends an empty log; the issuer never reads
	// the host's log by itself.
	EventLog []byte
	// AKCertificate (DER) selects AK-certificate mode: a platform CA's
	// certificate for this TPM's AK (AKTemplate, a primary key in the owner
	// hierarchy). Nil selects endorsement mode.
	AKCertificate []byte
	// AKIntermediates are DER certificates between AKCertificate and the
	// platform root, leaf side first. Only with AKCertificate.
	AKIntermediates [][]byte
	// EKIntermediates are DER certificates between the EK certificate and
	// the manufacturer root, leaf side first. Only in endorsement mode.
	EKIntermediates [][]byte
}

// ekKind says which EK the issuer found a certificate for.
type ekKind int

const (
	ekNone ekKind = iota
	ekRSA
	ekECC
)

// Issuer produces tpm evidence on a node and answers credential-activation
// challenges. Its methods serialize access to the TPM.
type Issuer struct {
	mu     sync.Mutex
	rw     io.ReadWriter
	closer io.Closer // the device, when OpenIssuer opened it
	ak     *client.Key

	eventLog        []byte
	akCert          []byte
	akIntermediates [][]byte
	ek              ekKind
	endorsement     *attestationv1.TPMEndorsement
}

// OpenIssuer opens the TPM at path (DevicePath on a node) and returns an
// issuer that owns it: Close closes the device.
func OpenIssuer(path string, opts IssuerOptions) (*Issuer, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("tpm: opening %s: %w", path, err)
	}
	iss, err := NewIssuer(f, opts)
	if err != nil {
		return nil, errors.Join(err, f.Close())
	}
	iss.closer = f
	return iss, nil
}

// AKTemplate is the attestation key's template: go-tpm-tools' ECC AK
// (client.AKTemplateECC) with noDA set. Without noDA the TPM treats the key
// as dictionary-attack protected: every power cut after the key was used
// counts as a failed authorization (TPM 2.0 Part 1, "unorderly shutdown"),
// and after a few (three on swtpm) the TPM is in lockout and refuses to quote
// with the key until its recovery time has passed. A node that lost power a
// few times could then neither rejoin nor be recovered. The AK's auth value
// is empty: there is nothing to guess, so DA protection guards nothing.
//
// The key is a primary key, derived from the owner seed and this template:
// the same key at every boot, created in the TPM's volatile memory and never
// persisted, so no persistent handle of the platform's is touched.
func AKTemplate() tpm2.Public {
	t := client.AKTemplateECC()
	t.Attributes |= tpm2.FlagNoDA
	return t
}

// NewIssuer creates the attestation key (AKTemplate) on rw and, in
// endorsement mode, reads the EK certificate from TPM NV (RSA EK
// first, then ECC). Close releases the key; rw stays open.
func NewIssuer(rw io.ReadWriter, opts IssuerOptions) (*Issuer, error) {
	if len(opts.AKCertificate) == 0 && len(opts.AKIntermediates) > 0 {
		return nil, errors.New("tpm: IssuerOptions.AKIntermediates without AKCertificate: set AKCertificate or drop the intermediates")
	}
	if len(opts.AKCertificate) > 0 && len(opts.EKIntermediates) > 0 {
		return nil, errors.New("tpm: IssuerOptions.EKIntermediates with AKCertificate: an issuer attests in one mode, drop one of them")
	}
	if len(opts.EventLog) > MaxEventLogSize {
		return nil, fmt.Errorf("tpm: IssuerOptions.EventLog is %d bytes, limit %d", len(opts.EventLog), MaxEventLogSize)
	}
	ak, err := client.NewKey(rw, tpm2.HandleOwner, AKTemplate())
	if err != nil {
		return nil, fmt.Errorf("tpm: loading attestation key: %w", err)
	}
	iss := &Issuer{
		rw:              rw,
		ak:              ak,
		eventLog:        slices.Clone(opts.EventLog),
		akCert:          slices.Clone(opts.AKCertificate),
		akIntermediates: cloneAll(opts.AKIntermediates),
	}
	if iss.eventLog == nil {
		iss.eventLog = []byte{}
	}
	if err := iss.setup(opts); err != nil {
		ak.Close()
		return nil, err
	}
	return iss, nil
}

func (i *Issuer) setup(opts IssuerOptions) error {
	if len(i.akCert) > 0 {
		cert, err := x509.ParseCertificate(i.akCert)
		if err != nil {
			return fmt.Errorf("tpm: parsing IssuerOptions.AKCertificate: %w", err)
		}
		if !sameKey(cert.PublicKey, i.ak.PublicKey()) {
			return fmt.Errorf("tpm: IssuerOptions.AKCertificate certifies key %s, but this TPM's AK is %s", keyID(cert.PublicKey), keyID(i.ak.PublicKey()))
		}
		// Validators refuse it anyway; failing here names the fix.
		if missing := missingPolicies(cert); len(missing) > 0 {
			return fmt.Errorf("tpm: IssuerOptions.AKCertificate lacks the TCG certificate policies %v: validators accept only AK certificates whose CA asserts it verified the key is TPM-resident and restricted; use endorsement mode with a CA that does not", missing)
		}
		return nil
	}
	for _, c := range []struct {
		kind ekKind
		load func(io.ReadWriter) (*client.Key, error)
	}{{ekRSA, client.EndorsementKeyRSA}, {ekECC, client.EndorsementKeyECC}} {
		ek, err := c.load(i.rw)
		if err != nil {
			return fmt.Errorf("tpm: loading endorsement key: %w", err)
		}
		cert := ek.Cert()
		ek.Close()
		if cert != nil {
			i.ek = c.kind
			i.endorsement = &attestationv1.TPMEndorsement{EkCertificate: cert.Raw, Intermediates: cloneAll(opts.EKIntermediates)}
			return nil
		}
	}
	return fmt.Errorf("tpm: no EK certificate in TPM NV (RSA index %#x, ECC index %#x): provision one or set IssuerOptions.AKCertificate", client.EKCertNVIndexRSA, client.EKCertNVIndexECC)
}

// Close releases the attestation key and, for OpenIssuer, the device.
func (i *Issuer) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ak != nil {
		i.ak.Close()
		i.ak = nil
	}
	if i.closer != nil {
		err := i.closer.Close()
		i.closer = nil
		return err
	}
	return nil
}

// Variant returns attestation.VariantTPM.
func (i *Issuer) Variant() attestation.Variant { return attestation.VariantTPM }

// Issue quotes every allocated PCR bank with extraData = userData and returns
// the go-tpm-tools Attestation (AK public area, quotes, event log, and the AK
// certificate in AK-certificate mode), plus the EK certificate in endorsement
// mode.
func (i *Issuer) Issue(ctx context.Context, userData []byte) (*attestationv1.Evidence, error) {
	if err := attestation.CheckUserData(userData); err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ak == nil {
		return nil, errors.New("tpm: issuer is closed")
	}
	att, err := i.ak.Attest(client.AttestOpts{
		Nonce:       userData,
		TCGEventLog: i.eventLog,
		// A TEE report is a different variant; never add one on the side.
		SkipTeeAttestation: true,
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: quoting PCRs: %w", err)
	}
	att.AkCert = i.akCert
	att.IntermediateCerts = i.akIntermediates
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(att)
	if err != nil {
		return nil, fmt.Errorf("tpm: encoding attestation: %w", err)
	}
	ev := &attestationv1.Evidence{
		Variant: string(attestation.VariantTPM),
		Report:  &attestationv1.Evidence_Tpm{Tpm: raw},
	}
	if i.endorsement != nil {
		ev.TpmEndorsement = proto.Clone(i.endorsement).(*attestationv1.TPMEndorsement)
	}
	return ev, nil
}

// Respond runs TPM2_ActivateCredential with the AK and the EK and returns the
// secret the TPM recovered. It fails in AK-certificate mode.
func (i *Issuer) Respond(ctx context.Context, ch *attestationv1.ActivationChallenge) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	blob, err := tpm2bContents("credential blob", ch.GetCredentialBlob())
	if err != nil {
		return nil, err
	}
	secret, err := tpm2bContents("encrypted secret", ch.GetEncryptedSecret())
	if err != nil {
		return nil, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ak == nil {
		return nil, errors.New("tpm: issuer is closed")
	}
	var load func(io.ReadWriter) (*client.Key, error)
	switch i.ek {
	case ekRSA:
		load = client.EndorsementKeyRSA
	case ekECC:
		load = client.EndorsementKeyECC
	default:
		return nil, errors.New("tpm: activation challenge in AK-certificate mode: this issuer has no EK")
	}
	ek, err := load(i.rw)
	if err != nil {
		return nil, fmt.Errorf("tpm: loading endorsement key: %w", err)
	}
	defer ek.Close()
	// The EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT).
	sess, err := client.NewEKSession(i.rw)
	if err != nil {
		return nil, fmt.Errorf("tpm: starting EK policy session: %w", err)
	}
	defer sess.Close()
	ekAuth, err := sess.Auth()
	if err != nil {
		return nil, fmt.Errorf("tpm: satisfying EK policy: %w", err)
	}
	akAuth := tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}
	recovered, err := tpm2.ActivateCredentialUsingAuth(i.rw, []tpm2.AuthCommand{akAuth, ekAuth}, i.ak.Handle(), ek.Handle(), blob, secret)
	if err != nil {
		return nil, fmt.Errorf("tpm: activating credential: %w", err)
	}
	return recovered, nil
}

// tpm2bContents strips the size prefix of a TPM2B structure, checking it.
func tpm2bContents(what string, b []byte) ([]byte, error) {
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 {
		return nil, fmt.Errorf("tpm: activation challenge: %s is not a TPM2B (%d bytes)", what, len(b))
	}
	return b[2:], nil
}

// ReadEventLog reads the firmware's TCG event log from path (EventLogPath on
// a node), up to MaxEventLogSize bytes, for IssuerOptions.EventLog.
func ReadEventLog(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: opening event log: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(f, MaxEventLogSize+1))
	if err != nil {
		return nil, fmt.Errorf("tpm: reading event log %s: %w", path, err)
	}
	if n > MaxEventLogSize {
		return nil, fmt.Errorf("tpm: event log %s is over %d bytes", path, MaxEventLogSize)
	}
	return buf.Bytes(), nil
}

func cloneAll(in [][]byte) [][]byte {
	if in == nil {
		return nil
	}
	out := make([][]byte, len(in))
	for i, b := range in {
		out[i] = slices.Clone(b)
	}
	return out
}
