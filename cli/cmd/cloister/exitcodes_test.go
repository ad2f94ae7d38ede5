package main

import (
	"testing"

	"github.com/cloister-dev/cloister/cli/clitest"
)

// TestExitCodesMatchTheContract ties the codes to the ones other
// components' tests (and operators' scripts) rely on.
func TestExitCodesMatchTheContract(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"ok", exitOK, clitest.ExitOK},
		{"usage", exitUsage, clitest.ExitUsage},
		{"unavailable", exitUnavailable, clitest.ExitUnavailable},
		{"refused", exitRefused, clitest.ExitRefused},
		{"latch", exitLatch, clitest.ExitLatch},
		{"node refused", exitNodeRefused, clitest.ExitNodeRefused},
		{"local", exitLocal, clitest.ExitLocal},
	} {
		if c.got != c.want {
			t.Errorf("exit code %s = %d, contract says %d", c.name, c.got, c.want)
		}
	}
}
