package cryptsetup

import "testing"

// BenchmarkFormat formats a 32 MiB file image: header, state token and
// one pbkdf2 keyslot.
func BenchmarkFormat(b *testing.B) {
	key := randomKey(b)
	p := newImage(b)
	for b.Loop() {
		if _, err := Format(b.Context(), p, key, FormatOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenValidateCheckKey is the boot path for a keyed disk: load
// and validate the header, then check a key.
func BenchmarkOpenValidateCheckKey(b *testing.B) {
	key := randomKey(b)
	p := formatImage(b, key)
	for b.Loop() {
		d, err := Open(p, FormatOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.CheckKey(key); err != nil {
			b.Fatal(err)
		}
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateMetadata is the pure JSON check alone.
func BenchmarkValidateMetadata(b *testing.B) {
	var md []byte
	for _, f := range loadFixtures(b) {
		if f.name == "valid" {
			md = f.metadata
		}
	}
	for b.Loop() {
		if err := ValidateMetadata(md, FormatOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
