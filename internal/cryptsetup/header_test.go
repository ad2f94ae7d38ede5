package cryptsetup

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is one testdata/metadata/*.txt file: "key: value" lines, an
// empty line, then the LUKS2 JSON metadata. Keys: expect (accept or
// reject), field (the refused field), integrity (true: validate with
// FormatOptions.Integrity), note.
type fixture struct {
	name      string
	expect    string
	field     string
	integrity bool
	metadata  []byte
}

func loadFixtures(tb testing.TB) []fixture {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "metadata", "*.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(paths) == 0 {
		tb.Fatal("no fixtures in testdata/metadata")
	}
	var fs []fixture
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		head, body, ok := bytes.Cut(b, []byte("\n\n"))
		if !ok {
			tb.Fatalf("%s: no empty line after the header", p)
		}
		f := fixture{name: strings.TrimSuffix(filepath.Base(p), ".txt"), metadata: bytes.TrimSuffix(body, []byte("\n"))}
		for _, line := range strings.Split(string(head), "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				tb.Fatalf("%s: header line %q is not key: value", p, line)
			}
			switch k {
			case "expect":
				f.expect = v
			case "field":
				f.field = v
			case "integrity":
				f.integrity = v == "true"
			case "note":
			default:
				tb.Fatalf("%s: unknown header key %q", p, k)
			}
		}
		if f.expect != "accept" && f.expect != "reject" {
			tb.Fatalf("%s: expect is %q, want accept or reject", p, f.expect)
		}
		if (f.expect == "reject") != (f.field != "") {
			tb.Fatalf("%s: a rejected fixture names its field, an accepted one does not", p)
		}
		fs = append(fs, f)
	}
	return fs
}

func TestValidateMetadataFixtures(t *testing.T) {
	for _, f := range loadFixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			err := ValidateMetadata(f.metadata, FormatOptions{Integrity: f.integrity})
			if f.expect == "accept" {
				if err != nil {
					t.Fatalf("ValidateMetadata: %v; want accepted", err)
				}
				return
			}
			var he *HeaderError
			if !errors.As(err, &he) {
				t.Fatalf("ValidateMetadata: %v; want *HeaderError for %s", err, f.field)
			}
			if he.Field != f.field {
				t.Fatalf("refused field %q (%v); want %q", he.Field, err, f.field)
			}
		})
	}
}

// TestValidateMetadataRejectsOversize checks the size limit comes before
// parsing.
func TestValidateMetadataRejectsOversize(t *testing.T) {
	md := append([]byte(`{"pad":"`), bytes.Repeat([]byte("A"), maxMetadataSize)...)
	md = append(md, `"}`...)
	if got := headerField(ValidateMetadata(md, FormatOptions{})); got != "metadata" {
		t.Fatalf("refused field %q, want metadata", got)
	}
}

func TestHeaderErrorQuotesUntrustedValues(t *testing.T) {
	err := headerErr("segments.0.encryption", "aes-xts-plain64", "evil\n"+strings.Repeat("x", 100))
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error carries a raw newline: %q", err.Error())
	}
	if len(err.Got) > 2*maxGot {
		t.Fatalf("Got is %d bytes, want it shortened", len(err.Got))
	}
}

func FuzzValidateMetadata(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add(fx.metadata, fx.integrity)
	}
	f.Fuzz(func(t *testing.T, md []byte, integrity bool) {
		err := ValidateMetadata(md, FormatOptions{Integrity: integrity})
		if err == nil {
			// Accepted metadata is valid JSON of bounded size.
			if len(md) > maxMetadataSize {
				t.Fatalf("accepted %d bytes", len(md))
			}
			return
		}
		var he *HeaderError
		if !errors.As(err, &he) {
			t.Fatalf("error %v is not a *HeaderError", err)
		}
		if he.Field == "" || he.Want == "" || he.Got == "" {
			t.Fatalf("incomplete HeaderError %+v", he)
		}
	})
}
