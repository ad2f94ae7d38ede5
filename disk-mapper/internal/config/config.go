// Package config reads disk-mapper's node configuration file: strict YAML
// (internal/strictyaml: unknown fields, case variants of field names and
// duplicate keys are errors) naming the join services a rebooted node asks
// for its disk key. The image carries the file; cmd/disk-mapper loads it and
// merges it with the --join-endpoints flag.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/cloister-dev/cloister/internal/strictyaml"
)

// MaxSize bounds the file, checked before parsing.
const MaxSize = 64 << 10

// Config is the validated node configuration.
type Config struct {
	// JoinEndpoints are host:port addresses of join services.
	JoinEndpoints []string `json:"joinEndpoints"`
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading node config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading node config %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("node config %s: larger than %d bytes", path, MaxSize)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("node config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a node configuration document.
func Parse(doc []byte) (*Config, error) {
	var c Config
	// strictyaml, not sigs.k8s.io/yaml: encoding/json underneath would take
	// "JoinEndpoints" for joinEndpoints and keep the last of two spellings.
	if err := strictyaml.Decode(doc, &c); err != nil {
		return nil, err
	}
	var errs []error
	for i, ep := range c.JoinEndpoints {
		if err := CheckEndpoint(ep); err != nil {
			errs = append(errs, fmt.Errorf("joinEndpoints[%d]: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}

// CheckEndpoint accepts host:port with a non-empty host and a port in 1–65535.
func CheckEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", ep)
	}
	if host == "" || strings.ContainsAny(host, " /") {
		return fmt.Errorf("want a host name or IP address, got %q", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("want a port in 1-65535, got %q", port)
	}
	return nil
}

// SplitEndpoints parses a comma-separated list of host:port (the
// --join-endpoints flag); empty items are ignored.
func SplitEndpoints(list string) ([]string, error) {
	var out []string
	for i, ep := range strings.Split(list, ",") {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		if err := CheckEndpoint(ep); err != nil {
			return nil, fmt.Errorf("join endpoint %d: %w", i+1, err)
		}
		out = append(out, ep)
	}
	return out, nil
}
