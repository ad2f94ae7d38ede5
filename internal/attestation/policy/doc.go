// Package policy parses the cluster's reference values: one versioned
// YAML/JSON document with a section per attestation variant. Validators take
// their section; the join service reloads the document when it changes.
//
// Parsing is strict and in two stages: the document is decoded into structs
// that mirror the file by internal/strictyaml (field names exact and
// case-sensitive, unknown fields, duplicate keys, keys that collide once
// converted to JSON such as 4 and "4", anchors and aliases all refused),
// then turned into typed values (register indexes must be canonical
// decimal: not "04", not 0x4), and every problem is reported with its path,
// e.g.
//
//	policy: tdx.rtmrs[2].value: want 96 hex characters, got 95
//
// Each reference value has a mode: "enforce" (the default) rejects a
// mismatch, "warn" records it in the claims and lets the node through.
package policy
