package setup

import (
	"context"
	"testing"
)

// BenchmarkKeyedDiskCheck is what a reboot pays per candidate key before
// device-mapper: open the header, validate it strictly, check the key.
func BenchmarkKeyedDiskCheck(b *testing.B) {
	key := newKey(b)
	img, _ := keyedImage(b, key)
	for b.Loop() {
		h, err := LUKS{}.Open(img)
		if err != nil {
			b.Fatal(err)
		}
		if err := h.CheckKey(key); err != nil {
			b.Fatal(err)
		}
		h.Close()
	}
}

// BenchmarkFreshDiskFormat is formatting a fresh state disk image.
func BenchmarkFreshDiskFormat(b *testing.B) {
	img := newImage(b)
	key := newKey(b)
	for b.Loop() {
		h, err := LUKS{}.Format(context.Background(), img, key)
		if err != nil {
			b.Fatal(err)
		}
		h.Close()
	}
}
