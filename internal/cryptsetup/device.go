package cryptsetup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/cloister-dev/cloister/internal/keys"
)

// PassphraseSize is the only keyslot passphrase length accepted: 32
// uniformly random bytes, never something a person typed.
const PassphraseSize = 32

func checkPassphrase(what string, p []byte) error {
	if len(p) != PassphraseSize {
		return fmt.Errorf("cryptsetup: %s is %d bytes, want %d", what, len(p), PassphraseSize)
	}
	return nil
}

// Format writes a new LUKS2 header to devicePath: aes-xts-plain64 with a
// random 512-bit volume key, 4096-byte sectors, optional dm-integrity, the
// state token {keyed: false}, and one pbkdf2 keyslot for passphrase. It
// destroys whatever the device held. It returns the header's UUID.
func Format(ctx context.Context, devicePath string, passphrase []byte, opts FormatOptions) (string, error) {
	if err := checkPassphrase("passphrase", passphrase); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	h, err := newHandle(devicePath)
	if err != nil {
		return "", fmt.Errorf("cryptsetup: opening %s: %w", devicePath, err)
	}
	defer h.free()
	integrity := ""
	if opts.Integrity {
		integrity = integrityType
	}
	if err := h.format(integrity, opts.volumeKeySize(), pbkdf2Iterations); err != nil {
		return "", fmt.Errorf("cryptsetup: formatting %s: %w", devicePath, err)
	}
	if err := h.setTokenJSON(tokenID, State{}.marshal()); err != nil {
		return "", fmt.Errorf("cryptsetup: writing state token to %s: %w", devicePath, err)
	}
	if _, err := h.addKeyslotByVolumeKey(passphrase); err != nil {
		return "", fmt.Errorf("cryptsetup: adding keyslot to %s: %w", devicePath, err)
	}
	// Check our own output with the same rules as any header we load.
	md, err := h.dumpJSON()
	if err != nil {
		return "", fmt.Errorf("cryptsetup: reading back header of %s: %w", devicePath, err)
	}
	if err := ValidateMetadata(md, opts); err != nil {
		return "", fmt.Errorf("cryptsetup: header just written to %s: %w", devicePath, err)
	}
	u := h.uuid()
	if err := keys.CheckDiskUUID(u); err != nil {
		return "", fmt.Errorf("cryptsetup: header just written to %s: %w", devicePath, headerErr("header.uuid", "canonical lowercase UUID (8-4-4-4-12 hex)", u))
	}
	return u, nil
}

// Device is an open LUKS2 device whose header passed validation. Its
// methods are safe for concurrent use.
type Device struct {
	path string
	opts FormatOptions

	mu sync.Mutex
	h  *handle // nil after Close
}

// Open loads the LUKS2 header of devicePath and validates it strictly
// against what Format writes with opts before anything else uses it: the
// binary header (magic, version 2, header size), then libcryptsetup's view
// of it (type LUKS2, no label or subsystem, a canonical UUID as
// keys.CheckDiskUUID defines it), then the JSON metadata with
// ValidateMetadata. A refused header is a *HeaderError; when libcryptsetup
// itself refuses to load it, HeaderError.Reason holds libcryptsetup's
// reason.
func Open(devicePath string, opts FormatOptions) (*Device, error) {
	f, err := os.Open(devicePath)
	if err != nil {
		return nil, fmt.Errorf("cryptsetup: opening %s: %w", devicePath, err)
	}
	err = checkBinaryHeader(f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("cryptsetup: %s: %w", devicePath, err)
	}
	h, err := newHandle(devicePath)
	if err != nil {
		return nil, fmt.Errorf("cryptsetup: opening %s: %w", devicePath, err)
	}
	d := &Device{path: devicePath, opts: opts, h: h}
	if err := h.load(); err != nil {
		h.free()
		if errors.Is(err, syscall.EINVAL) {
			// libcryptsetup found neither header copy valid; its
			// reason is the only account of what is wrong.
			he := headerErr("header", "a LUKS2 header libcryptsetup loads", syscall.EINVAL.Error())
			he.Reason = libReason(err)
			return nil, fmt.Errorf("cryptsetup: %s: %w", devicePath, he)
		}
		return nil, fmt.Errorf("cryptsetup: loading header of %s: %w", devicePath, err)
	}
	if err := d.validate(); err != nil {
		h.free()
		return nil, err
	}
	return d, nil
}

