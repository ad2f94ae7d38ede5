// Package keys is Cloister's key schedule: every key a node receives is
// derived, deterministically, from a cluster secret with HKDF-SHA256, so the
// join service needs no per-disk database and a rebooted node gets the same
// key again.
//
//	disk key   = HKDF-SHA256(master secret, master salt, "cloister/disk/v1/<disk UUID>/<generation>")
//	cluster ID = HKDF-SHA256(measurement secret, measurement salt, "cloister/cluster-id/v1")
//
// The generation lets an operator rotate disk keys (re-slot the LUKS keyslot)
// without re-encrypting anything. Inputs are validated strictly: secrets and
// salts are exactly 32 bytes and a disk UUID is canonical lowercase, so one
// disk can never be known under two names.
//
// Secret values are of type Secret, which redacts itself in logs.
package keys
