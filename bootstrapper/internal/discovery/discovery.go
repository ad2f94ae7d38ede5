package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
)

// Keys of the "cloister." namespace this package reads.
const (
	KeyJoin = "cloister.join"
	KeyRole = "cloister.role"
	KeyNode = "cloister.node"
)

// maxEndpoints bounds the join endpoints of one source.
const maxEndpoints = 16

// Role is the role a node asks for.
type Role string

// The roles.
const (
	RoleWorker       Role = "worker"
	RoleControlPlane Role = "control-plane"
)

// ErrNotConfigured means a source holds no configuration for this node.
var ErrNotConfigured = errors.New("no cloister configuration")

// Config is where the node belongs.
type Config struct {
	// JoinEndpoints are host:port addresses of join services; none for a
	// node that waits for `cloister init` only.
	JoinEndpoints []string
	// Role is the role the node asks for (default worker).
	Role Role
	// NodeName is the Kubernetes node name (a DNS-1123 subdomain).
	NodeName string
	// Source names where the configuration came from.
	Source string
}

// Discovery finds the node's configuration. Discover returns an error
// wrapping ErrNotConfigured when its source says nothing, and any other error
// when it says something invalid.
type Discovery interface {
	Discover(ctx context.Context) (*Config, error)
}

// First tries each source in order and returns the first configuration
// found. An invalid source is an error at once: it said something, wrongly.
type First []Discovery

var _ Discovery = First(nil)

// Discover implements Discovery.
func (f First) Discover(ctx context.Context) (*Config, error) {
	for _, d := range f {
		c, err := d.Discover(ctx)
		if errors.Is(err, ErrNotConfigured) {
			continue
		}
		return c, err
	}
	return nil, fmt.Errorf("discovery: none of %d sources: %w", len(f), ErrNotConfigured)
}

// fromPairs builds a Config from key=value pairs of source; other
// namespaces and other cloister keys are ignored.
func fromPairs(source string, pairs [][2]string) (*Config, error) {
	c := &Config{Source: source}
	seen := map[string]bool{}
	var errs []error
	for _, kv := range pairs {
		key, val := kv[0], kv[1]
		if key != KeyJoin && key != KeyRole && key != KeyNode {
			continue
		}
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: %s: given more than once", source, key))
			continue
		}
		seen[key] = true
		switch key {
		case KeyJoin:
			c.JoinEndpoints = strings.Split(val, ",")
		case KeyRole:
			c.Role = Role(val)
		case KeyNode:
			c.NodeName = val
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("%s: %w", source, ErrNotConfigured)
	}
	if err := c.validate(map[string]string{"join": KeyJoin, "role": KeyRole, "node": KeyNode}); err != nil {
		return nil, err
	}
	return c, nil
}

// validate checks c; names maps join/role/node to the source's key names.
func (c *Config) validate(names map[string]string) error {
	var errs []error
	if c.Role == "" {
		c.Role = RoleWorker
	}
	if c.Role != RoleWorker && c.Role != RoleControlPlane {
		errs = append(errs, fmt.Errorf("%s: %s: want worker or control-plane, got %q", c.Source, names["role"], short(string(c.Role))))
	}
	if err := kubeadm.CheckNodeName(c.NodeName); err != nil {
		errs = append(errs, fmt.Errorf("%s: %s: %w", c.Source, names["node"], err))
	}
	if len(c.JoinEndpoints) > maxEndpoints {
		errs = append(errs, fmt.Errorf("%s: %s: want at most %d endpoints, got %d", c.Source, names["join"], maxEndpoints, len(c.JoinEndpoints)))
	} else {
		for i, ep := range c.JoinEndpoints {
			if err := kubeadm.CheckEndpoint(ep); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s[%d]: %w", c.Source, names["join"], i, err))
			}
		}
		if len(slices.Compact(slices.Sorted(slices.Values(c.JoinEndpoints)))) != len(c.JoinEndpoints) {
			errs = append(errs, fmt.Errorf("%s: %s: an endpoint is listed twice", c.Source, names["join"]))
		}
	}
	return errors.Join(errs...)
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
