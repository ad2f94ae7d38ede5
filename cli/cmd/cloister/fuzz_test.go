package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
)

// FuzzUntrusted checks that node text is always safe to print: valid
// UTF-8, no control characters, bounded.
func FuzzUntrusted(f *testing.F) {
	for _, s := range []string{"", "running kubeadm init", "\x1b[2J\x1b]0;title\x07", "a\nb\rc", "\xff\xfe", strings.Repeat("é", 600), "\u202egnp.exe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := untrusted(s)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8: %q", out)
		}
		for _, r := range out {
			if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
				t.Fatalf("control character %U in %q", r, out)
			}
		}
		if len(out) > maxUntrusted+64 {
			t.Fatalf("%d bytes out", len(out))
		}
	})
}

// FuzzParseIndexList checks that register lists parse to sorted, distinct
// indexes in range, never the latch, or fail.
func FuzzParseIndexList(f *testing.F) {
	for _, s := range []string{"0-7,9", "0-9", "15", "3-1", "", ",", "0-23", "-1", "7,7,7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseIndexList(s, 23, 15, "pcr")
		if err != nil {
			if got != nil {
				t.Fatalf("result %v with error %v", got, err)
			}
			return
		}
		if len(got) == 0 || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("%q -> %v", s, got)
		}
		for _, i := range got {
			if i < 0 || i > 23 || i == 15 {
				t.Fatalf("%q -> index %d", s, i)
			}
		}
	})
}

// FuzzPolicyEdit edits arbitrary documents as 'policy set --tpm-pcr 4=…'
// does: no panic, and a result that parses holds the value that was set.
func FuzzPolicyEdit(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seed documents in testdata/ (%v)", err)
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, hex32)
	}
	f.Add([]byte(`{"version": 1, "tpm": {"pcrs": {"4": {"value": "00"}}}}`), hex32)
	f.Add([]byte("version: 1\ntpm: null\n"), hex32+":warn")
	f.Add([]byte("- a list\n"), hex32)
	f.Add([]byte("version: 1\ntpm: {pcrs: [1, 2]}\n"), "zz")
	f.Fuzz(func(t *testing.T, doc []byte, value string) {
		if len(doc) > 1<<16 {
			return
		}
		v, err := parseRefValue(value)
		if err != nil {
			return
		}
		v.index = 4
		node, isJSON, err := decodePolicyDocument(doc)
		if err != nil {
			return
		}
		root := node.Content[0]
		setValue(mapEnsure(mapEnsure(root, "tpm"), "pcrs"), "4", v)
		out, err := encodePolicyDocument(node, isJSON)
		if err != nil {
			return
		}
		pol, err := policy.Parse(out)
		if err != nil {
			return
		}
		got := pol.TPM.PCRs[4]
		if hexOf(got.Want) != v.hex || got.Mode != v.mode() {
			t.Fatalf("set %s (%s), parsed %x (%s)\n%s", v.hex, v.mode(), got.Want, got.Mode, out)
		}
		if isJSON && !bytes.HasPrefix(out, []byte("{")) {
			t.Fatalf("JSON document became:\n%s", out)
		}
	})
}
