// Package e2e holds the QEMU end-to-end scenarios: Cloister nodes booted
// from the node image (make image) under QEMU TCG with OVMF measured boot,
// a swtpm vTPM with EK certificates and a real dm-crypt state disk, judged
// by their serial-console markers, their status endpoints and the raw disk
// contents on the host. The harness is in internal/harness.
//
// Nodes boot the image's unified kernel image from an EFI system partition
// with its dm-verity root, and the policies are the reference values make
// image predicted for it (no trust on first use). TestMeasuredBoot checks
// that prediction against the TPM of a genuine node and that tampered
// kernels, initrds, command lines, firmware and root file systems are
// refused.
//
// The scenarios run only with CLOISTER_E2E=1 (make e2e): each boots one or
// more VMs for half a minute or more. It is its own module so that the
// harness's dependencies stay out of the product module.
package e2e
