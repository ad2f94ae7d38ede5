package cryptsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"
)

// The steps of Rekey, in order. Each one is a single header update, which
// libcryptsetup makes atomic with its two header copies.
const (
	stepAddKeyslot        = "add-keyslot"
	stepRecordState       = "record-state"
	stepDestroyOldKeyslot = "destroy-old-keyslot"
)

// Rekey moves the disk from oldPass to newPass, the key of the given
// generation (1 or more), without ever leaving it without a working
// keyslot:
//
//  1. unless newPass already opens the disk, add a keyslot for it (proving
//     oldPass) and check that newPass opens it;
//  2. unless the state token already says so, record {keyed, generation};
//  3. if oldPass still opens a keyslot, destroy that keyslot;
//
// then check that newPass opens the disk and oldPass no longer does. After
// every step the header is validated again. If power is lost at any point,
// oldPass or newPass opens the disk, and calling Rekey again with the same
// arguments finishes the job: each step is skipped once its effect is on
// disk. If neither passphrase opens the disk, the error wraps
// ErrKeyRejected. A generation older than the one the disk records is
// refused.
func (d *Device) Rekey(ctx context.Context, oldPass, newPass []byte, generation uint32) error {
	return d.rekey(ctx, oldPass, newPass, generation, nil)
}

// rekey is Rekey with a hook that runs after each step that changed the
// disk; an error from it stops Rekey there, as a crash would.
func (d *Device) rekey(ctx context.Context, oldPass, newPass []byte, generation uint32, afterStep func(step string) error) error {
	if err := checkPassphrase("old passphrase", oldPass); err != nil {
		return err
	}
	if err := checkPassphrase("new passphrase", newPass); err != nil {
		return err
	}
	if bytes.Equal(oldPass, newPass) {
		return errors.New("cryptsetup: rekey to the same passphrase")
	}
	if generation == 0 {
		return errors.New("cryptsetup: rekey to generation 0: pass the generation of the new key (1 for the first derived key)")
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	step := func(name string) error {
		if err := d.validate(); err != nil {
			return fmt.Errorf("after %s: %w", name, err)
		}
		if afterStep != nil {
			if err := afterStep(name); err != nil {
				return fmt.Errorf("cryptsetup: rekey of %s stopped after %s: %w", d.path, name, err)
			}
		}
		return nil
	}

	// A rerun must not move the recorded generation backwards.
	st, err := d.readState()
	if err != nil {
		return err
	}
	if st.Keyed && st.Generation > generation {
		return fmt.Errorf("cryptsetup: rekey of %s to generation %d: the disk already records generation %d", d.path, generation, st.Generation)
	}

	// 1. A keyslot for the new key.
	_, err = d.checkKey(newPass)
	switch {
	case errors.Is(err, ErrKeyRejected):
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.h.setPBKDF(pbkdf2Iterations); err != nil {
			return fmt.Errorf("cryptsetup: setting pbkdf for %s: %w", d.path, err)
		}
		if _, err := d.h.addKeyslotByPassphrase(oldPass, newPass); err != nil {
			if errors.Is(err, syscall.EPERM) {
				return fmt.Errorf("rekey of %s: neither the old nor the new key opens it: %w", d.path, ErrKeyRejected)
			}
			return fmt.Errorf("cryptsetup: adding keyslot to %s: %w", d.path, err)
		}
		if _, err := d.checkKey(newPass); err != nil {
			return fmt.Errorf("cryptsetup: new keyslot of %s does not open: %w", d.path, err)
		}
		if err := step(stepAddKeyslot); err != nil {
			return err
		}
	case err != nil:
		return err
	}

	// 2. The state, recorded only once the new key works.
	st, err = d.readState()
	if err != nil {
		return err
	}
	if want := (State{Keyed: true, Generation: generation}); st != want {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.writeState(want); err != nil {
			return err
		}
		if err := step(stepRecordState); err != nil {
			return err
		}
	}

	// 3. The old keyslot, destroyed only once the new key works.
	oldSlot, err := d.checkKey(oldPass)
	switch {
	case err == nil:
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.h.destroyKeyslot(oldSlot); err != nil {
			return fmt.Errorf("cryptsetup: destroying keyslot %d of %s: %w", oldSlot, d.path, err)
		}
		if err := step(stepDestroyOldKeyslot); err != nil {
			return err
		}
	case !errors.Is(err, ErrKeyRejected):
		return err
	}

	// The outcome, checked rather than assumed.
	if _, err := d.checkKey(newPass); err != nil {
		return fmt.Errorf("cryptsetup: after rekey of %s the new key does not open it: %w", d.path, err)
	}
	if _, err := d.checkKey(oldPass); !errors.Is(err, ErrKeyRejected) {
		return fmt.Errorf("cryptsetup: after rekey of %s the old key still opens it (err=%v)", d.path, err)
	}
	return nil
}
