package cryptsetup

import (
	"errors"
	"testing"
)

func TestFormatOpenCheckKeySmoke(t *testing.T) {
	key := newKey(t)
	p := formatImage(t, key)
	t.Logf("%s", cli(t, "luksDump", "--dump-json-metadata", p))
	d := openDevice(t, p)
	slot, err := d.CheckKey(key)
	if err != nil || slot != 0 {
		t.Fatalf("CheckKey(right key) = %d, %v; want 0, nil", slot, err)
	}
	if _, err := d.CheckKey(newKey(t)); !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("CheckKey(wrong key) = %v; want ErrKeyRejected", err)
	}
}
