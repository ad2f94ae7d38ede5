// Package hostdemo is the host walk-through of Cloister's main job (`make
// demo-host`), with real components where the host allows them: a node with
// a real TPM 2.0 (swtpm, EK certificate from its manufacturer CA) attests
// over mutually attested TLS to the real join service, gets the key of its
// LUKS2 state disk (real libcryptsetup on a file image), re-keys the disk,
// extends its cluster-ID latch, is refused a second join, reboots, is
// refused with a modified boot chain, and gets its key back with the
// genuine one.
//
// Run checks itself: every refusal must come from the check the
// walk-through documents (the latch, then pcr[4]), as the join service
// recorded it in its rejection metrics, and the genuine reboot must get
// the disk key back. The command e2e/cmd/demo-host prints it; TestWalkThrough
// runs it in `make test` (make unit), so the walk-through cannot rot.
//
// # Boots
//
// A TPM reset (a reboot) flushes every transient object, the attestation
// key of an issuer among them. So nothing a boot opened outlives it: a
// machine closes its boot's issuer and credentials before the TPM resets
// and opens new ones afterwards, as a rebooted node's daemons do when they
// start again.
//
// What is not real, and the output says so: the Kubernetes API behind the
// join service is client-go's fake clientset, and the disk is a file image
// (the host kernel has no device-mapper to open it). The QEMU end-to-end
// tests replace both.
package hostdemo
