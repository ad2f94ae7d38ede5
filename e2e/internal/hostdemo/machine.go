package hostdemo

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
)

// machine is a node with its TPM. The TPM (its keys' seeds, NV, the EK
// certificates) outlives every boot; what a boot opens on it does not.
type machine struct {
	tpm *tpmtest.Swtpm
	// peer builds the validators of the join service this node trusts.
	peer atls.Verifier
	boot *boot
}

// boot is what one boot of a node holds: its attestation issuer, whose
// attestation key is a transient object in the TPM, and the attested TLS
// credentials built on it.
type boot struct {
	n      int
	issuer *tpm.Issuer
	creds  *atls.Credentials
}

// powerOn starts the machine's first boot.
func powerOn(sw *tpmtest.Swtpm, peer atls.Verifier) (*machine, error) {
	m := &machine{tpm: sw, peer: peer}
	if err := m.open(1); err != nil {
		return nil, err
	}
	return m, nil
}

// open opens boot n's issuer and credentials, as a node's daemons do when
// they start.
func (m *machine) open(n int) error {
	iss, err := tpm.NewIssuer(m.tpm.RW, tpm.IssuerOptions{EKIntermediates: m.tpm.EKIntermediates})
	if err != nil {
		return fmt.Errorf("boot %d: opening the node's issuer: %w", n, err)
	}
	creds, err := atls.NewCredentials(atls.Config{Issuer: iss, Verifier: m.peer, HandshakeTimeout: time.Minute})
	if err != nil {
		return errors.Join(fmt.Errorf("boot %d: attested TLS credentials: %w", n, err), iss.Close())
	}
	m.boot = &boot{n: n, issuer: iss, creds: creds}
	return nil
}

// reboot power-cycles the machine. The boot's issuer is closed first, while
// its attestation key is still loaded: after the reset its handle would name
// nothing, or another object, and a kept issuer would fail to quote ("not
// loaded") or quote with the wrong key. firmware, if set, runs between the
// reset and the OS, as a boot chain's measurements do.
func (m *machine) reboot(firmware func(rw io.ReadWriter) error) error {
	n := m.boot.n + 1
	if err := m.shutdown(); err != nil {
		return err
	}
	if err := m.tpm.Reboot(); err != nil {
		return fmt.Errorf("boot %d: %w", n, err)
	}
	if firmware != nil {
		if err := firmware(m.tpm.RW); err != nil {
			return fmt.Errorf("boot %d: firmware measurements: %w", n, err)
		}
	}
	return m.open(n)
}

// shutdown closes the current boot's issuer; its credentials go with it.
func (m *machine) shutdown() error {
	if m.boot == nil {
		return nil
	}
	b := m.boot
	m.boot = nil
	if err := b.issuer.Close(); err != nil {
		return fmt.Errorf("boot %d: closing the node's issuer: %w", b.n, err)
	}
	return nil
}
