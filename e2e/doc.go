// Package e2e holds the QEMU end-to-end scenarios: Cloister nodes booted
// from the node image (make image) under QEMU TCG with OVMF measured boot,
// a swtpm vTPM with EK certificates and a real dm-crypt state disk, judged
// by their serial-console markers, their status endpoints and the raw disk
// contents on the host. The harness is in internal/harness.
//
// The scenarios run only with CLOISTER_E2E=1 (make e2e): each boots one or
// more VMs for half a minute or more. It is its own module so that the
// harness's dependencies stay out of the product module.
package e2e
