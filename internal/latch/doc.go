// Package latch implements the cluster-ID latch (DESIGN §4): once a node has
// received its secrets, it extends a measurement register that only a reboot
// resets with the cluster ID, so that its attestation shows which cluster it
// belongs to. A join requires the latch at its reset value, which blocks a
// second join into another cluster without a reboot; `cloister verify`
// checks that the latch equals ExpectedTPM or ExpectedTDX of the cluster's ID.
//
// The disk-mapper (after a reboot, once the disk is open) and the
// bootstrapper (after a join) extend the latch; they declare
//
//	type latch interface{ Extend(ctx context.Context, clusterID []byte) error }
//
// # Registers
//
//   - TPM: PCR 15 of the SHA-256 bank, extended with the 32-byte cluster ID
//     as the digest: PCR15 = SHA-256(32 zero bytes ‖ clusterID). Only the
//     SHA-256 bank is extended: verifiers must read PCR 15 from that bank
//     (package tpm quotes it).
//   - TDX: RTMR 3, extended with SHA-384(clusterID) as the 48-byte digest:
//     RTMR3 = SHA-384(48 zero bytes ‖ SHA-384(clusterID)), through the
//     kernel's configfs-tsm or sysfs interface.
//
// # Trust
//
// The latch cannot be set back: extending is the only write a PCR or RTMR
// allows, and extending again only moves it further from any chosen value
// (a second Extend gives SHA-256(latch ‖ clusterID), not the latch). Only a
// reboot resets it. The package trusts the register's device; what the
// register holds is proven to others only by a quote over it.
package latch