// validate checks the header libcryptsetup holds in memory, which is what
// the next call acts on. Callers hold d.mu.
func (d *Device) validate() error {
	if t := d.h.typ(); t != "LUKS2" {
		return fmt.Errorf("cryptsetup: %s: %w", d.path, headerErr("header.type", "LUKS2", t))
	}
	if l := d.h.label(); l != "" {
		return fmt.Errorf("cryptsetup: %s: %w", d.path, headerErr("header.label", "empty", l))
	}
	if s := d.h.subsystem(); s != "" {
		return fmt.Errorf("cryptsetup: %s: %w", d.path, headerErr("header.subsystem", "empty", s))
	}
	// The UUID is the disk's identity on the wire and an input of its key
	// derivation: only the canonical form leaves this package.
	if u := d.h.uuid(); keys.CheckDiskUUID(u) != nil {
		return fmt.Errorf("cryptsetup: %s: %w", d.path, headerErr("header.uuid", "canonical lowercase UUID (8-4-4-4-12 hex)", u))
	}
	md, err := d.h.dumpJSON()
	if err != nil {
		return fmt.Errorf("cryptsetup: dumping metadata of %s: %w", d.path, err)
	}
	if err := ValidateMetadata(md, d.opts); err != nil {
		return fmt.Errorf("cryptsetup: %s: %w", d.path, err)
	}
	return nil
}

var errClosed = errors.New("cryptsetup: device is closed")

// lock returns with d.mu held, or an error if d is closed.
func (d *Device) lock() error {
	d.mu.Lock()
	if d.h == nil {
		d.mu.Unlock()
		return errClosed
	}
	return nil
}

// Close releases the libcryptsetup context. It does not deactivate a
// mapping.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.h == nil {
		return errClosed
	}
	d.h.free()
	d.h = nil
	return nil
}

// UUID returns the LUKS2 header's UUID, the disk's identity towards the
// join service.
func (d *Device) UUID() string {
	if err := d.lock(); err != nil {
		return ""
	}
	defer d.mu.Unlock()
	return d.h.uuid()
}

// CheckKey reports which keyslot passphrase opens, without device-mapper.
// A passphrase no keyslot accepts returns an error wrapping ErrKeyRejected.
func (d *Device) CheckKey(passphrase []byte) (int, error) {
	if err := checkPassphrase("passphrase", passphrase); err != nil {
		return 0, err
	}
	if err := d.lock(); err != nil {
		return 0, err
	}
	defer d.mu.Unlock()
	return d.checkKey(passphrase)
}

func (d *Device) checkKey(passphrase []byte) (int, error) {
	slot, err := d.h.activate("", passphrase)
	if errors.Is(err, syscall.EPERM) {
		return 0, fmt.Errorf("checking key for %s: %w", d.path, ErrKeyRejected)
	}
	if err != nil {
		return 0, fmt.Errorf("cryptsetup: checking key for %s: %w", d.path, err)
	}
	return slot, nil
}

// ReadState returns the state recorded in the header's token.
func (d *Device) ReadState() (State, error) {
	if err := d.lock(); err != nil {
		return State{}, err
	}
	defer d.mu.Unlock()
	return d.readState()
}

func (d *Device) readState() (State, error) {
	raw, err := d.h.tokenJSON(tokenID)
	if err != nil {
		return State{}, fmt.Errorf("cryptsetup: reading state token of %s: %w", d.path, err)
	}
	s, err := parseState("tokens.0", raw)
	if err != nil {
		return State{}, fmt.Errorf("cryptsetup: %s: %w", d.path, err)
	}
	return s, nil
}

// WriteState records s in the header's token, replacing the previous state
// in one header update.
func (d *Device) WriteState(s State) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	return d.writeState(s)
}

func (d *Device) writeState(s State) error {
	if !s.Keyed && s.Generation != 0 {
		return fmt.Errorf("cryptsetup: state generation %d without keyed: a disk has a generation only once keyed", s.Generation)
	}
	if err := d.h.setTokenJSON(tokenID, s.marshal()); err != nil {
		return fmt.Errorf("cryptsetup: writing state token of %s: %w", d.path, err)
	}
	return d.validate()
}

// Activate maps the device as /dev/mapper/name with passphrase, after
// validating the header once more. It needs device-mapper, which the host
// test machines lack: host tests never call it, the QEMU end-to-end tests
// do. A wrong passphrase returns an error wrapping ErrKeyRejected.
func (d *Device) Activate(name string, passphrase []byte) error {
	if name == "" {
		return errors.New("cryptsetup: activating with an empty mapping name")
	}
	if err := checkPassphrase("passphrase", passphrase); err != nil {
		return err
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := d.validate(); err != nil {
		return err
	}
	_, err := d.h.activate(name, passphrase)
	if errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("activating %s as %s: %w", d.path, name, ErrKeyRejected)
	}
	if err != nil {
		return fmt.Errorf("cryptsetup: activating %s as %s: %w", d.path, name, err)
	}
	return nil
}

// Deactivate removes the mapping name. Like Activate, it needs
// device-mapper and runs only in the QEMU end-to-end tests.
func (d *Device) Deactivate(name string) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := d.h.deactivate(name); err != nil {
		return fmt.Errorf("cryptsetup: deactivating %s: %w", name, err)
	}
	return nil
}
