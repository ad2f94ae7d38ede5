package discovery

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cloister-dev/cloister/internal/strictyaml"
)

// maxFile bounds the configuration file, checked before parsing.
const maxFile = 64 << 10

// File reads the configuration from a strict YAML file:
//
//	joinEndpoints: ["10.0.0.1:9000"]
//	role: worker
//	nodeName: worker-1
type File struct {
	// Path is the file; a missing file is ErrNotConfigured.
	Path string
}

var _ Discovery = File{}

type fileDoc struct {
	JoinEndpoints []string `json:"joinEndpoints"`
	Role          string   `json:"role"`
	NodeName      string   `json:"nodeName"`
}

// Discover implements Discovery.
func (f File) Discover(_ context.Context) (*Config, error) {
	b, err := readLimited(f.Path, maxFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("discovery: %s: %w", f.Path, ErrNotConfigured)
	}
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	c, err := ParseFile(f.Path, b)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	return c, nil
}

// ParseFile decodes a configuration file strictly with internal/strictyaml
// (unknown fields, case variants of field names and duplicate keys are
// errors: encoding/json alone would let "Role" or a second "role" override
// role); name is the file's name in errors.
func ParseFile(name string, doc []byte) (*Config, error) {
	if len(doc) > maxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxFile)
	}
	var d fileDoc
	if err := strictyaml.Decode(doc, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := &Config{JoinEndpoints: d.JoinEndpoints, Role: Role(d.Role), NodeName: d.NodeName, Source: name}
	if err := c.validate(map[string]string{"join": "joinEndpoints", "role": "role", "node": "nodeName"}); err != nil {
		return nil, err
	}
	return c, nil
}
