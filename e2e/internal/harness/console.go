package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"
)

// Console is a VM's serial console, as QEMU writes it to a file.
type Console struct {
	// FailOn lists markers that end every Wait at once with ErrFailMarker:
	// what the guest prints when the awaited marker can no longer come.
	FailOn []*regexp.Regexp

	path   string
	exited func() bool
}

var (
	// ErrVMExited means the VM ended before the awaited marker appeared.
	ErrVMExited = errors.New("VM exited")
	// ErrFailMarker means a FailOn marker appeared first.
	ErrFailMarker = errors.New("failure marker on the serial console")
)

// Path is the serial log's file.
func (c *Console) Path() string { return c.path }

// Text returns everything the guest printed so far.
func (c *Console) Text() (string, error) {
	b, err := os.ReadFile(c.path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

// Wait polls the serial log until re matches at or after byte offset from,
// and returns the submatches and the offset just after the match. It fails
// with ErrVMExited once the VM has ended without the marker, and with ctx's
// error on the deadline.
func (c *Console) Wait(ctx context.Context, re *regexp.Regexp, from int) ([]string, int, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		// Read the exit state first: output written before the exit is then
		// in the file when it is read.
		gone := c.exited()
		text, err := c.Text()
		if err != nil {
			return nil, 0, fmt.Errorf("reading serial log: %w", err)
		}
		if from < len(text) {
			if loc := re.FindStringSubmatchIndex(text[from:]); loc != nil {
				m := make([]string, len(loc)/2)
				for i := range m {
					if loc[2*i] >= 0 {
						m[i] = text[from+loc[2*i] : from+loc[2*i+1]]
					}
				}
				return m, from + loc[1], nil
			}
			for _, f := range c.FailOn {
				if fm := f.FindString(text[from:]); fm != "" {
					return nil, 0, fmt.Errorf("waiting for %q: %w: %q", re, ErrFailMarker, fm)
				}
			}
		}
		if gone {
			return nil, 0, fmt.Errorf("waiting for %q: %w", re, ErrVMExited)
		}
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("waiting for %q: %w", re, ctx.Err())
		case <-tick.C:
		}
	}
}
