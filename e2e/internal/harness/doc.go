// Package harness boots Cloister nodes as QEMU virtual machines for the
// end-to-end scenarios in package e2e: a vTPM per node (swtpm, with EK
// certificates from a CA of the test's own), optional OVMF measured boot,
// raw state disks with a GPT partition labelled cloister-state, user-mode
// networking with ports forwarded on 127.0.0.1 only, and a serial console
// the test reads markers from.
//
// Only the scenario tests call it. Nothing here is trusted: it drives the
// guest from outside and judges a run by what the guest printed on its
// serial console and serves on its forwarded ports, never by QEMU's exit
// code. Every process it starts runs under timeout(1) and is ended by its
// PID in t.Cleanup; every file lives in the test's temporary directory,
// except what is downloaded or built once and reused (the build cache
// outside the checkout, CacheDir).
//
// The tests are slow (QEMU without KVM): they run only when CLOISTER_E2E=1
// (make e2e); see Enabled.
package harness
