package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		want    []string
		wantErr string // the field the error names
	}{
		{name: "two endpoints", doc: "joinEndpoints: [\"10.0.0.2:9000\", \"cp.example:9000\"]", want: []string{"10.0.0.2:9000", "cp.example:9000"}},
		{name: "ipv6", doc: "joinEndpoints: [\"[fd00::2]:9000\"]", want: []string{"[fd00::2]:9000"}},
		{name: "empty file", doc: "", want: nil},
		{name: "unknown field", doc: "joinEndpoint: [\"a:1\"]", wantErr: "joinEndpoint"},
		// sigs.k8s.io/yaml accepted both, the last spelling winning: a
		// second list of join services could hide behind a case variant.
		{name: "case variant of a field", doc: "JoinEndpoints: [\"a:1\"]", wantErr: `unknown field "JoinEndpoints"`},
		{name: "case variant beside the field", doc: "joinEndpoints: [\"a:1\"]\njoinendpoints: [\"evil:1\"]", wantErr: `unknown field "joinendpoints"`},
		{name: "duplicate key", doc: `{"joinEndpoints": ["a:1"], "joinEndpoints": ["evil:1"]}`, wantErr: `duplicate key "joinEndpoints"`},
		{name: "missing port", doc: "joinEndpoints: [\"10.0.0.2\"]", wantErr: "joinEndpoints[0]"},
		{name: "port out of range", doc: "joinEndpoints: [\"a:1\", \"b:70000\"]", wantErr: "joinEndpoints[1]"},
		{name: "empty host", doc: "joinEndpoints: [\":9000\"]", wantErr: "joinEndpoints[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || c != nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse = %+v, %v; want an error naming %s", c, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(c.JoinEndpoints, tt.want) {
				t.Fatalf("Parse = %+v, %v; want %v", c, err, tt.want)
			}
		})
	}
}

func TestLoadRefusesOversizedFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(p, []byte("# "+strings.Repeat("x", MaxSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(p); err == nil {
		t.Fatalf("Load = %+v of an oversized file", c)
	}
}

func TestSplitEndpoints(t *testing.T) {
	got, err := SplitEndpoints(" a:1, ,b:2,")
	if err != nil || !slices.Equal(got, []string{"a:1", "b:2"}) {
		t.Fatalf("SplitEndpoints = %v, %v", got, err)
	}
	if _, err := SplitEndpoints("a:1,b"); err == nil {
		t.Error("SplitEndpoints accepted an endpoint without a port")
	}
}
