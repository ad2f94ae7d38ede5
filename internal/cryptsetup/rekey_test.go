package cryptsetup

import (
	"context"
	"errors"
	"slices"
	"testing"
)

var allSteps = []string{stepAddKeyslot, stepRecordState, stepDestroyOldKeyslot}

// assertOpenable checks, through a separate handle as after a reboot, that
// the header still validates and that old or new opens the disk.
func assertOpenable(tb testing.TB, path string, oldKey, newKey []byte) {
	tb.Helper()
	d, err := Open(path, FormatOptions{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	defer d.Close()
	_, errOld := d.CheckKey(oldKey)
	_, errNew := d.CheckKey(newKey)
	if errOld != nil && errNew != nil {
		tb.Fatalf("neither key opens the disk: old: %v; new: %v", errOld, errNew)
	}
}

// assertRekeyed checks the end state of a rekey to generation gen, with
// the CLI as an independent reader of the keyslots.
func assertRekeyed(tb testing.TB, path string, oldKey, newKey []byte, gen uint32) {
	tb.Helper()
	d, err := Open(path, FormatOptions{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	defer d.Close()
	if _, err := d.CheckKey(newKey); err != nil {
		tb.Fatalf("new key: %v", err)
	}
	if _, err := d.CheckKey(oldKey); !errors.Is(err, ErrKeyRejected) {
		tb.Fatalf("old key: %v; want ErrKeyRejected", err)
	}
	if s, err := d.ReadState(); err != nil || s != (State{Keyed: true, Generation: gen}) {
		tb.Fatalf("state %+v, %v; want keyed generation %d", s, err, gen)
	}
	cli(tb, "open", "--test-passphrase", "--key-file", keyFile(tb, newKey), path)
}

func TestRekey(t *testing.T) {
	oldKey, newKey := randomKey(t), randomKey(t)
	p := formatImage(t, oldKey)
	d := openDevice(t, p)
	var steps []string
	err := d.rekey(t.Context(), oldKey, newKey, 1, func(step string) error {
		steps = append(steps, step)
		assertOpenable(t, p, oldKey, newKey)
		return nil
	})
	if err != nil {
		t.Fatalf("Rekey: %v", err)
	}
	if !slices.Equal(steps, allSteps) {
		t.Fatalf("steps %v, want %v", steps, allSteps)
	}
	assertRekeyed(t, p, oldKey, newKey, 1)

	// Running it again changes nothing.
	steps = nil
	if err := d.rekey(t.Context(), oldKey, newKey, 1, func(step string) error {
		steps = append(steps, step)
		return nil
	}); err != nil || len(steps) != 0 {
		t.Fatalf("second Rekey: steps %v, err %v; want no steps, nil", steps, err)
	}

	// A later generation moves on from the derived key.
	newer := randomKey(t)
	if err := d.Rekey(t.Context(), newKey, newer, 2); err != nil {
		t.Fatalf("Rekey to generation 2: %v", err)
	}
	assertRekeyed(t, p, newKey, newer, 2)

	// Replaying the first rekey must not move the generation back.
	if err := d.Rekey(t.Context(), newKey, newer, 1); err == nil {
		t.Fatal("Rekey to an older generation succeeded")
	}
	assertRekeyed(t, p, newKey, newer, 2)
}

var errCrash = errors.New("simulated power loss")

// TestRekeyCrashBetweenSteps stops Rekey after each step as a power loss
// would, then checks that a key still opens the disk and that running
// Rekey again converges.
func TestRekeyCrashBetweenSteps(t *testing.T) {
	for _, crashAfter := range allSteps {
		t.Run("crash after "+crashAfter, func(t *testing.T) {
			oldKey, newKey := randomKey(t), randomKey(t)
			p := formatImage(t, oldKey)
			d := openDevice(t, p)
			err := d.rekey(t.Context(), oldKey, newKey, 1, func(step string) error {
				assertOpenable(t, p, oldKey, newKey)
				if step == crashAfter {
					return errCrash
				}
				return nil
			})
			if !errors.Is(err, errCrash) {
				t.Fatalf("Rekey = %v; want the simulated crash", err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			assertOpenable(t, p, oldKey, newKey)

			// After the "reboot", the rerun finishes what is left.
			d2 := openDevice(t, p)
			var rest []string
			err = d2.rekey(t.Context(), oldKey, newKey, 1, func(step string) error {
				rest = append(rest, step)
				assertOpenable(t, p, oldKey, newKey)
				return nil
			})
			if err != nil {
				t.Fatalf("Rekey after crash: %v", err)
			}
			want := allSteps[slices.Index(allSteps, crashAfter)+1:]
			if !slices.Equal(rest, want) {
				t.Fatalf("rerun did steps %v, want %v", rest, want)
			}
			assertRekeyed(t, p, oldKey, newKey, 1)
		})
	}
}

func TestRekeyRefuses(t *testing.T) {
	oldKey := randomKey(t)
	p := formatImage(t, oldKey)
	d := openDevice(t, p)
	tests := []struct {
		name     string
		old, new []byte
		gen      uint32
		rejected bool
	}{
		{name: "old key wrong", old: randomKey(t), new: randomKey(t), gen: 1, rejected: true},
		{name: "same key", old: oldKey, new: oldKey, gen: 1},
		{name: "generation 0", old: oldKey, new: randomKey(t), gen: 0},
		{name: "short new key", old: oldKey, new: make([]byte, 16), gen: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.Rekey(t.Context(), tt.old, tt.new, tt.gen)
			if err == nil {
				t.Fatal("Rekey succeeded")
			}
			if errors.Is(err, ErrKeyRejected) != tt.rejected {
				t.Fatalf("Rekey = %v; want ErrKeyRejected: %v", err, tt.rejected)
			}
			// Nothing changed: the old key opens the one keyslot.
			if slot, err := d.CheckKey(oldKey); err != nil || slot != 0 {
				t.Fatalf("old key after refused Rekey: %d, %v", slot, err)
			}
			if s, err := d.ReadState(); err != nil || s != (State{}) {
				t.Fatalf("state after refused Rekey: %+v, %v", s, err)
			}
		})
	}
}

func TestRekeyCanceled(t *testing.T) {
	oldKey, newKey := randomKey(t), randomKey(t)
	d := openDevice(t, formatImage(t, oldKey))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.Rekey(ctx, oldKey, newKey, 1); err == nil {
		t.Fatal("Rekey with a canceled context succeeded")
	}
	if _, err := d.CheckKey(newKey); !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("new key after canceled Rekey: %v; want ErrKeyRejected", err)
	}
}
