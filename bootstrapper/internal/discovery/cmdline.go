package discovery

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
)

// DefaultCmdlinePath is where Linux shows the kernel command line.
const DefaultCmdlinePath = "/proc/cmdline"

// maxCmdline bounds the command line (Linux allows at most 4 KiB on x86;
// a little more is harmless).
const maxCmdline = 64 << 10

// Cmdline reads the configuration from the kernel command line.
type Cmdline struct {
	// Path is the command line file (default DefaultCmdlinePath).
	Path string
}

var _ Discovery = Cmdline{}

// Discover implements Discovery.
func (c Cmdline) Discover(_ context.Context) (*Config, error) {
	path := c.Path
	if path == "" {
		path = DefaultCmdlinePath
	}
	b, err := readLimited(path, maxCmdline)
	if err != nil {
		return nil, fmt.Errorf("discovery: kernel command line: %w", err)
	}
	return ParseCmdline(string(b))
}

// ParseCmdline reads cloister.join, cloister.role and cloister.node from a
// kernel command line. Parameters are separated by spaces; a value may be in
// double quotes, as the kernel allows.
func ParseCmdline(cmdline string) (*Config, error) {
	if len(cmdline) > maxCmdline {
		return nil, fmt.Errorf("kernel command line: larger than %d bytes", maxCmdline)
	}
	var pairs [][2]string
	for _, p := range splitCmdline(cmdline) {
		key, val, _ := strings.Cut(p, "=")
		pairs = append(pairs, [2]string{key, val})
	}
	return fromPairs("kernel command line", pairs)
}

// splitCmdline splits at unquoted whitespace and drops the quotes, like the
// kernel's next_arg.
func splitCmdline(s string) []string {
	var (
		args   []string
		cur    strings.Builder
		quoted bool
		inArg  bool
	)
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			inArg = true
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
