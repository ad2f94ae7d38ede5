package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cloister-dev/cloister/internal/atomicfile"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
)

// refValue is a reference value from the command line: HEX[:warn].
type refValue struct {
	index int // for indexed registers
	hex   string
	warn  bool
}

func (v refValue) mode() policy.Mode {
	if v.warn {
		return policy.Warn
	}
	return policy.Enforce
}

// parseRefValue reads HEX, HEX:warn or HEX:enforce. The hex itself is
// checked by policy.Parse, which names the field.
func parseRefValue(s string) (refValue, error) {
	val, mode, hasMode := strings.Cut(s, ":")
	var v refValue
	switch {
	case !hasMode, policy.Mode(mode) == policy.Enforce:
	case policy.Mode(mode) == policy.Warn:
		v.warn = true
	default:
		return v, fmt.Errorf("mode %q: want warn or enforce", mode)
	}
	if val == "" {
		return v, errors.New("no value")
	}
	v.hex = strings.ToLower(val)
	return v, nil
}

// indexedValueList is a repeatable N=HEX[:warn] flag.
type indexedValueList struct{ list *[]refValue }

func (l *indexedValueList) String() string {
	if l.list == nil {
		return ""
	}
	var parts []string
	for _, v := range *l.list {
		parts = append(parts, fmt.Sprintf("%d=%s", v.index, v.hex))
	}
	return strings.Join(parts, ",")
}

func (l *indexedValueList) Set(s string) error {
	n, rest, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q: want N=HEX or N=HEX:warn", s)
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 0 {
		return fmt.Errorf("%q: index %q is not a number", s, n)
	}
	v, err := parseRefValue(rest)
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	v.index = i
	*l.list = append(*l.list, v)
	return nil
}

// plainValue is a HEX[:warn] flag.
type plainValue struct{ v **refValue }

func (p *plainValue) String() string {
	if p.v == nil || *p.v == nil {
		return ""
	}
	return (*p.v).hex
}

func (p *plainValue) Set(s string) error {
	v, err := parseRefValue(s)
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	*p.v = &v
	return nil
}

// indexList is a repeatable register index flag.
type indexList struct{ list *[]int }

func (l *indexList) String() string {
	if l.list == nil {
		return ""
	}
	return fmt.Sprint(*l.list)
}

func (l *indexList) Set(s string) error {
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 {
		return fmt.Errorf("%q is not a register index", s)
	}
	*l.list = append(*l.list, i)
	return nil
}

// policyEdit is one 'policy set': the changes to make to the file at path.
type policyEdit struct {
	path           string
	name           string
	tpmPCRs        []refValue
	tdxRTMRs       []refValue
	tdxMRTD        *refValue
	snpMeasurement *refValue
	removeTPMPCRs  []int
	removeTDXRTMRs []int
}

func (o *policyEdit) empty() bool {
	return o.name == "" && len(o.tpmPCRs) == 0 && len(o.tdxRTMRs) == 0 && o.tdxMRTD == nil &&
		o.snpMeasurement == nil && len(o.removeTPMPCRs) == 0 && len(o.removeTDXRTMRs) == 0
}

