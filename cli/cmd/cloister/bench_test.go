package main

import (
	"bytes"
	"testing"
)

// BenchmarkVerify is one 'cloister verify' against a simulator node:
// policy and anchors loaded, attested TLS handshake with a fresh TPM quote,
// validation, status call, report. Run briefly: -benchtime=100x.
func BenchmarkVerify(b *testing.B) {
	node := startTPMNode(b, nodeServices{})
	pol := writeTPMPolicy(b, "bench", map[int]pcrPolicy{0: {value: node.pcrs(b)[0]}})
	args := append([]string{"verify", "-o", "json"}, node.trustArgs(pol)...)
	var stdout, stderr bytes.Buffer
	for b.Loop() {
		stdout.Reset()
		stderr.Reset()
		if code := run(b.Context(), args, &stdout, &stderr); code != exitOK {
			b.Fatalf("exit %d: %s", code, stderr.String())
		}
	}
}

// BenchmarkPolicySet is one checked, atomic 'cloister policy set'.
func BenchmarkPolicySet(b *testing.B) {
	path := writeTPMPolicy(b, "bench", map[int]pcrPolicy{4: {value: hex32}})
	var stdout, stderr bytes.Buffer
	for b.Loop() {
		if code := run(b.Context(), []string{"policy", "set", "--policy", path, "--tpm-pcr", "7=" + hex32}, &stdout, &stderr); code != exitOK {
			b.Fatalf("exit %d: %s", code, stderr.String())
		}
	}
}
