// Package strictyaml decodes a YAML or JSON configuration document into a Go
// struct strictly: one spelling per key, exact field names, nothing unknown.
// Every file-mirroring config parser in Cloister (cluster policy, join
// service, disk-mapper, bootstrapper) can use it in the first of its two
// parsing stages.
//
// # Why not sigs.k8s.io/yaml or encoding/json alone
//
// Converting YAML to JSON and then using encoding/json has two gaps that let
// a non-canonical spelling silently override the canonical one:
//
//   - encoding/json matches object keys to struct fields case-insensitively,
//     so "MinimumTCB" or "minimumtcb" fills the field tagged "minimumTCB",
//     and when both spellings are present the last one wins;
//   - YAML keys of different types that convert to the same JSON key (4 and
//     "4") are distinct in YAML, so the YAML parser's duplicate check does
//     not see them, and in JSON the last one wins.
//
// Decode walks the parsed YAML node tree against the target type before any
// value is decoded and refuses, with the path of the offending key: a key
// that is not exactly a field's JSON name (unknown fields and case variants
// alike), two keys of one mapping with the same string form (duplicates,
// including 4 and "4" and the same key repeated in JSON input), non-scalar
// keys, anchors, aliases and merge keys (`<<`), and more than one document.
// Only then is the tree turned into JSON, with each key written exactly as
// checked, and decoded with unknown fields disallowed.
//
// DecodeJSON is the same for formats that are JSON only (the daemons' state
// and handoff files, the cluster secrets file): it first requires one valid
// JSON object, so YAML syntax cannot sneak into them.
//
// Structural refusals are *FieldError values naming the path; their
// messages quote keys, never values, so a parser of secrets can show them.
//
// Canonical forms of map keys (say, "4" and not "04" or "0x4" for a PCR
// index) are the caller's second stage: Decode passes map keys through
// verbatim, so a non-canonical spelling reaches the caller and can be
// refused there.
package strictyaml

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Decode decodes doc (YAML or JSON) into v, which must be a non-nil pointer
// to a struct, strictly as the package documentation describes. An empty
// document decodes to the zero value. A pointer to a map[string]any (or to
// any) checks only the keys: duplicates, anchors, aliases, merge keys, one
// document; that is for documents another program owns, whose fields are
// not ours to refuse (kubeadm's cluster-info).
func Decode(doc []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictyaml: decoding into %T: want a non-nil pointer", v)
	}
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("parsing YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return &FieldError{Path: where(""), Msg: "more than one YAML document"}
	}
	w := &walker{}
	tree, err := w.convert(&root, rv.Type().Elem(), "")
	if err != nil {
		return err
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return fmt.Errorf("converting to JSON: %w", err)
	}
	jd := json.NewDecoder(bytes.NewReader(js))
	jd.DisallowUnknownFields()
	if err := jd.Decode(v); err != nil {
		return err
	}
	return nil
}

// DecodeJSON is Decode for formats that are JSON only: the state and
// handoff files the daemons write, the cluster secrets file. doc must be one
// syntactically valid JSON object (checked by encoding/json before the YAML
// parser sees it, so YAML-only syntax such as comments, tags, unquoted
// strings or block style is refused); then it is decoded by Decode, with the
// same refusals. YAML's parser is used for JSON on purpose: it keeps every
// key of an object in order, where encoding/json would fold case variants
// and duplicates into one field before anyone could see them.
func DecodeJSON(doc []byte, v any) error {
	if !json.Valid(doc) {
		// json.Valid's reason would quote the input; the input may be secret.
		return errors.New("not valid JSON")
	}
	if trimmed := bytes.TrimLeft(doc, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return &FieldError{Path: where(""), Msg: "want a JSON object"}
	}
	return Decode(doc, v)
}

// FieldError is a refusal of the document's structure: an unknown or
// case-variant field, a duplicate key, an anchor, alias, merge key or second
// document, a value of the wrong kind (a list for a struct). Path names the
// offending place ("section.minimumTCB", "pcrs[4]", "(document)"). Its
// message quotes keys and line numbers, never a value, so a caller that
// parses secrets may show it where it must hide every other decoding error.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Path: where(path), Msg: fmt.Sprintf(format, args...)}
}

// walker carries no state; it groups the conversion methods.
type walker struct{}

// convert checks node against the Go type t and returns a value that
// json.Marshal turns into the JSON equivalent of node.
func (w *walker) convert(n *yaml.Node, t reflect.Type, path string) (any, error) {
	if n.Anchor != "" {
		return nil, fieldErr(path, "YAML anchors are not allowed")
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return w.convert(n.Content[0], t, path)
	case yaml.AliasNode:
		return nil, fieldErr(path, "YAML aliases are not allowed")
	case yaml.MappingNode:
		return w.mapping(n, t, path)
	case yaml.SequenceNode:
		var elem reflect.Type
		switch t.Kind() {
		case reflect.Slice, reflect.Array:
			elem = t.Elem()
		case reflect.Interface:
			elem = t
		default:
			return nil, fieldErr(path, "want %s, got a list", t)
		}
		out := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			v, err := w.convert(c, elem, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			// Not a FieldError: the message may quote the value.
			return nil, fmt.Errorf("%s: %w", where(path), err)
		}
		return v, nil
	default:
		return nil, fieldErr(path, "unexpected YAML node kind %v", n.Kind)
	}
}

// jsonUnmarshaler is implemented by types that decode themselves; their
// mappings are checked for duplicate keys only.
var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string) (any, error) {
	var fields map[string]reflect.Type
	if t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		t = reflect.TypeFor[any]()
	}
	switch t.Kind() {
	case reflect.Struct:
		fields = jsonFields(t)
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fieldErr(path, "internal error: map key type %s is not a string", t.Key())
		}
	case reflect.Interface:
	default:
		return nil, fieldErr(path, "want %s, got a mapping", t)
	}
	out := make(map[string]any, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Anchor != "" {
			return nil, fieldErr(path, "keys must be plain scalars")
		}
		if k.Tag == "!!merge" {
			return nil, fieldErr(path, "YAML merge keys (<<) are not allowed")
		}
		key := k.Value
		sub := key
		if path != "" {
			sub = path + "." + key
		}
		if t.Kind() == reflect.Map && path != "" {
			sub = fmt.Sprintf("%s[%s]", path, key)
		}
		if _, dup := out[key]; dup {
			return nil, fieldErr(path, "duplicate key %q (line %d): each key may appear once, in one spelling", key, k.Line)
		}
		var elem reflect.Type
		switch t.Kind() {
		case reflect.Struct:
			ft, ok := fields[key]
			if !ok {
				return nil, unknownField(path, key, fields)
			}
			elem = ft
		case reflect.Map:
			elem = t.Elem()
		default:
			elem = t
		}
		v, err := w.convert(val, elem, sub)
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	return out, nil
}

// jsonFields maps the exact JSON names of t's fields to their types, as
// encoding/json sees them: exported fields, and the fields of untagged
// embedded structs promoted into t.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for n, typ := range jsonFields(ft) {
					if _, shadowed := fields[n]; !shadowed {
						fields[n] = typ
					}
				}
				continue
			}
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

func unknownField(path, key string, fields map[string]reflect.Type) error {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fieldErr(path, "unknown field %q (field names are case-sensitive: did you mean %q?)", key, name)
		}
	}
	return fieldErr(path, "unknown field %q", key)
}

func where(path string) string {
	if path == "" {
		return "(document)"
	}
	return path
}
