package harness

import (
	"path/filepath"
)

// Debian's OVMF (package ovmf) without Secure Boot, 4 MiB flash layout.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Firmware is OVMF for one node: the shared read-only code and the node's
// own copy of the variable store, kept across the node's reboots. With it,
// the firmware measures the boot into the vTPM (PCR 0-7; the kernel and
// initrd QEMU passes with -kernel/-initrd into PCR 4 and 9).
type Firmware struct {
	Code string
	Vars string
}

// NewFirmware copies OVMF's variable store into dir. code and vars default
// to Debian's 4 MiB build without Secure Boot.
func NewFirmware(t TB, dir, code, vars string) *Firmware {
	t.Helper()
	if code == "" {
		code = ovmfCode
	}
	if vars == "" {
		vars = ovmfVars
	}
	code = RequireFile(t, code, "ovmf")
	vars = RequireFile(t, vars, "ovmf")
	fw := &Firmware{Code: code, Vars: filepath.Join(dir, "OVMF_VARS.fd")}
	copyFile(t, vars, fw.Vars, 0o644)
	return fw
}
