package strictyaml

import (
	"errors"
	"strings"
	"testing"
)

type inner struct {
	MinimumTCB *uint8 `json:"minimumTCB"`
	Insecure   bool   `json:"insecure"`
}

type doc struct {
	Version *int             `json:"version"`
	Section *inner           `json:"section"`
	PCRs    map[string]inner `json:"pcrs"`
	List    []inner          `json:"list"`
}

func TestDecodeAccepts(t *testing.T) {
	var d doc
	err := Decode([]byte(`{"version": 1, "section": {"minimumTCB": 3, "insecure": false}, "pcrs": {"4": {"insecure": true}}, "list": [{"minimumTCB": 1}]}`), &d)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if *d.Version != 1 || *d.Section.MinimumTCB != 3 || !d.PCRs["4"].Insecure || *d.List[0].MinimumTCB != 1 {
		t.Errorf("decoded %+v", d)
	}
	var empty doc
	if err := Decode(nil, &empty); err != nil || empty.Version != nil {
		t.Errorf("empty document: %+v, %v", empty, err)
	}
}

// TestDecodeRejects holds one document per way a non-canonical spelling
// could override a canonical one, and the text the error must contain. With
// sigs.k8s.io/yaml's UnmarshalStrict every one of the case and numeric-key
// variants was accepted, the last spelling winning.
func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"case variant at top level", "version: 1\nVersion: 2", `(document): unknown field "Version" (field names are case-sensitive: did you mean "version"?)`},
		{"case variant alone", "VERSION: 1", `unknown field "VERSION"`},
		{"case variant nested", "section: {minimumTCB: 3, minimumtcb: 0}", `section: unknown field "minimumtcb"`},
		{"case variant in a map value", `pcrs: {"4": {Insecure: true}}`, `pcrs[4]: unknown field "Insecure"`},
		{"case variant in a list element", `list: [{MinimumTCB: 0}]`, `list[0]: unknown field "MinimumTCB"`},
		{"unicode case folding (long s) that encoding/json matches", "section: {in\u017fecure: true}", "section: unknown field \"in\u017fecure\""},
		{"unknown field", "versoin: 1", `unknown field "versoin"`},
		{"duplicate YAML key", "version: 1\nversion: 2", `duplicate key "version"`},
		{"duplicate JSON key", `{"version": 1, "version": 2}`, `duplicate key "version"`},
		{"duplicate nested JSON key", `{"section": {"insecure": false, "insecure": true}}`, `section: duplicate key "insecure"`},
		{"numeric and string spelling of one map key", "pcrs:\n  4: {insecure: false}\n  \"4\": {insecure: true}", `pcrs: duplicate key "4"`},
		{"string and numeric spelling of one map key", `pcrs: {"4": {}, 4: {}}`, `pcrs: duplicate key "4"`},
		{"alias", "section: &a {insecure: true}\nlist: [*a]", "anchors are not allowed"},
		{"merge key", "pcrs: {\"4\": {<<: {insecure: true}}}", "merge keys"},
		{"two documents", "version: 1\n---\nversion: 2", "more than one YAML document"},
		{"complex key", "pcrs: {[4]: {}}", "keys must be plain scalars"},
		{"wrong type", "version: one", "version"},
		{"mapping where a list is wanted", "list: {a: 1}", "list: want"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d doc
			err := Decode([]byte(tt.doc), &d)
			if err == nil {
				t.Fatalf("accepted: %+v", d)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodeKeepsMapKeysVerbatim(t *testing.T) {
	// Canonical forms are the caller's decision: "04" and 0x4 must reach
	// it unchanged, not be folded into "4".
	var d doc
	if err := Decode([]byte("pcrs: {\"04\": {}, 0x4: {}}"), &d); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.PCRs["04"]; !ok {
		t.Errorf("keys = %v, want 04 kept", d.PCRs)
	}
	if _, ok := d.PCRs["0x4"]; !ok {
		t.Errorf("keys = %v, want 0x4 kept", d.PCRs)
	}
}

type selfDecoding struct{ raw string }

func (s *selfDecoding) UnmarshalJSON(b []byte) error { s.raw = string(b); return nil }

type Embedded struct {
	Inner string `json:"inner"`
}

type outer struct {
	Embedded
	Self selfDecoding `json:"self"`
}

func TestDecodeEmbeddedAndSelfDecoding(t *testing.T) {
	var o outer
	if err := Decode([]byte(`{inner: x, self: {Any: 1, keys: 2}}`), &o); err != nil {
		t.Fatal(err)
	}
	if o.Inner != "x" || o.Self.raw != `{"Any":1,"keys":2}` {
		t.Errorf("decoded %+v", o)
	}
	for doc, want := range map[string]string{
		`{Inner: x}`:           `unknown field "Inner"`,
		`{self: {a: 1, a: 2}}`: `self: duplicate key "a"`,
	} {
		if err := Decode([]byte(doc), &o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%s) = %v, want %q", doc, err, want)
		}
	}
}

func TestDecodeNeedsPointer(t *testing.T) {
	if err := Decode([]byte("version: 1"), doc{}); err == nil {
		t.Error("accepted a non-pointer")
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{"version: 1", `{"version": 1, "Version": 2}`, "pcrs: {4: {}, \"4\": {}}", "section: &a {}\nlist: [*a]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d doc
		_ = Decode(b, &d)
	})
}

func TestDecodeJSON(t *testing.T) {
	var d doc
	if err := DecodeJSON([]byte(` {"version": 1, "pcrs": {"04": {}, "4": {"insecure": true}}}`+"\n"), &d); err != nil {
		t.Fatalf("DecodeJSON: %v", err)
	}
	if *d.Version != 1 || !d.PCRs["4"].Insecure || len(d.PCRs) != 2 {
		t.Errorf("decoded %+v", d)
	}
	tests := []struct {
		name, doc, want string
		wantField       bool
	}{
		{"YAML block style", "version: 1", "not valid JSON", false},
		{"YAML flow with unquoted keys", "{version: 1}", "not valid JSON", false},
		{"YAML comment", "{\"version\": 1} # one", "not valid JSON", false},
		{"empty", "", "not valid JSON", false},
		{"array", `[{"version": 1}]`, "(document): want a JSON object", true},
		{"case variant", `{"version": 1, "Version": 2}`, `(document): unknown field "Version"`, true},
		{"duplicate", `{"section": {"insecure": false, "insecure": true}}`, `section: duplicate key "insecure"`, true},
		{"duplicate map key", `{"pcrs": {"4": {}, "4": {}}}`, `pcrs: duplicate key "4"`, true},
		{"wrong type is not a field error", `{"version": "SECRET"}`, "version", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d doc
			err := DecodeJSON([]byte(tt.doc), &d)
			if err == nil {
				t.Fatalf("accepted: %+v", d)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			var fe *FieldError
			if got := errors.As(err, &fe); got != tt.wantField {
				t.Errorf("errors.As(%v, *FieldError) = %v, want %v", err, got, tt.wantField)
			}
		})
	}
}

func TestFieldErrorQuotesNoValue(t *testing.T) {
	// A duplicate key is refused before any value is decoded, and the
	// message names the key only: callers parsing secrets rely on it.
	err := DecodeJSON([]byte(`{"version": 12345, "version": 67890}`), &doc{})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "(document)" {
		t.Fatalf("err = %v, want a FieldError at (document)", err)
	}
	if strings.Contains(err.Error(), "12345") || strings.Contains(err.Error(), "67890") {
		t.Errorf("error %q quotes a value", err)
	}
}

func TestDecodeKeysOnlyIntoMap(t *testing.T) {
	// Into a map, any field is allowed (the document is someone else's),
	// but every key once: top-level keys are named as paths, not [key].
	var m map[string]any
	if err := Decode([]byte("a: {Any: 1, any: 2}\nb: [1]"), &m); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	err := Decode([]byte("a: {x: 1}\nb: {x: 1, x: 2}"), &m)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "b" {
		t.Errorf("err = %v, want a FieldError at b", err)
	}
}
