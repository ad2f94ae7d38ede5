package policy

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"unicode"

	"sigs.k8s.io/yaml"
)

// caseVariants returns spellings of key that differ from it only in case.
func caseVariants(key string) []string {
	swapFirst := []rune(key)
	if unicode.IsUpper(swapFirst[0]) {
		swapFirst[0] = unicode.ToLower(swapFirst[0])
	} else {
		swapFirst[0] = unicode.ToUpper(swapFirst[0])
	}
	var out []string
	for _, v := range []string{strings.ToUpper(key), strings.ToLower(key), string(swapFirst)} {
		if v != key && !contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fieldPaths lists every field name of doc at every nesting level, as the
// chain of keys leading to it. Keys that are register indexes (map keys, all
// digits) are walked through but not varied: they have no case.
func fieldPaths(v any, prefix []string) [][]string {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	var out [][]string
	for k, sub := range m {
		p := append(append([]string{}, prefix...), k)
		if strings.Trim(k, "0123456789") != "" {
			out = append(out, p)
		}
		out = append(out, fieldPaths(sub, p)...)
	}
	return out
}

// mutate applies f to the mapping that holds the last key of path.
func mutate(t *testing.T, doc map[string]any, path []string, f func(parent map[string]any, key string)) []byte {
	t.Helper()
	var clone map[string]any
	b, _ := json.Marshal(doc)
	if err := json.Unmarshal(b, &clone); err != nil {
		t.Fatal(err)
	}
	parent := clone
	for _, k := range path[:len(path)-1] {
		parent = parent[k].(map[string]any)
	}
	f(parent, path[len(path)-1])
	out, err := json.Marshal(clone)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestParseRefusesCaseVariantsOfEveryField spells every field of the full
// example document in other cases, at every nesting level, both instead of
// and next to the canonical spelling. encoding/json matches field names
// case-insensitively, so before policy.Parse decoded with strictyaml each of
// these was accepted, and a variant placed after the canonical key won.
func TestParseRefusesCaseVariantsOfEveryField(t *testing.T) {
	for _, file := range []string{"testdata/full.yaml", "testdata/insecure-dev.json"} {
		t.Run(file, func(t *testing.T) { refusesCaseVariants(t, file) })
	}
}

func refusesCaseVariants(t *testing.T, file string) {
	yml, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(yml)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(js); err != nil {
		t.Fatalf("the canonical document %s does not parse: %v", file, err)
	}
	paths := fieldPaths(doc, nil)
	if len(paths) < 4 {
		t.Fatalf("only %d field paths in %s: the test would prove little", len(paths), file)
	}
	n := 0
	for _, path := range paths {
		key := path[len(path)-1]
		for _, variant := range caseVariants(key) {
			for _, alongside := range []bool{false, true} {
				name := fmt.Sprintf("%s as %s alongside=%v", strings.Join(path, "."), variant, alongside)
				b := mutate(t, doc, path, func(parent map[string]any, key string) {
					parent[variant] = parent[key]
					if !alongside {
						delete(parent, key)
					}
				})
				n++
				p, err := Parse(b)
				if err == nil {
					t.Errorf("%s: accepted (%v)", name, p)
					continue
				}
				if want := fmt.Sprintf("unknown field %q", variant); !strings.Contains(err.Error(), want) {
					t.Errorf("%s: error %q does not contain %q", name, err, want)
				}
			}
		}
	}
	t.Logf("%d case variants over %d fields refused", n, len(paths))
}

// TestParseRefusesDuplicateKeys covers keys that appear twice, in one or in
// two spellings that end up as the same key.
func TestParseRefusesDuplicateKeys(t *testing.T) {
	zero := strings.Repeat("00", 32)
	ones := strings.Repeat("11", 32)
	h48 := strings.Repeat("ab", 48)
	tests := []struct{ name, doc, want string }{
		{"PCR index as number and as string", "version: 1\ntpm:\n  pcrs:\n    4: {value: \"" + zero + "\"}\n    \"4\": {value: \"" + ones + "\"}", `tpm.pcrs: duplicate key "4"`},
		{"PCR index as string and as number", "version: 1\ntpm:\n  pcrs:\n    \"4\": {value: \"" + zero + "\"}\n    4: {value: \"" + ones + "\"}", `tpm.pcrs: duplicate key "4"`},
		{"PCR index with a leading zero", "version: 1\ntpm: {pcrs: {\"04\": {value: \"" + zero + "\"}}}", "tpm.pcrs[04]: index must be a decimal number"},
		{"PCR index in hex", "version: 1\ntpm: {pcrs: {0x4: {value: \"" + zero + "\"}}}", "tpm.pcrs[0x4]: index must be a decimal number"},
		{"PCR index 4 and 04", "version: 1\ntpm: {pcrs: {\"4\": {value: \"" + zero + "\"}, \"04\": {value: \"" + ones + "\"}}}", "tpm.pcrs[04]"},
		{"RTMR index twice", "version: 1\ntdx: {mrtd: {value: \"" + h48 + "\"}, rtmrs: {2: {value: \"" + h48 + "\"}, \"2\": {value: \"" + h48 + "\"}}}", `tdx.rtmrs: duplicate key "2"`},
		{"duplicate YAML key", "version: 1\ninsecure-dev: {iUnderstandThisProvesNothing: false}\ninsecure-dev: {iUnderstandThisProvesNothing: true}", `duplicate key "insecure-dev"`},
		{"duplicate JSON key", `{"version": 1, "insecure-dev": {"iUnderstandThisProvesNothing": true, "iUnderstandThisProvesNothing": false}}`, `insecure-dev: duplicate key "iUnderstandThisProvesNothing"`},
		{"minimum TCB twice", "version: 1\nsev-snp: {measurement: {value: \"" + h48 + "\"}, minimumTCB: {bootloader: 3, tee: 1, snp: 8, microcode: 115, snp: 0}}", `sev-snp.minimumTCB: duplicate key "snp"`},
		{"mode twice", "version: 1\ntpm: {pcrs: {\"4\": {value: \"" + zero + "\", mode: enforce, mode: warn}}}", `tpm.pcrs[4]: duplicate key "mode"`},
		{"insecure switch in another case", `{"version": 1, "tpm": {"pcrs": {"4": {"value": "` + zero + `"}}}, "Insecure-Dev": {"iUnderstandThisProvesNothing": true}}`, `unknown field "Insecure-Dev"`},
		{"anchor", "version: 1\ntpm: {pcrs: {\"4\": &v {value: \"" + zero + "\"}, \"5\": *v}}", "anchors are not allowed"},
		{"two documents", "version: 1\ninsecure-dev: {iUnderstandThisProvesNothing: true}\n---\nversion: 1", "more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("accepted: %v (pcrs %v)", p, p.TPM)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	doc, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
}
