// Package measure predicts the PCR values a node image's boot leaves in a
// TPM, from the image's files, by replaying the events the firmware, the
// EFI stub and the kernel will measure. make image uses it to emit the
// image's reference values; nothing here talks to a TPM.
//
// What it models (docs/measured-boot.md has the whole chain):
//
//   - PCR 4: the firmware's "Calling EFI Application from Boot Option"
//     action, the separator, the Authenticode (PE) hash of the unified
//     kernel image it starts (PEHash), and of the kernel systemd-stub
//     starts from it.
//   - PCR 9: the command line and the initrd, as the kernel's EFI stub
//     receives and measures them.
//   - PCR 11: systemd-stub's measurement of the image's sections, name then
//     content, in its fixed order.
//   - PCRs 12 and 13: nothing (no command line from the boot entry, no
//     credentials, no system extensions), so they stay zero.
//
// The firmware's own PCRs (0-3, 5-7) depend on the firmware build and the
// machine and are not predicted here.
//
// Everything parsed here (PE images) is untrusted input: parsers bound every
// offset and return an error, never panic.
package measure
