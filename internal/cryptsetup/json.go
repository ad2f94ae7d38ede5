package cryptsetup

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// object is one JSON object of untrusted metadata, read field by field so
// every refusal names its path. done refuses fields nobody asked for.
type object struct {
	path string
	m    map[string]json.RawMessage
	used map[string]bool
}

func parseObject(path string, raw json.RawMessage) (*object, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, headerErr(fieldName(path), "JSON object", kind(raw))
	}
	return &object{path: path, m: m, used: map[string]bool{}}, nil
}

// kind names the JSON type of raw for error messages.
func kind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func (o *object) field(key string) string { return pathJoin(o.path, key) }

func (o *object) has(key string) bool {
	_, ok := o.m[key]
	return ok
}

// keys returns the object's keys in sorted order.
func (o *object) keys() []string {
	ks := make([]string, 0, len(o.m))
	for k := range o.m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (o *object) get(key, want string) (json.RawMessage, error) {
	raw, ok := o.m[key]
	if !ok {
		return nil, headerErr(o.field(key), want, "missing")
	}
	o.used[key] = true
	return raw, nil
}

func (o *object) obj(key string) (*object, error) {
	raw, err := o.get(key, "JSON object")
	if err != nil {
		return nil, err
	}
	return parseObject(o.field(key), raw)
}

func (o *object) str(key, want string) (string, error) {
	raw, err := o.get(key, want)
	if err != nil {
		return "", err
	}
	var s string
	if kind(raw) != "string" || json.Unmarshal(raw, &s) != nil {
		return "", headerErr(o.field(key), want, kind(raw))
	}
	return s, nil
}

func (o *object) wantString(key, want string) error {
	s, err := o.str(key, want)
	if err != nil {
		return err
	}
	if s != want {
		return headerErr(o.field(key), want, s)
	}
	return nil
}

// number reads a non-negative JSON integer.
func (o *object) number(key, want string) (uint64, error) {
	raw, err := o.get(key, want)
	if err != nil {
		return 0, err
	}
	s := string(bytes.TrimSpace(raw))
	v, ok := canonicalDecimal(s)
	if !ok {
		return 0, headerErr(o.field(key), want, s)
	}
	return v, nil
}

func (o *object) wantNumber(key string, want uint64) error {
	w := strconv.FormatUint(want, 10)
	v, err := o.number(key, w)
	if err != nil {
		return err
	}
	if v != want {
		return headerErr(o.field(key), w, strconv.FormatUint(v, 10))
	}
	return nil
}

// decimal reads a LUKS2 64-bit value, which is a string of decimal digits.
func (o *object) decimal(key string) (uint64, error) {
	const want = "decimal string"
	s, err := o.str(key, want)
	if err != nil {
		return 0, err
	}
	v, ok := canonicalDecimal(s)
	if !ok {
		return 0, headerErr(o.field(key), want, s)
	}
	return v, nil
}

func (o *object) wantDecimal(key string, want uint64) error {
	w := strconv.FormatUint(want, 10)
	s, err := o.str(key, w)
	if err != nil {
		return err
	}
	if s != w {
		return headerErr(o.field(key), w, s)
	}
	return nil
}

func (o *object) wantBase64(key string, size int) error {
	want := fmt.Sprintf("base64 of %d bytes", size)
	s, err := o.str(key, want)
	if err != nil {
		return err
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return headerErr(o.field(key), want, "invalid base64")
	}
	if len(b) != size {
		return headerErr(o.field(key), want, fmt.Sprintf("%d bytes", len(b)))
	}
	return nil
}

// wantStrings checks an array of strings for exactly want, in order.
func (o *object) wantStrings(key string, want []string) error {
	w := "[" + joinQuoted(want) + "]"
	raw, err := o.get(key, w)
	if err != nil {
		return err
	}
	var got []string
	if kind(raw) != "array" || json.Unmarshal(raw, &got) != nil {
		return headerErr(o.field(key), w, kind(raw))
	}
	if !slices.Equal(got, want) {
		return headerErr(o.field(key), w, "["+joinQuoted(got)+"]")
	}
	return nil
}

// wantIDSet checks an array of decimal ids for exactly the ids in want,
// in any order (libcryptsetup keeps insertion order), without repeats.
func (o *object) wantIDSet(key string, want []string) error {
	w := "[" + joinQuoted(want) + "] in any order"
	raw, err := o.get(key, w)
	if err != nil {
		return err
	}
	var got []string
	if kind(raw) != "array" || json.Unmarshal(raw, &got) != nil {
		return headerErr(o.field(key), w, kind(raw))
	}
	sorted := slices.Clone(got)
	slices.SortFunc(sorted, compareIDs)
	ws := slices.Clone(want)
	slices.SortFunc(ws, compareIDs)
	if !slices.Equal(sorted, ws) {
		return headerErr(o.field(key), w, "["+joinQuoted(got)+"]")
	}
	return nil
}

// compareIDs orders canonical decimal ids numerically.
func compareIDs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

func joinQuoted(ss []string) string {
	var b bytes.Buffer
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(s))
	}
	return b.String()
}

// absent refuses key if present: an optional LUKS2 field Format never
// writes.
func (o *object) absent(key string) error {
	if raw, ok := o.m[key]; ok {
		return headerErr(o.field(key), "absent", string(bytes.TrimSpace(raw)))
	}
	return nil
}

// onlyID requires the object to hold exactly one entry, id.
func (o *object) onlyID(what, id string) error {
	ks := o.keys()
	if len(ks) == 1 && ks[0] == id {
		return nil
	}
	got := "none"
	if len(ks) > 0 {
		got = what + " " + ks[0]
		if len(ks) > 1 {
			got = fmt.Sprintf("%d %ss", len(ks), what)
		}
	}
	return headerErr(fieldName(o.path), "only "+what+" "+id, got)
}

// done refuses the first field (in sorted order) that no check read.
func (o *object) done() error {
	for _, k := range o.keys() {
		if !o.used[k] {
			return headerErr(o.field(k), "no such field", "present")
		}
	}
	return nil
}
