package statedisk

import (
	"strings"
	"testing"
)

// FuzzParseRootDevice checks that mountinfo parsing never panics and returns
// either a well-formed major:minor or an error.
func FuzzParseRootDevice(f *testing.F) {
	seeds := []string{
		"22 1 252:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n23 22 0:21 / /proc rw - proc proc rw\n",
		"1 0 0:24 / / rw - tmpfs tmpfs rw\n",
		"22 1 253:0 / / ro - ext4 /dev/mapper/root ro\n30 22 252:2 / / rw - ext4 /dev/vda2 rw\n",
		"22 1 252 / / rw - ext4 /dev/root rw\n",
		"22 1 a:b / / rw\n",
		"",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		dev, err := parseRootDevice(strings.NewReader(in))
		if err != nil {
			if dev != "" {
				t.Fatalf("parseRootDevice = %q with error %v", dev, err)
			}
			return
		}
		maj, min, ok := strings.Cut(dev, ":")
		if !ok || !isDigits(maj) || !isDigits(min) {
			t.Fatalf("parseRootDevice = %q, not major:minor", dev)
		}
	})
}
