// Command pestamp makes PE images reproducible: pestamp TIMESTAMP FILE...
// sets each file's COFF time stamp to TIMESTAMP (seconds since 1970, e.g.
// $SOURCE_DATE_EPOCH) and recomputes its checksum, in place. make image
// runs it on the unified kernel image, into which objcopy stamps the time
// of the build (see internal/measure.Normalize).
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/cloister-dev/cloister/internal/measure"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pestamp: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: pestamp TIMESTAMP FILE...")
	}
	ts, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil {
		return fmt.Errorf("time stamp %q: %w", args[0], err)
	}
	for _, path := range args[1:] {
		img, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := measure.Normalize(img, uint32(ts)); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, img, fi.Mode().Perm()); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}
