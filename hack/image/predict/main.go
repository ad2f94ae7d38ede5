// Command predict writes a node image's reference values: the PCRs a boot
// of its unified kernel image will leave in the TPM, predicted from the
// image's files (internal/measure), together with the firmware's PCRs
// measured from the firmware file (hack/image/firmware-pcrs.sh). The result
// is a policy document (internal/attestation/policy) that `cloister
// policy show`, `cloister verify` and the join service read as it is.
//
// make image runs it; see docs/measured-boot.md for what each PCR covers.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/measure"
)

// firmwarePCRs are the firmware's PCRs that do not depend on the node or
// the boot disk: 0 (firmware code, and the VM's memory size), 2 and 3 (no
// option ROMs), 6 and 7 (Secure Boot state and keys). PCR 1 (SMBIOS tables
// with each node's OEM strings, boot variables) and 5 (the boot disk's GPT,
// ExitBootServices) differ between nodes of one image and are not pinned.
const firmwarePCRs = "0,2,3,6,7"

type flags struct {
	uki, linux, initrd, cmdline, osrel string
	firmware, firmwarePCRs             string
	events, out, name, shape           string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "predict: %v\n", err)
		os.Exit(1)
	}
}

func run(_ context.Context, args []string, stderr io.Writer) error {
	var f flags
	fs := flag.NewFlagSet("predict", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.uki, "uki", "", "unified kernel image (required)")
	fs.StringVar(&f.linux, "linux", "", "kernel the image must carry (checked against its .linux section)")
	fs.StringVar(&f.initrd, "initrd", "", "initrd the image must carry (.initrd)")
	fs.StringVar(&f.cmdline, "cmdline", "", "kernel command line file the image must carry (.cmdline)")
	fs.StringVar(&f.osrel, "osrel", "", "os-release the image must carry (.osrel)")
	fs.StringVar(&f.firmware, "firmware", "", "firmware PCRs file from hack/image/firmware-pcrs.sh (required)")
	fs.StringVar(&f.firmwarePCRs, "firmware-pcrs", firmwarePCRs, "which of the firmware file's PCRs to pin")
	fs.StringVar(&f.events, "events", "", "also write the predicted events here")
	fs.StringVar(&f.out, "o", "", "reference values (policy document) to write (required)")
	fs.StringVar(&f.name, "name", "", "policy name (default: cloister-image-<first 12 hex of the image's PE hash>[-<shape>])")
	fs.StringVar(&f.shape, "shape", "", "VM shape the firmware PCRs are for (e.g. 2cpu), appended to the default name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.uki == "" || f.firmware == "" || f.out == "" {
		return errors.New("-uki, -firmware and -o are required")
	}
	uki, err := os.ReadFile(f.uki)
	if err != nil {
		return fmt.Errorf("reading unified kernel image: %w", err)
	}
	// The image must carry exactly the files the build made: the prediction
	// is about those.
	for _, c := range []struct{ section, file string }{{".linux", f.linux}, {".initrd", f.initrd}, {".cmdline", f.cmdline}, {".osrel", f.osrel}} {
		if c.file == "" {
			continue
		}
		want, err := os.ReadFile(c.file)
		if err != nil {
			return fmt.Errorf("reading %s: %w", c.file, err)
		}
		got, ok, err := measure.Section(uki, c.section)
		if err != nil {
			return fmt.Errorf("reading section %s: %w", c.section, err)
		}
		if !ok || !bytes.Equal(got, want) {
			return fmt.Errorf("section %s of %s is not %s", c.section, f.uki, c.file)
		}
	}
	events, err := measure.Predict(uki)
	if err != nil {
		return err
	}
	predicted := measure.Replay(events, measure.PredictedPCRs)

	fw, fwHeader, err := readFirmwarePCRs(f.firmware)
	if err != nil {
		return err
	}
	pcrs := map[int][32]byte{}
	for _, s := range strings.Split(f.firmwarePCRs, ",") {
		i, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-firmware-pcrs: %q is not a PCR index", s)
		}
		v, ok := fw[i]
		if !ok {
			return fmt.Errorf("%s has no PCR %d", f.firmware, i)
		}
		if _, clash := predicted[i]; clash {
			return fmt.Errorf("-firmware-pcrs: PCR %d is predicted from the image", i)
		}
		pcrs[i] = v
	}
	for i, v := range predicted {
		pcrs[i] = v
	}
	pe, err := measure.PEHash(uki)
	if err != nil {
		return err
	}
	name := f.name
	if name == "" {
		name = "cloister-image-" + hex.EncodeToString(pe[:6])
		if f.shape != "" {
			name += "-" + f.shape
		}
	}

	var doc bytes.Buffer
	fmt.Fprintf(&doc, "# Reference values of the Cloister node image %s, written by make image.\n", filepath.Base(f.uki))
	fmt.Fprintf(&doc, "# PCRs %s: predicted from the image (internal/measure; events in pcr-events.txt).\n", joinInts(measure.PredictedPCRs))
	fmt.Fprintf(&doc, "# PCRs %s: measured from the firmware file alone, independent of the image:\n", f.firmwarePCRs)
	for _, l := range fwHeader {
		fmt.Fprintf(&doc, "#   %s\n", l)
	}
	fmt.Fprintf(&doc, "# Not pinned: 1 and 5 (per node: SMBIOS OEM strings, boot disk), 8 and 10 (unused, IMA), 15 (cluster-ID latch).\n")
	fmt.Fprintf(&doc, "# uki.efi Authenticode sha256 %x\n", pe)
	fmt.Fprintf(&doc, "version: %d\nname: %s\ntpm:\n  pcrs:\n", policy.Version, name)
	for _, i := range measure.SortedPCRs(pcrs) {
		v := pcrs[i]
		fmt.Fprintf(&doc, "    %q: {value: \"%x\"}\n", strconv.Itoa(i), v[:])
	}
	// What is written must be a policy the product reads.
	if _, err := policy.Parse(doc.Bytes()); err != nil {
		return fmt.Errorf("internal error: the reference values do not parse as a policy: %w", err)
	}
	if err := writeFile(f.out, doc.Bytes()); err != nil {
		return err
	}
	if f.events != "" {
		var ev bytes.Buffer
		fmt.Fprintf(&ev, "# Predicted measurements of a boot of %s: pcr, event type, sha256 digest, what.\n", filepath.Base(f.uki))
		for _, e := range events {
			fmt.Fprintf(&ev, "%d 0x%08x %x %s\n", e.PCR, e.Type, e.Digest[:], e.Description)
		}
		for _, i := range measure.PredictedPCRs {
			v := predicted[i]
			fmt.Fprintf(&ev, "# pcr %d = %x\n", i, v[:])
		}
		if err := writeFile(f.events, ev.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// readFirmwarePCRs reads "pcr <index> <64 hex>" lines; "#" lines are the
// header, returned for the document's comment.
func readFirmwarePCRs(path string) (map[int][32]byte, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading firmware PCRs: %w", err)
	}
	out := map[int][32]byte{}
	var header []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			header = append(header, strings.TrimSpace(strings.TrimPrefix(line, "#")))
			continue
		}
		fields := strings.Fields(line)
		var v [32]byte
		i, ierr := strconv.Atoi(fieldOr(fields, 1))
		d, herr := hex.DecodeString(fieldOr(fields, 2))
		if len(fields) != 3 || fields[0] != "pcr" || ierr != nil || i < 0 || i > 23 || herr != nil || len(d) != 32 {
			return nil, nil, fmt.Errorf("%s:%d: want \"pcr <0-23> <64 hex>\", got %q", path, n, line)
		}
		copy(v[:], d)
		out[i] = v
	}
	return out, header, sc.Err()
}

func fieldOr(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