// apply edits the document, checks the result with policy.Parse and
// replaces the file atomically. It returns one line per change.
func (o *policyEdit) apply() ([]string, error) {
	// Edit the file a symlink points to, rather than replacing the link.
	if resolved, err := filepath.EvalSymlinks(o.path); err == nil {
		o.path = resolved
	}
	orig, mode, err := readPolicyFile(o.path)
	if err != nil {
		return nil, err
	}
	doc, isJSON, err := decodePolicyDocument(orig)
	if err != nil {
		return nil, fail(exitLocal, fmt.Errorf("policy %s: %w", o.path, err), "fix the file by hand: it is not a YAML or JSON mapping")
	}
	root := doc.Content[0]
	var changes []string
	if o.name != "" {
		mapSet(root, "name", scalar(o.name, 0))
		changes = append(changes, fmt.Sprintf("name: %s", o.name))
	}
	for _, v := range o.tpmPCRs {
		pcrs := mapEnsure(mapEnsure(root, "tpm"), "pcrs")
		setValue(pcrs, strconv.Itoa(v.index), v)
		changes = append(changes, fmt.Sprintf("tpm pcr[%d]: %s (%s)", v.index, v.hex, v.mode()))
	}
	for _, i := range o.removeTPMPCRs {
		if pcrs := mapGet(mapGet(root, "tpm"), "pcrs"); mapDelete(pcrs, strconv.Itoa(i)) {
			changes = append(changes, fmt.Sprintf("tpm pcr[%d]: removed", i))
		} else {
			return nil, usageErrorf("policy set", "--remove-tpm-pcr %d: the policy has no tpm pcr[%d]", i, i)
		}
	}
	if v := o.tdxMRTD; v != nil {
		setValue(mapEnsure(root, "tdx"), "mrtd", *v)
		changes = append(changes, fmt.Sprintf("tdx mrtd: %s (%s)", v.hex, v.mode()))
	}
	for _, v := range o.tdxRTMRs {
		rtmrs := mapEnsure(mapEnsure(root, "tdx"), "rtmrs")
		setValue(rtmrs, strconv.Itoa(v.index), v)
		changes = append(changes, fmt.Sprintf("tdx rtmr[%d]: %s (%s)", v.index, v.hex, v.mode()))
	}
	for _, i := range o.removeTDXRTMRs {
		if rtmrs := mapGet(mapGet(root, "tdx"), "rtmrs"); mapDelete(rtmrs, strconv.Itoa(i)) {
			changes = append(changes, fmt.Sprintf("tdx rtmr[%d]: removed", i))
		} else {
			return nil, usageErrorf("policy set", "--remove-tdx-rtmr %d: the policy has no tdx rtmr[%d]", i, i)
		}
	}
	if v := o.snpMeasurement; v != nil {
		setValue(mapEnsure(root, "sev-snp"), "measurement", *v)
		changes = append(changes, fmt.Sprintf("sev-snp measurement: %s (%s)", v.hex, v.mode()))
	}

	out, err := encodePolicyDocument(doc, isJSON)
	if err != nil {
		return nil, fmt.Errorf("internal error: encoding policy: %w", err)
	}
	if _, err := policy.Parse(out); err != nil {
		return nil, failf(exitUsage, []string{"the file was not changed"}, "refusing to write an invalid policy to %s:\n%v", o.path, err)
	}
	if err := atomicfile.Write(o.path, out, mode); err != nil {
		return nil, fail(exitLocal, err)
	}
	return changes, nil
}

// readPolicyFile reads the policy and its mode; a missing file reads as a
// new document with mode 0644.
func readPolicyFile(path string) ([]byte, fs.FileMode, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []byte("version: 1\n"), 0o644, nil
	}
	if err != nil {
		return nil, 0, fail(exitLocal, fmt.Errorf("reading policy: %w", err))
	}
	b, err := readLimited(path, policy.MaxDocumentSize)
	if err != nil {
		return nil, 0, fail(exitLocal, fmt.Errorf("reading policy: %w", err))
	}
	return b, fi.Mode().Perm(), nil
}

// decodePolicyDocument parses YAML (JSON is YAML) into nodes, which keep
// comments and order. An empty document becomes an empty mapping.
func decodePolicyDocument(b []byte) (*yaml.Node, bool, error) {
	isJSON := bytes.HasPrefix(bytes.TrimSpace(b), []byte("{"))
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, false, err
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, false, errors.New("the document is not a mapping")
	}
	return &doc, isJSON, nil
}

func encodePolicyDocument(doc *yaml.Node, isJSON bool) ([]byte, error) {
	if isJSON {
		var v any
		if err := doc.Decode(&v); err != nil {
			return nil, err
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// setValue sets m[key] to the reference value v, keeping the entry (and
// its comments) when it exists. Enforce mode is written by leaving mode
// out, as it is the default.
func setValue(m *yaml.Node, key string, v refValue) {
	entry := mapGet(m, key)
	if entry == nil || entry.Kind != yaml.MappingNode {
		entry = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle}
		mapSet(m, key, entry)
	}
	mapSet(entry, "value", scalar(v.hex, yaml.DoubleQuotedStyle))
	if v.warn {
		mapSet(entry, "mode", scalar(string(policy.Warn), 0))
	} else {
		mapDelete(entry, "mode")
	}
}

func scalar(s string, style yaml.Style) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: style}
}

// mapGet returns the value of key in mapping m, nil if absent (or m nil).
func mapGet(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// mapEnsure returns the mapping at m[key], creating it (or replacing a
// null) when needed.
func mapEnsure(m *yaml.Node, key string) *yaml.Node {
	v := mapGet(m, key)
	if v != nil && v.Kind == yaml.MappingNode {
		return v
	}
	v = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	mapSet(m, key, v)
	return v
}

// mapSet sets m[key] = val, in place if key exists, else appended. Index
// keys are quoted, as the policy's examples write them.
func mapSet(m *yaml.Node, key string, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			// Keep the old value's comments on the new value.
			old := m.Content[i+1]
			val.HeadComment, val.LineComment, val.FootComment = old.HeadComment, old.LineComment, old.FootComment
			m.Content[i+1] = val
			return
		}
	}
	var style yaml.Style
	if _, err := strconv.Atoi(key); err == nil {
		style = yaml.DoubleQuotedStyle
	}
	m.Content = append(m.Content, scalar(key, style), val)
}

// mapDelete removes key from m and reports whether it was there.
func mapDelete(m *yaml.Node, key string) bool {
	if m == nil || m.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return true
		}
	}
	return false
}
